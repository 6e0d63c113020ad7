"""The inference service's gRPC port behind Envoy (`TFMESH_INFERENCE_GRPC_FRONT=envoy`).

Each process that serves calls (the one process, or each front end of the multi-process
server) binds its grpc.aio server on a loopback port (the front ends share one with
SO_REUSEPORT) and serves the inference services' unary calls on a Unix socket of its own
(services.inference.bridge.calls), with the handlers its servicers registered on that
grpc.aio server (`serve_bridged`). One Envoy takes the service's gRPC port in front of
them all (`EnvoyFront`, services.inference.bridge.envoy): it balances the unary calls over
the sockets, retrying a call on another socket when one does not answer (a front end
restarting), and proxies the rest to the loopback port. Envoy is a child of the process
that holds the port (the one process, or the supervisor): it gets SIGTERM when that
process dies, and an Envoy that exits while the service runs is started again on the same
port. On stop, Envoy drains first (GOAWAY on every connection; the calls under way, unary
and streams, finish within the shutdown grace), then the processes behind it stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from inference import grpc_predict_v2_pb2
from services.inference.bridge.calls import RecordingServer, UnaryCalls
from services.inference.bridge.envoy import BRIDGE_KEEP_ALIVE_S, EnvoyProcess, bootstrap
from services.inference.protocols.tfserving import protos as tfserving_protos
from services.inference.rest.serve import BACKLOG, HttpServer, serve_asgi
from services.inference.settings import InferenceSettings
from shared.auth import authenticator_for
from shared.server import RunningServer, start_server
from shared.telemetry import Telemetry
from tfmesh.inference.v1 import inference_pb2

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0
# How long Envoy's start waits for the processes behind it to bind their sockets.
SOCKETS_WAIT_S = 120.0


def inference_services() -> list[str]:
    """The inference services' full names (TF Serving's when its stubs import, their
    messages only), for a process that registers no servicers (the supervisor)."""
    names = [
        inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
        grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    ]
    tfserving_protos.import_messages_only()
    try:
        from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2
    except ImportError:
        return names
    return [
        *names,
        prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
        model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    ]


def bridge_folder() -> Path:
    """A private folder for Envoy's files and the calls' sockets; a short path, since a
    Unix socket's name has at most 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="tfmesh-envoy-"))


def _unix_socket(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(BACKLOG)
    return sock


async def serve_bridged(
    settings: InferenceSettings,
    telemetry: Telemetry,
    register: Callable[[Any], None],
    names: list[str],
    socket_path: Path,
    reuse_port: bool,
) -> tuple[RunningServer, UnaryCalls, HttpServer]:
    """`register`'s servicers on grpc.aio at 127.0.0.1:`settings.port` (0: any port) and
    their unary calls on `socket_path`."""
    recorders: list[RecordingServer] = []

    def recording(server: grpc.aio.Server) -> None:
        recorders.append(RecordingServer(server))
        register(recorders[-1])

    address = f"127.0.0.1:{settings.port}"
    running = await start_server(
        settings, telemetry, recording, names, reuse_port=reuse_port, address=address
    )
    try:
        calls = UnaryCalls(
            recorders[0].unary_methods(names),
            authenticator_for(settings),
            settings.max_message_bytes,
            telemetry.tracer("tfmesh.inference.bridge") if telemetry.exporting else None,
        )
        http = await serve_asgi(calls, _unix_socket(socket_path), BRIDGE_KEEP_ALIVE_S)
    except BaseException:
        await running.server.stop(0)
        raise
    return running, calls, http


class EnvoyFront:
    """Envoy on the settings' host and port, in front of the calls' `sockets` and the
    grpc.aio servers on 127.0.0.1:`grpc_port`; its files in `folder`."""

    def __init__(
        self,
        settings: InferenceSettings,
        folder: Path,
        sockets: list[Path],
        grpc_port: int,
        unary_paths: list[str],
    ) -> None:
        config = bootstrap(
            settings.host,
            settings.port,
            sockets,
            grpc_port,
            unary_paths,
            settings.max_message_bytes,
        )
        self._sockets = sockets
        self._grace_s = settings.shutdown_grace_s
        self._envoy = EnvoyProcess(config, folder)
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start Envoy once the sockets are bound; its port."""
        deadline = time.monotonic() + SOCKETS_WAIT_S
        while not all(path.exists() for path in self._sockets):
            if time.monotonic() > deadline:
                log.warning("envoy starts before every front end's socket is bound")
                break
            await asyncio.sleep(0.05)
        # Forked from the event loop's thread, which lives as long as the process.
        self._envoy.launch()
        try:
            await asyncio.to_thread(self._envoy.wait_ready)
        except BaseException:
            self._envoy.kill()
            raise
        self._envoy.keep_port()
        self._watcher = asyncio.create_task(self._keep_running(), name="envoy watcher")
        return self._envoy.port

    async def _keep_running(self) -> None:
        """Start Envoy again whenever it exits (until cancelled)."""
        envoy = self._envoy
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

    async def stop(self) -> None:
        """Drain Envoy (the calls under way finish within the grace), then end it."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await asyncio.to_thread(self._envoy.stop, self._grace_s)


async def start_behind_envoy(
    settings: InferenceSettings,
    telemetry: Telemetry,
    register: Callable[[Any], None],
    names: list[str],
) -> RunningServer:
    """The one-process shape: `register`'s servicers behind Envoy on the settings' host
    and port."""
    folder = bridge_folder()
    async with contextlib.AsyncExitStack() as undo:
        undo.callback(shutil.rmtree, folder, ignore_errors=True)
        path = folder / "calls.sock"
        inner = settings.model_copy(update={"port": 0})
        running, calls, http = await serve_bridged(inner, telemetry, register, names, path, False)
        undo.push_async_callback(running.server.stop, 0)
        undo.push_async_callback(http.stop)
        front = EnvoyFront(settings, folder, [path], running.port, calls.paths)
        port = await front.start()
        undo.pop_all()

    async def stop() -> None:
        await front.stop()
        await http.stop()
        shutil.rmtree(folder, ignore_errors=True)

    running.before_stop(stop)
    running.port = port
    return running


async def serve_front_end_calls(
    settings: InferenceSettings,
    telemetry: Telemetry,
    register: Callable[[Any], None],
    names: list[str],
    socket_path: Path,
) -> RunningServer:
    """A front end of the multi-process shape behind the supervisor's Envoy: grpc.aio on
    the loopback port the supervisor holds (`settings.port`, shared), calls on its socket."""
    running, _, http = await serve_bridged(
        settings, telemetry, register, names, socket_path, reuse_port=True
    )
    running.before_stop(http.stop)
    return running
