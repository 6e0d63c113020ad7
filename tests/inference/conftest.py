"""Fixtures for the inference tests: tiny exported models (built once per session), static
model configs, and an in-process inference server on port 0 with a stub per protocol.

The server comes in both shapes the service has: `single` (models and servicers in one
process) and `split` (a model owner and a front end talking over a real Unix socket and
shared memory, as the multi-process server's processes do, here in one event loop)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from services.inference.server import start_frontend, start_inference, start_owner
from services.inference.settings import InferenceSettings
from shared.channels import open_channel
from shared.server import RunningServer
from shared.telemetry import setup_telemetry
from tests.inference.models import build_digits_model, export_artifacts
from tests.support.processes import service_process


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict[int, dict[str, Path]]:
    """Versions 1 and 2 of the digits model, each as `saved_model.tar` and `model.keras`."""
    root = tmp_path_factory.mktemp("models")
    return {
        version: export_artifacts(build_digits_model(seed=version), root / f"v{version}")
        for version in (1, 2)
    }


def write_model_config(folder: Path, models: list[dict]) -> Path:
    path = folder / "models.json"
    path.write_text(json.dumps({"models": models}))
    return path


def one_model_server(home: Path, name: str, runtime: str, path: Path, **env: str):
    """An inference service process (not started) serving `path` as version 1 of `name`
    on `runtime`, from a static model config, batches of up to 8 rows."""
    entry = {
        "name": name,
        "runtime": runtime,
        "versions": [{"version": 1, "path": str(path)}],
        "batching": {"max_batch_size": 8},
    }
    config = write_model_config(home, [entry])
    return service_process(
        "services.inference.server",
        "TFMESH_INFERENCE_",
        home,
        TFMESH_INFERENCE_MODEL_CONFIG_FILE=str(config),
        **env,
    )


def slow_model_entry(name: str = "slow", delay_ms: float = 200, **batching) -> dict:
    """A noop model whose batches take `delay_ms`: a slow model of known cost."""
    return {
        "name": name,
        "runtime": "noop",
        "runtime_options": {"delay_ms": delay_ms},
        "versions": [{"version": 1}],
        "batching": {"max_batch_size": 1, "max_enqueued_batches": 2, **batching},
    }


def digits_entry(artifacts, **batching) -> dict:
    """The digits model's two versions as local SavedModels, production 1 and canary 2."""
    return {
        "name": "digits",
        "runtime": "tensorflow",
        "versions": [
            {"version": 1, "path": str(artifacts[1]["saved_model.tar"])},
            {"version": 2, "path": str(artifacts[2]["saved_model.tar"])},
        ],
        "labels": {"production": 1, "canary": 2},
        "batching": {"max_batch_size": 8, **batching},
    }


@pytest.fixture
def static_config(tmp_path, artifacts) -> Path:
    return write_model_config(
        tmp_path, [digits_entry(artifacts, batch_timeout_micros=1000), slow_model_entry()]
    )


async def start_server_in_process(shape: str, settings: InferenceSettings, telemetry):
    """A serving server of `shape` ("single" or "split"); stopping it stops everything."""
    if shape == "single":
        running, _ = await start_inference(settings, telemetry)
        return running
    address = f"@tfmesh-test-{uuid.uuid4().hex}"
    stop_owner = await start_owner(settings, telemetry, address)
    running, _ = await start_frontend(settings, telemetry, address, 0)
    running.on_stop(stop_owner)
    return running


@pytest.fixture(params=["single", "split"])
async def server(request, tmp_path, static_config) -> RunningServer:
    settings = InferenceSettings(
        home=tmp_path, port=0, http_port=0, model_config_file=static_config
    )
    telemetry = setup_telemetry("inference-test", configure_logging=False)
    running = await start_server_in_process(request.param, settings, telemetry)
    yield running
    await running.stop(0)


@pytest.fixture
async def channel(server):
    async with open_channel(server.address) as channel:
        yield channel
