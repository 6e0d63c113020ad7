"""The conventions every tfmesh workload follows: requests and limits on every container,
non-root with a read-only root filesystem, native gRPC probes on the gRPC servers (port
grpc-api) and HTTP probes on the REST one (http-api), pinned images, and GPUs for
inference only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from k8s.check.model import Problem, Resource

GPU = "nvidia.com/gpu"


def _problem(resource: Resource, field: str, message: str) -> Problem:
    return Problem(resource.source, resource.ref, field, message)


def _probe_problems(workload: Resource, field: str, container: dict[str, Any]) -> Iterator[Problem]:
    ports = container.get("ports") or []
    grpc_ports = [p["containerPort"] for p in ports if p.get("name") == "grpc-api"]
    http_ports = [p for p in ports if p.get("name") == "http-api"]
    for probe in ("readinessProbe", "livenessProbe"):
        spec = container.get(probe)
        if (grpc_ports or http_ports) and spec is None:
            yield _problem(workload, f"{field}.{probe}", "missing")
        elif grpc_ports and spec.get("grpc", {}).get("port") not in grpc_ports:
            yield _problem(
                workload, f"{field}.{probe}", f"must be a native grpc probe on {grpc_ports[0]}"
            )
        elif http_ports and "httpGet" not in spec:
            yield _problem(workload, f"{field}.{probe}", "must be an httpGet probe")


def check_workload(workload: Resource) -> Iterator[Problem]:
    pod = (workload.pod_template() or {}).get("spec", {})
    pod_security = pod.get("securityContext") or {}
    for c, container in enumerate(pod.get("containers") or []):
        field = f"spec.template.spec.containers[{c}]"
        resources = container.get("resources") or {}
        for bound in ("requests", "limits"):
            for name in ("cpu", "memory"):
                if name not in (resources.get(bound) or {}):
                    yield _problem(workload, f"{field}.resources.{bound}.{name}", "missing")
        security = container.get("securityContext") or {}
        if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            yield _problem(workload, f"{field}.securityContext.runAsNonRoot", "must be true")
        if security.get("readOnlyRootFilesystem") is not True:
            yield _problem(
                workload, f"{field}.securityContext.readOnlyRootFilesystem", "must be true"
            )
        if security.get("allowPrivilegeEscalation") is not False:
            yield _problem(
                workload, f"{field}.securityContext.allowPrivilegeEscalation", "must be false"
            )
        image = str(container.get("image", ""))
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        if not tag or tag == "latest":
            yield _problem(workload, f"{field}.image", f"{image!r} is not pinned to a version")
        asks_gpu = any(GPU in (resources.get(bound) or {}) for bound in ("requests", "limits"))
        if asks_gpu and workload.pod_labels().get("app") != "inference":
            yield _problem(workload, f"{field}.resources", f"only inference may ask for {GPU}")
        if workload.kind == "Deployment":
            yield from _probe_problems(workload, field, container)


# Kinds that live outside any namespace.
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "IngressClass",
}


def check_namespace(resource: Resource) -> Iterator[Problem]:
    """An overlay is applied with `kubectl apply -f`: a namespaced resource that names no
    namespace would land in whatever namespace the caller's context has (often default)."""
    if resource.kind in CLUSTER_SCOPED or not resource.source.startswith("k8s/overlays/"):
        return
    if not resource.doc.get("metadata", {}).get("namespace"):
        yield _problem(resource, "metadata.namespace", "a namespaced resource names no namespace")


def check_conventions(resources: list[Resource]) -> list[Problem]:
    problems = [p for r in resources if r.pod_template() is not None for p in check_workload(r)]
    return problems + [p for r in resources for p in check_namespace(r)]
