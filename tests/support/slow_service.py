"""A minimal service process for the graceful-shutdown test: `python -m tests.support.slow_service`.

It serves the probe service through `shared.server.start_server` with settings from the
environment (`TFMESH_PORT=0` picks a free port) and runs until SIGTERM through
`serve_until_signalled`, exactly as a real service's `server.py` does. It prints
`port <n>` on stdout once serving, `started` when a `Slow` call begins (which then takes
one second) and `stopped` after the shutdown returns; `Ping` answers at once."""

from __future__ import annotations

import asyncio

import grpc

from shared.server import serve_until_signalled, start_server
from shared.settings import ServiceSettings, load_settings
from shared.telemetry import setup_telemetry
from tests.support.probe import PROBE_SERVICE, SERVING, Request, Response, register_probe

SLOW_CALL_S = 1.0


async def slow(request: Request, context: grpc.aio.ServicerContext) -> Response:
    print("started", flush=True)
    await asyncio.sleep(SLOW_CALL_S)
    return Response(status=SERVING)


async def ping(request: Request, context: grpc.aio.ServicerContext) -> Response:
    return Response(status=SERVING)


async def main() -> None:
    settings = load_settings(ServiceSettings)
    telemetry = setup_telemetry("slow-service")
    register = register_probe(unary={"Slow": slow, "Ping": ping})
    running = await start_server(settings, telemetry, register, [PROBE_SERVICE])
    print(f"port {running.port}", flush=True)
    await serve_until_signalled(running, settings.shutdown_grace_s)
    print("stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
