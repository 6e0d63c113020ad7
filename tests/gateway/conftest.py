"""Fixtures for the gateway: the app over an ASGI client, in front of real gRPC servers."""

from __future__ import annotations

import httpx
import pytest

from gateway.app import create_app
from gateway.backends import Backends
from gateway.settings import GatewaySettings
from tests.support.registry import registry_settings, running_registry


@pytest.fixture
async def registry_server(tmp_path):
    async with running_registry(registry_settings(tmp_path)) as running:
        yield running


@pytest.fixture
def gateway_settings(registry_server) -> GatewaySettings:
    return GatewaySettings(registry_addr=registry_server.address, deadline_s=5)


@pytest.fixture
async def client(gateway_settings):
    app = create_app(gateway_settings, Backends(gateway_settings, None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client
    await app.state.backends.close()
