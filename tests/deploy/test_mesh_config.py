"""The Istio-to-Envoy translation (tests.deploy.mesh) on the repository's own istio/ files:
what the mesh test runs is what the VirtualServices and DestinationRule say."""

from __future__ import annotations

import copy

import pytest

from tests.deploy.conftest import load_yaml
from tests.deploy.mesh import (
    ISTIO_UNLIMITED,
    Pod,
    UntranslatableError,
    envoy_bootstrap,
    seconds,
)

STABLE = Pod({"app": "inference", "version": "v1"}, "127.0.0.1", 7001)
CANARY = Pod({"app": "inference", "version": "v2"}, "127.0.0.1", 7002)
V1, V2 = "outbound|50054|v1|inference", "outbound|50054|v2|inference"


def bootstrap(
    stage: str, rule: dict | None = None, service: dict | None = None, port: int = 50054
) -> dict:
    return envoy_bootstrap(
        service or load_yaml(f"istio/virtual-service-inference-{stage}.yaml"),
        rule or load_yaml("istio/destination-rule-inference.yaml"),
        [STABLE, CANARY],
        port,
    )


def routes(config: dict) -> list[dict]:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]


def clusters(config: dict) -> dict[str, dict]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def test_ninety_ten_weights_timeouts_and_retries_come_from_the_virtual_service():
    stream, kserve_stream, unary = routes(bootstrap("90-10"))
    for route in (stream, kserve_stream, unary):
        weights = route["route"]["weighted_clusters"]["clusters"]
        assert weights == [{"name": V1, "weight": 90}, {"name": V2, "weight": 10}]
    assert stream["match"] == {"path": "/tfmesh.inference.v1.InferenceService/PredictStream"}
    assert kserve_stream["match"] == {"path": "/inference.GRPCInferenceService/ModelStreamInfer"}
    assert stream["route"]["timeout"] == "0s"
    assert stream["route"]["retry_policy"]["retry_on"] == "connect-failure,refused-stream"
    assert unary["match"] == {"prefix": "/"}
    assert unary["route"]["timeout"] == "10s"
    retry = unary["route"]["retry_policy"]
    assert retry["num_retries"] == 3
    assert retry["per_try_timeout"] == "3s"
    assert retry["retry_on"] == "connect-failure,refused-stream,reset,unavailable,cancelled"
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"


def test_header_canary_routes_tagged_requests_first():
    names = [(r["name"], r["match"].get("headers")) for r in routes(bootstrap("header-canary"))]
    header = [{"name": "x-tfmesh-track", "string_match": {"exact": "canary"}}]
    assert names == [
        ("canary-stream-0", header),
        ("canary-stream-1", header),
        ("canary-unary-0", header),
        ("stream-0", None),
        ("stream-1", None),
        ("unary-0", None),
    ]
    targets = [
        r["route"]["weighted_clusters"]["clusters"] for r in routes(bootstrap("header-canary"))
    ]
    assert [t[0]["name"] for t in targets] == [V2, V2, V2, V1, V1, V1]


def test_rest_on_its_own_port_is_split_like_grpc():
    """REST (port 50055) has routes of its own, to the same subsets with the same weights;
    a caller of the gRPC port never gets them, nor REST callers the gRPC ones."""
    rest_v1, rest_v2 = "outbound|50055|v1|inference", "outbound|50055|v2|inference"
    (rest,) = routes(bootstrap("90-10", port=50055))
    assert rest["name"] == "rest-0"
    weights = rest["route"]["weighted_clusters"]["clusters"]
    assert weights == [{"name": rest_v1, "weight": 90}, {"name": rest_v2, "weight": 10}]
    assert rest["route"]["timeout"] == "10s"
    assert "rest-0" not in [r["name"] for r in routes(bootstrap("90-10"))]
    names = [r["name"] for r in routes(bootstrap("header-canary", port=50055))]
    assert names == ["canary-rest-0", "rest-0"]


