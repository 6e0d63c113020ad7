"""The inference service's gRPC port behind Envoy (`TFMESH_INFERENCE_GRPC_FRONT=envoy`).

The grpc.aio server binds a loopback port of its own; the unary calls of the inference
services are served on a Unix socket (services.inference.bridge.calls); Envoy takes the
service's gRPC port in front of both (services.inference.bridge.envoy) and is a child of
this process (it gets SIGTERM when this process dies). The running server's port is
Envoy's. On stop, before the grpc.aio server drains as always, Envoy closes its listener
and the bridged calls under way finish."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.inference.bridge.calls import UnaryCalls, unary_methods
from services.inference.bridge.envoy import BRIDGE_KEEP_ALIVE_S, EnvoyProcess, bootstrap
from services.inference.rest.serve import BACKLOG, serve_asgi
from services.inference.settings import InferenceSettings
from shared.auth import authenticator_for
from shared.server import RunningServer, start_server
from shared.telemetry import Telemetry


def _unix_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(BACKLOG)
    return sock


async def start_behind_envoy(
    settings: InferenceSettings,
    telemetry: Telemetry,
    register: Callable[[Any], None],
    names: list[str],
) -> RunningServer:
    """`register`'s servicers on grpc.aio and on the bridge's socket, behind Envoy on the
    settings' host and port."""
    running = await start_server(settings, telemetry, register, names, address="127.0.0.1:0")
    # A short path: a Unix socket's name has at most 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="tfmesh-envoy-"))
    calls = UnaryCalls(
        unary_methods(register, names), authenticator_for(settings), settings.max_message_bytes
    )
    path = folder / "calls.sock"
    http = await serve_asgi(calls, _unix_socket(path), BRIDGE_KEEP_ALIVE_S)
    config = bootstrap(
        settings.host, settings.port, [path], running.port, calls.paths, settings.max_message_bytes
    )
    envoy = EnvoyProcess(config, folder)
    try:
        await asyncio.to_thread(envoy.start)
    except Exception:
        await http.stop()
        await running.server.stop(0)
        shutil.rmtree(folder, ignore_errors=True)
        raise

    async def stop() -> None:
        await asyncio.to_thread(envoy.stop, settings.shutdown_grace_s, lambda: calls.in_flight > 0)
        await http.stop()
        shutil.rmtree(folder, ignore_errors=True)

    running.before_stop(stop)
    running.port = envoy.port
    return running
