"""Resources as loaded from rendered manifests, and the problems found in them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

NAMESPACE = "tfmesh"
WORKLOAD_KINDS = ("Deployment", "Job", "StatefulSet", "DaemonSet")


@dataclass(frozen=True)
class Resource:
    """One manifest document and where it came from (a kustomization or a file)."""

    doc: dict[str, Any]
    source: str

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.doc.get("apiVersion", ""))

    @property
    def name(self) -> str:
        return str(self.doc.get("metadata", {}).get("name", ""))

    @property
    def spec(self) -> dict[str, Any]:
        return self.doc.get("spec") or {}

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    def pod_template(self) -> dict[str, Any] | None:
        if self.kind not in WORKLOAD_KINDS:
            return None
        return self.spec.get("template") or {}

    def pod_labels(self) -> dict[str, str]:
        template = self.pod_template() or {}
        return dict(template.get("metadata", {}).get("labels") or {})

    def containers(self) -> list[dict[str, Any]]:
        template = self.pod_template() or {}
        return list(template.get("spec", {}).get("containers") or [])


@dataclass(frozen=True)
class Problem:
    source: str
    resource: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.resource} {self.field}" if self.field else self.resource
        return f"{self.source}: {where}: {self.message}"


@dataclass
class Catalog:
    """The resources of one deployment, indexed by kind and name."""

    resources: list[Resource] = field(default_factory=list)

    def add(self, resources: Iterable[Resource]) -> None:
        self.resources.extend(resources)

    def of_kind(self, *kinds: str) -> Iterator[Resource]:
        return (r for r in self.resources if r.kind in kinds)

    def get(self, kind: str, name: str) -> Resource | None:
        return next((r for r in self.of_kind(kind) if r.name == name), None)

    def workloads(self) -> Iterator[Resource]:
        return self.of_kind(*WORKLOAD_KINDS)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether an equality selector matches a label set (an empty selector matches none)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions; empty matches all, as
    Kubernetes reads it) matches a label set."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def service_host(host: str) -> str | None:
    """The Service name a mesh host names in this namespace, or None for another namespace."""
    parts = host.split(".")
    if len(parts) == 1:
        return host
    if (
        len(parts) >= 2
        and parts[1] == NAMESPACE
        and parts[2:] in ([], ["svc"], ["svc", "cluster", "local"])
    ):
        return parts[0]
    return None
