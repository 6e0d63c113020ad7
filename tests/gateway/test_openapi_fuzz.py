"""Schemathesis against the gateway's own `/openapi.json`: generated requests to every
operation of the ASGI app, in front of real services running as processes, must never
get a 5xx it does not document, and every answer must match the document (status code,
content type, schema).

Bounded: at most 25 derandomized examples per operation. Schemathesis parametrizes from
the schema when the module is collected, so the app exists before the services do: the
module fixture starts them and hands the app `Backends` that point at them."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.failures import ServerError
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app
from gateway.backends import Backends
from gateway.settings import GatewaySettings
from tests.gateway.conftest import NOOP_MODELS
from tests.support.processes import platform_processes


@schemathesis.check
def no_undocumented_server_error(ctx, response, case) -> None:
    """A 5xx that the operation documents is its answer (TF Serving's `:classify` and
    `:regress`: 501, not served); any other 5xx is a server error."""
    if response.status_code < 500:
        return
    if str(response.status_code) not in case.operation.definition.raw.get("responses", {}):
        raise ServerError(operation=case.operation.label, status_code=response.status_code)


CHECKS = [
    no_undocumented_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
APP = create_app(GatewaySettings(), Backends(GatewaySettings(), None))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def services_as_processes(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz")
    config = home / "models.json"
    config.write_text(json.dumps({"models": NOOP_MODELS}))
    fleet = platform_processes(home, TFMESH_INFERENCE_MODEL_CONFIG_FILE=str(config))
    processes = list(fleet.values())
    try:
        for process in processes:
            process.start(timeout_s=120)
        live = GatewaySettings(
            registry_addr=fleet["registry"].address,
            data_addr=fleet["data"].address,
            training_addr=fleet["training"].address,
            inference_addr=fleet["inference"].address,
            inference_http_addr=fleet["inference"].http_url.removeprefix("http://"),
            deadline_s=5,
        )
        APP.state.backends = Backends(live, None)
        yield
    finally:
        for process in reversed(processes):
            process.stop_quietly()


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_5xx_and_answers_match_the_document(case):
    case.call_and_validate(checks=CHECKS)
