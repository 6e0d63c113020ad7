"""Fixtures for the shared library's tests: real `grpc.aio` servers built by
`shared.server.start_server` on 127.0.0.1 with port 0, and a quiet Telemetry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from shared.server import RunningServer, start_server
from shared.settings import ServiceSettings, load_settings
from shared.telemetry import Telemetry, setup_telemetry

StartServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
def telemetry() -> Telemetry:
    return setup_telemetry("shared-tests", configure_logging=False)


@pytest.fixture
async def serve(telemetry: Telemetry) -> AsyncIterator[StartServer]:
    """`await serve(register, service_names, **settings)` starts a server; all stop at teardown."""
    started: list[RunningServer] = []

    async def start(
        register: Callable[[grpc.aio.Server], None],
        service_names: list[str],
        *,
        server_telemetry: Telemetry | None = None,
        **settings: object,
    ) -> RunningServer:
        service_settings = load_settings(
            ServiceSettings, **{"host": "127.0.0.1", "port": 0, **settings}
        )
        running = await start_server(
            service_settings, server_telemetry or telemetry, register, service_names
        )
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop(0)
