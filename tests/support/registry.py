"""A real registry server in-process on a loopback port, for tests of its clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from services.registry.server import start_registry
from services.registry.settings import RegistrySettings
from shared.server import RunningServer
from shared.telemetry import setup_telemetry


def registry_settings(home: Path, **overrides) -> RegistrySettings:
    values = dict(
        home=home,
        port=0,
        max_artifact_bytes=10 * 1024 * 1024,
        default_min_improvement=0.01,
        watch_poll_interval_s=0.2,
    )
    values.update(overrides)
    return RegistrySettings(**values)


@asynccontextmanager
async def running_registry(settings: RegistrySettings) -> AsyncIterator[RunningServer]:
    telemetry = setup_telemetry("registry-test", configure_logging=False)
    running = await start_registry(settings, telemetry)
    try:
        yield running
    finally:
        await running.stop(0)