def test_destination_rule_subsets_pick_pods_by_label_with_its_outlier_detection():
    found = clusters(bootstrap("v1"))
    assert set(found) == {V1, V2}
    endpoints = found[V2]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints] == [7002]
    outlier = found[V1]["outlier_detection"]
    assert outlier["consecutive_gateway_failure"] == 3
    assert outlier["consecutive_5xx"] == 5
    assert outlier["interval"] == "2s"
    assert outlier["base_ejection_time"] == "30s"
    assert outlier["max_ejection_percent"] == 50
    assert found[V1]["common_lb_config"]["healthy_panic_threshold"] == {"value": 0.0}
    assert found[V1]["lb_policy"] == "LEAST_REQUEST"
    assert found[V1]["connect_timeout"] == "2s"
    limits = found[V1]["circuit_breakers"]["thresholds"][0]
    assert limits["max_requests"] == 1000
    assert limits["max_retries"] == ISTIO_UNLIMITED


def test_a_route_without_retries_gets_istios_default_policy():
    service = load_yaml("istio/virtual-service-inference-v1.yaml")
    del service["spec"]["http"][1]["retries"]
    # Routes: the two stream methods (stream-0, stream-1), then unary-0.
    retry = routes(bootstrap("v1", service=service))[2]["route"]["retry_policy"]
    assert retry["num_retries"] == 2
    assert retry["retry_on"] == (
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    )
    assert retry["retriable_status_codes"] == [503]


@pytest.mark.parametrize(
    ("target", "field", "value"),
    [
        ("service", ("spec", "http", 1, "fault"), {"abort": {"percentage": {"value": 1}}}),
        (
            "rule",
            ("spec", "trafficPolicy", "loadBalancer", "consistentHash"),
            {"useSourceIp": True},
        ),
        (
            "rule",
            ("spec", "trafficPolicy", "outlierDetection", "splitExternalLocalOriginErrors"),
            True,
        ),
    ],
)
def test_fields_it_cannot_translate_are_refused_not_dropped(target, field, value):
    service = load_yaml("istio/virtual-service-inference-v1.yaml")
    rule = load_yaml("istio/destination-rule-inference.yaml")
    document = copy.deepcopy(service if target == "service" else rule)
    node = document
    for key in field[:-1]:
        node = node[key]
    node[field[-1]] = value
    with pytest.raises(UntranslatableError, match=str(field[-1])):
        if target == "service":
            bootstrap("v1", service=document)
        else:
            bootstrap("v1", rule=document)


@pytest.mark.parametrize(
    ("duration", "expected"), [("10s", "10s"), ("500ms", "0.5s"), ("1m30s", "90s"), ("2h", "7200s")]
)
def test_durations_convert_to_envoy_seconds(duration, expected):
    assert seconds(duration) == expected


@pytest.mark.parametrize("duration", ["10", "ten seconds", "5s5"])
def test_bad_durations_are_refused(duration):
    with pytest.raises(UntranslatableError):
        seconds(duration)


@pytest.mark.parametrize("stage", ["v1", "90-10", "header-canary"])
def test_each_stages_ingress_routes_split_rest_as_its_mesh_routes_do(stage):
    """The `inference-ingress` delegate a stage carries (the ingress's direct route to the
    data plane) has the stage's REST routes: same names, destinations, weights, timeouts,
    retries and header matches, without the port match a delegate cannot have."""
    file = f"istio/virtual-service-inference-{stage}.yaml"
    mesh, ingress = load_yaml(file, "inference"), load_yaml(file, "inference-ingress")
    assert not ingress["spec"].get("hosts") and not ingress["spec"].get("gateways")
    expected = []
    for route in copy.deepcopy(mesh["spec"]["http"]):
        matches = route.pop("match", [])
        if not any(m.get("port") == 50055 for m in matches):
            continue
        kept = [{k: v for k, v in m.items() if k != "port"} for m in matches]
        if any(kept):
            route["match"] = kept
        expected.append(route)
    assert expected, "the stage has REST routes"
    assert ingress["spec"]["http"] == expected
