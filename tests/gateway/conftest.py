"""Fixtures for the gateway: the app over an ASGI client, in front of real gRPC servers.

`client` fronts a registry alone. `platform` fronts real registry, data, training and
inference servers started in-process on port 0; the inference server serves static
`noop` models (their output is their first input), so predictions are known exactly
without training anything."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.backends import Backends
from gateway.settings import GatewaySettings
from services.data.server import start_data
from services.data.settings import DataSettings
from services.inference.server import start_inference
from services.inference.settings import InferenceSettings
from services.training.data_service_source import DataServiceSource
from services.training.registrar import RegistryRegistrar
from services.training.server import start_training
from services.training.settings import TrainingSettings
from shared.channels import open_channel
from shared.telemetry import Telemetry, setup_telemetry
from tests.support.registry import registry_settings, running_registry

# `echo` takes float32 `x` of 4 features, version 1 on production and 2 on canary;
# `pair` takes two inputs and answers with the first.
NOOP_MODELS = [
    {
        "name": "echo",
        "runtime": "noop",
        "runtime_options": {"inputs": [{"name": "x", "dtype": "float32", "shape": [4]}]},
        "versions": [{"version": 1}, {"version": 2}],
        "labels": {"production": 1, "canary": 2},
        "batching": {"max_batch_size": 8},
    },
    {
        "name": "pair",
        "runtime": "noop",
        "runtime_options": {
            "inputs": [
                {"name": "a", "dtype": "float32", "shape": [2]},
                {"name": "b", "dtype": "int32", "shape": [3]},
            ]
        },
        "versions": [{"version": 1}],
    },
]


def noop_model_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "models.json"
    path.write_text(json.dumps({"models": NOOP_MODELS}))
    return path


@asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client
    finally:
        await app.state.backends.close()


@asynccontextmanager
async def running_platform(
    home: Path, telemetry: Telemetry | None = None
) -> AsyncIterator[GatewaySettings]:
    """Registry, data, training and inference servers in-process; the gateway's settings."""
    telemetry = telemetry or setup_telemetry("gateway-test-backends", configure_logging=False)
    async with AsyncExitStack() as stack:
        registry = await stack.enter_async_context(
            running_registry(registry_settings(home / "registry"))
        )
        data = await start_data(DataSettings(home=home / "data", port=0), telemetry)
        stack.push_async_callback(data.stop, 0)
        data_channel = await stack.enter_async_context(open_channel(data.address))
        registry_channel = await stack.enter_async_context(open_channel(registry.address))
        training = await start_training(
            TrainingSettings(home=home / "training", port=0, idle_poll_s=0.2, watch_poll_s=0.05),
            telemetry,
            DataServiceSource(data_channel),
            RegistryRegistrar(registry_channel, deadline_s=60),
        )
        stack.push_async_callback(training.stop, 0)
        inference_settings = InferenceSettings(
            home=home / "inference",
            port=0,
            http_port=0,
            model_config_file=noop_model_config(home),
        )
        inference, _ = await start_inference(inference_settings, telemetry)
        stack.push_async_callback(inference.stop, 0)
        yield GatewaySettings(
            registry_addr=registry.address,
            data_addr=data.address,
            training_addr=training.address,
            inference_addr=inference.address,
            inference_http_addr=f"127.0.0.1:{inference.http_port}",
            deadline_s=10,
        )


@pytest.fixture
async def registry_server(tmp_path):
    async with running_registry(registry_settings(tmp_path)) as running:
        yield running


@pytest.fixture
def gateway_settings(registry_server) -> GatewaySettings:
    return GatewaySettings(registry_addr=registry_server.address, deadline_s=5)


@pytest.fixture
async def client(gateway_settings):
    async with asgi_client(create_app(gateway_settings, Backends(gateway_settings, None))) as c:
        yield c


@pytest.fixture
async def platform_settings(tmp_path) -> AsyncIterator[GatewaySettings]:
    async with running_platform(tmp_path) as settings:
        yield settings


@pytest.fixture
async def platform(platform_settings) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway app in front of all four services."""
    app = create_app(platform_settings, Backends(platform_settings, None))
    async with asgi_client(app) as client:
        yield client
