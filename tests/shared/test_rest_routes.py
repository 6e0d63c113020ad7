"""The serving APIs' one REST route table: every route has a handler in the inference
service's REST API, a known permission, and a documented answer (and body where it takes
one) in the gateway's OpenAPI document; templates expand to the paths they stand for and
match the paths the APIs use."""

from __future__ import annotations

import re

import pytest

from gateway.app import create_app
from gateway.backends import Backends
from gateway.settings import GatewaySettings
from services.inference.rest.app import APIS
from shared.permissions import OPEN, PERMISSIONS
from shared.rest_routes import ROUTES, RestRoute, route_of


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.template}")
def test_every_route_is_served_guarded_and_described(route: RestRoute) -> None:
    assert callable(getattr(APIS[route.tag], route.handler, None)), route.handler
    assert route.permission in {OPEN, *PERMISSIONS}
    assert route.answer is not None or any(status != 200 for status in route.answers)
    assert (route.body is not None) == (route.method == "POST" and route.answer is not None)


def test_the_gateways_document_describes_every_route_from_the_table() -> None:
    settings = GatewaySettings()
    document = create_app(settings, Backends(settings, None)).openapi()
    for route in ROUTES:
        for path in route.paths():
            operation = document["paths"][path][route.method.lower()]
            assert operation["summary"] == route.summary
            names = {p["name"] for p in operation["parameters"]}
            assert names == set(re.findall(r"\{(\w+)\}", path))
            schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
            assert (schema != {}) == (route.answer is not None)
            assert ("requestBody" in operation) == (route.body is not None)
    referenced = {name for name in document["components"]["schemas"]}
    assert {"InferBody", "InferResponse", "PredictBody", "ModelStatus"} <= referenced
    assert "inference.ModelStatisticsResponse" in referenced


def test_a_template_stands_for_every_path_it_names() -> None:
    (status,) = [r for r in ROUTES if r.handler == "tf_status"]
    assert status.paths() == [
        "/v1/models/{model}",
        "/v1/models/{model}/versions/{version}",
        "/v1/models/{model}/labels/{label}",
    ]


@pytest.mark.parametrize(
    ("method", "path", "handler", "params"),
    [
        ("GET", "/v2/models/stats", "model_stats", {}),
        (
            "GET",
            "/v2/models/m/versions/canary/stats",
            "model_stats",
            {"model": "m", "version": "canary"},
        ),
        ("POST", "/v2/models/m/infer", "infer", {"model": "m"}),
        (
            "GET",
            "/v1/models/m/labels/production",
            "tf_status",
            {"model": "m", "label": "production"},
        ),
        ("POST", "/v1/models/m/versions/3:predict", "tf_predict", {"model": "m", "version": "3"}),
        ("POST", "/v1/models/m:regress", "tf_unimplemented", {"model": "m", "verb": "regress"}),
    ],
)
def test_paths_find_their_route_and_parameters(method, path, handler, params) -> None:
    route, found, _ = route_of(method, path)
    assert route is not None and route.handler == handler
    assert found == params


def test_a_path_with_another_method_says_which_it_takes() -> None:
    assert route_of("GET", "/v2/models/m/infer")[0] is None
    assert route_of("GET", "/v2/models/m/infer")[2] == {"POST"}
    assert route_of("GET", "/v1/models/m/versions/x")[0] is None  # TF versions are numbers
