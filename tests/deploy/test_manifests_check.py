"""`make manifests-check` (python -m k8s.check): the repository's manifests pass it, a
deliberately broken reference fails it naming the resource and field, and each kind of
check catches the mistake it is there for (on the rendered manifests, mutated in memory)."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from k8s.check.conventions import check_conventions
from k8s.check.dockerfiles import check_dockerfile
from k8s.check.model import Problem, Resource
from k8s.check.protos import grpc_methods
from k8s.check.references import check_all
from k8s.check.render import load_file, render
from k8s.check.run import SCENARIOS, scenario_catalog, staged_files
from k8s.check.schemas import validate_all
from tests.deploy.conftest import REPO

FIXTURES = Path(__file__).parent / "fixtures"
# What the check reads: manifests, Dockerfiles and what they copy, protos.
CHECKED_PATHS = ("k8s", "istio", "deploy", "protos", "shared", "services", "gateway", "cli",
                 "requirements-tfserving.lock")  # fmt: skip


def run_check(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "k8s.check", str(repo)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )


def test_the_repositorys_manifests_pass():
    reply = run_check(REPO)
    assert reply.returncode == 0, reply.stdout + reply.stderr
    assert "all manifests render, validate and cross-check" in reply.stdout


def test_a_broken_subset_reference_fails_naming_resource_and_field(tmp_path):
    for name in CHECKED_PATHS:
        source = REPO / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("node_modules", "__pycache__")
            shutil.copytree(source, tmp_path / name, ignore=ignore)
        else:
            shutil.copy(source, tmp_path / name)
    shutil.copy(
        FIXTURES / "virtual-service-inference-90-10-broken-subset.yaml",
        tmp_path / "istio" / "virtual-service-inference-90-10.yaml",
    )
    reply = run_check(tmp_path)
    assert reply.returncode == 1, reply.stdout + reply.stderr
    assert (
        "istio/virtual-service-inference-90-10.yaml: VirtualService/inference "
        "spec.http[1].route[1].destination.subset: subset 'v3' is not defined "
        "(DestinationRule/inference has ['v1', 'v2'])"
    ) in reply.stdout
    assert len(reply.stdout.strip().splitlines()) == 1, reply.stdout


@pytest.fixture(scope="module")
def rendered(kubectl) -> dict[str, list[Resource]]:
    folders = {k for scenario in SCENARIOS for k in scenario.kustomizations}
    return {folder: render(kubectl, REPO / folder, folder) for folder in sorted(folders)}


@pytest.fixture(scope="module")
def methods() -> set[str]:
    return grpc_methods(REPO / "protos")


def scenario_problems(
    rendered: dict[str, list[Resource]],
    methods: set[str],
    scenario_name: str,
    kind: str,
    name: str,
    mutate: Callable[[dict], None],
) -> list[Problem]:
    """The cross-check problems of a scenario after `mutate` changed one resource (the
    first of that kind and name: the kustomization's, before the hand-applied stages)."""
    scenario = next(s for s in SCENARIOS if s.name == scenario_name)
    copied = {
        f: [Resource(copy.deepcopy(r.doc), r.source) for r in rs] for f, rs in rendered.items()
    }
    staged = [r for p in staged_files(REPO) for r in load_file(p, str(p.relative_to(REPO)))]
    catalog = scenario_catalog(scenario, copied, staged)
    target = catalog.get(kind, name)
    assert target is not None, f"{kind}/{name} is not in scenario {scenario_name}"
    mutate(target.doc)
    return check_all(catalog, methods)


def _set(path: tuple, value: object) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


BROKEN_REFERENCES = [
    pytest.param(
        "production", "DestinationRule", "inference",
        _set(("spec", "subsets", 1, "labels"), {"version": "v3"}),
        "DestinationRule/inference", "spec.subsets[1].labels", "selects no pod",
        id="subset-labels-match-no-pod",
    ),
    pytest.param(
        "production", "Service", "registry",
        _set(("spec", "ports", 0, "targetPort"), "grpc-apl"),
        "Service/registry", "spec.ports[0].targetPort", "no container port",
        id="service-target-port",
    ),
    pytest.param(
        "production", "VirtualService", "inference",
        _set(("spec", "http", 1, "route", 0, "destination", "port", "number"), 50056),
        "VirtualService/inference", "spec.http[1].route[0].destination.port.number",
        "has no port 50056", id="route-port",
    ),
    pytest.param(
        "production", "AuthorizationPolicy", "registry",
        _set(("spec", "rules", 0, "to", 0, "operation", "paths", 0),
             "/tfmesh.registry.v1.RegistryService/UploadVersions"),
        "AuthorizationPolicy/registry", "spec.rules[0].to[0].operation.paths[0]",
        "no gRPC method", id="policy-method",
    ),
    pytest.param(
        "production", "AuthorizationPolicy", "inference",
        _set(("spec", "rules", 0, "from", 0, "source", "principals", 0),
             "cluster.local/ns/tfmesh/sa/gatewya"),
        "AuthorizationPolicy/inference", "spec.rules[0].from[0].source.principals[0]",
        "no ServiceAccount gatewya", id="policy-principal",
    ),
    pytest.param(
        "production", "AuthorizationPolicy", "inference",
        _set(("spec", "rules", 1, "to", 0, "operation", "paths", 2), "/v1/modles/*"),
        "AuthorizationPolicy/inference", "spec.rules[1].to[0].operation.paths[2]",
        "no REST route of the inference service matches /v1/modles/*", id="policy-rest-path",
    ),
    pytest.param(
        "production", "VirtualService", "inference-ingress",
        _set(("spec", "hosts"), ["inference"]),
        "VirtualService/ingress", "spec.http[0].delegate.name",
        "has hosts or gateways; a delegate has neither", id="delegate-with-hosts",
    ),
    pytest.param(
        "production", "ConfigMap", "gateway-config",
        _set(("data", "TFMESH_GATEWAY_INFERENCE_ADDR"), "inference:50056"),
        "ConfigMap/gateway-config", "data.TFMESH_GATEWAY_INFERENCE_ADDR",
        "Service inference has no port 50056", id="peer-address",
    ),
    pytest.param(
        "production", "Job", "training-multiworker", _set(("spec", "completions"), 3),
        "Job/training-multiworker", "spec.parallelism", "must equal completions",
        id="workers-vs-completions",
    ),
    pytest.param(
        "production", "Telemetry", "tracing",
        _set(("spec", "tracing", 0, "providers", 0, "name"), "zipkin"),
        "Telemetry/tracing", "spec.tracing[0].providers[0].name", "no extensionProvider",
        id="tracing-provider",
    ),
    pytest.param(
        "progressive", "Canary", "inference",
        _set(("spec", "targetRef", "name"), "inference-stabel"),
        "Canary/inference", "spec.targetRef", "no Deployment/inference-stabel",
        id="canary-target",
    ),
    pytest.param(
        "progressive", "Canary", "inference",
        _set(("spec", "analysis", "metrics", 0, "templateRef", "name"), "grpc-success"),
        "Canary/inference", "spec.analysis.metrics[0].templateRef.name",
        "no MetricTemplate grpc-success", id="canary-metric-template",
    ),
    pytest.param(
        "production", "HorizontalPodAutoscaler", "inference-stable",
        _set(("spec", "scaleTargetRef", "name"), "inference"),
        "HorizontalPodAutoscaler/inference-stable", "spec.scaleTargetRef",
        "no Deployment/inference", id="hpa-target",
    ),
    pytest.param(
        "production", "ServiceMonitor", "registry",
        _set(("spec", "endpoints", 0, "port"), "metrics"),
        "ServiceMonitor/registry", "spec.endpoints[0].port",
        "Service/registry has no port 'metrics'", id="service-monitor-port",
    ),
    pytest.param(
        "progressive", "PodMonitor", "gateway",
        _set(("spec", "selector", "matchLabels"), {"app": "gatewya"}),
        "PodMonitor/gateway", "spec.selector", "selects no pods", id="pod-monitor-selector",
    ),
    pytest.param(
        "production", "PodMonitor", "inference",
        _set(("spec", "podMetricsEndpoints", 0, "port"), "http-metric"),
        "PodMonitor/inference", "spec.podMetricsEndpoints[0].port",
        "Deployment/inference-stable has no container port 'http-metric'",
        id="pod-monitor-port",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("scenario", "kind", "name", "mutate", "resource", "field", "message"), BROKEN_REFERENCES
)
def test_each_broken_reference_is_named(
    rendered, methods, scenario, kind, name, mutate, resource, field, message
):
    problems = scenario_problems(rendered, methods, scenario, kind, name, mutate)
    assert any(
        p.resource == resource and p.field == field and message in p.message for p in problems
    ), "\n".join(map(str, problems))


def test_unmutated_scenarios_have_no_problems(rendered, methods):
    for scenario in SCENARIOS:
        problems = scenario_problems(
            rendered, methods, scenario.name, "Namespace", "tfmesh", lambda doc: None
        )
        assert problems == [], scenario.name


def _resource(rendered, folder: str, kind: str, name: str) -> Resource:
    found = next(r for r in rendered[folder] if r.kind == kind and r.name == name)
    return Resource(copy.deepcopy(found.doc), found.source)


def test_schemas_catch_a_bad_value_in_each_api_family(rendered):
    rule = _resource(rendered, "istio", "DestinationRule", "inference")
    rule.doc["spec"]["trafficPolicy"]["loadBalancer"]["simple"] = "FASTEST"
    deployment = _resource(rendered, "k8s/overlays/production", "Deployment", "registry")
    deployment.doc["spec"]["replica"] = 2
    canary = _resource(rendered, "istio/flagger", "Canary", "inference")
    canary.doc["spec"]["analysis"]["stepWeigth"] = 10
    problems = validate_all([rule, deployment, canary])
    found = {(p.resource, p.field) for p in problems}
    assert ("DestinationRule/inference", "spec.trafficPolicy.loadBalancer.simple") in found
    assert ("Deployment/registry", "spec") in found, problems
    assert ("Canary/inference", "spec.analysis") in found, problems
    assert len(problems) == 3, problems


def test_schemas_catch_a_typo_in_each_prometheus_operator_kind(rendered):
    production = "k8s/overlays/production"
    monitor = _resource(rendered, production, "ServiceMonitor", "data")
    monitor.doc["spec"]["endpoints"][0]["intreval"] = "15s"
    pods = _resource(rendered, production, "PodMonitor", "inference")
    pods.doc["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["action"] = "rename"
    rule = _resource(rendered, production, "PrometheusRule", "tfmesh")
    rule.doc["spec"]["groups"][0]["rules"][0]["for"] = "10 minutes"
    problems = validate_all([monitor, pods, rule])
    found = {(p.resource, p.field) for p in problems}
    assert found == {
        ("ServiceMonitor/data", "spec.endpoints[0]"),
        ("PodMonitor/inference", "spec.podMetricsEndpoints[0].relabelings[0].action"),
        ("PrometheusRule/tfmesh", "spec.groups[0].rules[0].for"),
    }, problems


def test_conventions_catch_missing_limits_root_filesystem_and_stray_gpus(rendered):
    gateway = _resource(rendered, "k8s/overlays/production", "Deployment", "gateway")
    container = gateway.doc["spec"]["template"]["spec"]["containers"][0]
    del container["resources"]["limits"]["memory"]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    container["resources"]["limits"]["nvidia.com/gpu"] = 1
    fields = {p.field: p.message for p in check_conventions([gateway])}
    base = "spec.template.spec.containers[0]"
    assert fields == {
        f"{base}.resources.limits.memory": "missing",
        f"{base}.securityContext.readOnlyRootFilesystem": "must be true",
        f"{base}.resources": "only inference may ask for nvidia.com/gpu",
    }


def test_conventions_catch_a_namespaced_resource_without_a_namespace(rendered):
    collector = _resource(rendered, "k8s/overlays/production", "Service", "otel-collector")
    del collector.doc["metadata"]["namespace"]
    problems = check_conventions([collector])
    assert [(p.field, p.message) for p in problems] == [
        ("metadata.namespace", "a namespaced resource names no namespace")
    ]


def test_dockerfile_check_catches_root_missing_sources_and_modules(tmp_path):
    dockerfile = tmp_path / "deploy" / "docker" / "broken.Dockerfile"
    dockerfile.parent.mkdir(parents=True)
    dockerfile.write_text(
        "FROM python:3.11-slim\nCOPY missing/ /app/missing/\nUSER 0\n"
        'ENTRYPOINT ["python", "-m", "services.nothing.server"]\n'
    )
    problems = {(p.resource, p.field, p.message) for p in check_dockerfile(dockerfile, tmp_path)}
    assert problems == {
        ("COPY", "missing/", "no such path in the repository"),
        ("USER", "", "the final stage must run as a non-root user"),
        ("ENTRYPOINT", "services.nothing.server", "no such module in the repository"),
    }
