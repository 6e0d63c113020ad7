"""Schema validation: core resources with kubernetes-validate (strict: unknown fields fail),
Istio resources with Istio's published CRD schemas through `istio_validate.mjs`, and the
custom resources that no installed package describes (Flagger's, the Prometheus
Operator's) with hand-written schemas of the fields used here (*-subset.schema.json)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import jsonschema
import kubernetes_validate

from k8s.check.model import Problem, Resource

KUBERNETES_VERSION = "1.33.0"
HERE = Path(__file__).resolve().parent
ISTIO_GROUPS = (
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "install.istio.io",
    "extensions.istio.io",
)
# API group: (the family's name in messages, its schema file beside this module).
SUBSET_SCHEMAS = {
    "flagger.app": ("Flagger", "flagger-subset.schema.json"),
    "monitoring.coreos.com": ("Prometheus Operator", "prometheus-operator-subset.schema.json"),
}


def _group(resource: Resource) -> str:
    return resource.api_version.split("/")[0] if "/" in resource.api_version else ""


def _field(path: Iterable[object]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def validate_core(resource: Resource) -> list[Problem]:
    try:
        kubernetes_validate.validate(resource.doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [Problem(resource.source, resource.ref, _field(error.path), error.message)]
    except kubernetes_validate.SchemaNotFoundError:
        return [
            Problem(
                resource.source, resource.ref, "apiVersion", f"no schema for {resource.api_version}"
            )
        ]
    return []


def validate_istio(resources: list[Resource]) -> list[Problem]:
    """All Istio resources in one node process (loading the models dominates the cost)."""
    if not resources:
        return []
    node = shutil.which("node")
    modules = HERE / "node_modules" / "@kubernetes-models" / "istio"
    if node is None or not modules.is_dir():
        missing = "node" if node is None else str(modules)
        first = resources[0]
        return [
            Problem(
                first.source,
                first.ref,
                "",
                f"cannot validate Istio resources: {missing} "
                "is missing (make setup runs `npm ci --prefix k8s/check`)",
            )
        ]
    reply = subprocess.run(
        [node, str(HERE / "istio_validate.mjs")],
        input=json.dumps([r.doc for r in resources]),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=HERE,
    )
    if reply.returncode != 0:
        raise RuntimeError(f"istio_validate.mjs failed: {reply.stderr.strip()}")
    problems = []
    for resource, result in zip(resources, json.loads(reply.stdout), strict=True):
        if result.get("unknown"):
            problems.append(
                Problem(
                    resource.source,
                    resource.ref,
                    "apiVersion",
                    f"no Istio schema for {resource.api_version} {resource.kind}",
                )
            )
        for error in result.get("errors", []):
            field = error["path"].strip("/").replace("/", ".")
            problems.append(Problem(resource.source, resource.ref, field, error["message"]))
    return problems


def validate_subset(resource: Resource, family: str, schema: dict) -> list[Problem]:
    definition = schema["$defs"].get(resource.kind)
    if definition is None:
        return [Problem(resource.source, resource.ref, "kind", f"no schema for this {family} kind")]
    validator = jsonschema.Draft202012Validator({**definition, "$defs": schema["$defs"]})
    return [
        Problem(resource.source, resource.ref, _field(error.absolute_path), error.message)
        for error in sorted(validator.iter_errors(resource.doc), key=lambda e: list(e.path))
    ]


def validate_all(resources: list[Resource]) -> list[Problem]:
    subsets = {
        group: (family, json.loads((HERE / file).read_text()))
        for group, (family, file) in SUBSET_SCHEMAS.items()
    }
    problems: list[Problem] = []
    istio = []
    for resource in resources:
        group = _group(resource)
        if group in ISTIO_GROUPS:
            istio.append(resource)
        elif group in subsets:
            problems += validate_subset(resource, *subsets[group])
        else:
            problems += validate_core(resource)
    return problems + validate_istio(istio)
