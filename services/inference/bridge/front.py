"""The inference service's gRPC port behind Envoy (`TFMESH_INFERENCE_GRPC_FRONT=envoy`).

The grpc.aio server binds a loopback port of its own; the unary calls of the inference
services are served on a Unix socket (services.inference.bridge.calls) by the handlers
their servicers registered on that server; Envoy takes the service's gRPC port in front
of both (services.inference.bridge.envoy). Envoy is a child of this process: it gets
SIGTERM when this process dies, and an Envoy that exits while the service runs is
started again. The running server's port is Envoy's. On stop, before the grpc.aio server
drains, Envoy drains: GOAWAY on every connection, the calls under way (unary and
streams) finish within the shutdown grace, then Envoy ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from services.inference.bridge.calls import RecordingServer, UnaryCalls
from services.inference.bridge.envoy import BRIDGE_KEEP_ALIVE_S, EnvoyProcess, bootstrap
from services.inference.rest.serve import BACKLOG, serve_asgi
from services.inference.settings import InferenceSettings
from shared.auth import authenticator_for
from shared.server import RunningServer, start_server
from shared.telemetry import Telemetry

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0


def _unix_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(BACKLOG)
    return sock


async def _keep_running(envoy: EnvoyProcess) -> None:
    """Start Envoy again whenever it exits (until cancelled)."""
    while True:
        await asyncio.sleep(WATCH_INTERVAL_S)
        if envoy.running():
            continue
        log.error("envoy exited; starting it again")
        try:
            envoy.launch()
            await asyncio.to_thread(envoy.wait_ready)
        except (OSError, RuntimeError, TimeoutError) as error:
            log.error("envoy did not start again", extra={"error": str(error)})


async def start_behind_envoy(
    settings: InferenceSettings,
    telemetry: Telemetry,
    register: Callable[[Any], None],
    names: list[str],
) -> RunningServer:
    """`register`'s servicers on grpc.aio and on the bridge's socket, behind Envoy on the
    settings' host and port."""
    recorders: list[RecordingServer] = []

    def recording(server: grpc.aio.Server) -> None:
        recorders.append(RecordingServer(server))
        register(recorders[-1])

    # A short path: a Unix socket's name has at most 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="tfmesh-envoy-"))
    async with contextlib.AsyncExitStack() as undo:
        undo.callback(shutil.rmtree, folder, ignore_errors=True)
        running = await start_server(settings, telemetry, recording, names, address="127.0.0.1:0")
        undo.push_async_callback(running.server.stop, 0)
        exporting = telemetry.exporting
        calls = UnaryCalls(
            recorders[0].unary_methods(names),
            authenticator_for(settings),
            settings.max_message_bytes,
            telemetry.tracer("tfmesh.inference.bridge") if exporting else None,
        )
        path = folder / "calls.sock"
        http = await serve_asgi(calls, _unix_socket(path), BRIDGE_KEEP_ALIVE_S)
        undo.push_async_callback(http.stop)
        config = bootstrap(
            settings.host,
            settings.port,
            [path],
            running.port,
            calls.paths,
            settings.max_message_bytes,
        )
        envoy = EnvoyProcess(config, folder)
        # Forked from the event loop's thread, which lives as long as the process.
        envoy.launch()
        undo.callback(envoy.kill)
        await asyncio.to_thread(envoy.wait_ready)
        envoy.keep_port()
        undo.pop_all()
    watcher = asyncio.create_task(_keep_running(envoy), name="envoy watcher")

    async def stop() -> None:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await asyncio.to_thread(envoy.stop, settings.shutdown_grace_s)
        await http.stop()
        shutil.rmtree(folder, ignore_errors=True)

    running.before_stop(stop)
    running.port = envoy.port
    return running
