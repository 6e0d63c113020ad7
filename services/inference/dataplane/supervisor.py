"""The inference service's supervisor: one model owner and N front ends, kept running.

Like a pre-fork server's arbiter it serves no request itself. It checks the settings and
the model config (a bad one fails here, naming the variable), holds the gRPC and HTTP
ports (bound with SO_REUSEPORT, not listening, so a port of 0 becomes a real one the front
ends share),
starts the owner and the front ends as `python -m services.inference.server owner|
frontend`, and restarts any that exits, immediately the first time and with a growing
delay while one keeps failing. The processes' Prometheus metrics are aggregated on the
service's metrics port (prometheus_client's multiprocess mode). On SIGTERM it stops the
front ends first, which drain their calls through the still-running owner, then the
owner. Children die with it (PR_SET_PDEATHSIG), so a killed supervisor leaves nothing."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from services.inference.bridge.calls import unary_method_paths
from services.inference.bridge.front import EnvoyFront, bridge_folder, inference_services
from services.inference.config import model_specs
from services.inference.settings import InferenceSettings
from shared.discovery import ConsulDiscovery
from shared.server import signalled
from shared.telemetry import setup_logging

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
FIRST_RESTART_DELAY_S = 0.1
MAX_RESTART_DELAY_S = 5.0
# A child that ran this long before exiting is restarted without delay.
STABLE_AFTER_S = 10.0


def die_with_parent(parent: int) -> None:
    """In a child: get SIGTERM when the supervisor dies, and exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        log.warning(
            "could not ask for the parent-death signal", extra={"errno": ctypes.get_errno()}
        )
    if os.getppid() != parent:
        sys.exit("the supervisor is gone")


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT: holds the port for the front ends.
    A port some other server holds is refused first: with SO_REUSEPORT alone, a second
    service of the same user would silently share the port's connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))
    except OSError:
        holder.close()
        raise
    return holder


@dataclass
class Child:
    role: str
    index: int
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0

    @property
    def name(self) -> str:
        return self.role if self.role == "owner" else f"frontend {self.index}"


class Supervisor:
    def __init__(self, settings: InferenceSettings) -> None:
        self._settings = settings
        self._address = f"@tfmesh-inference-{os.getpid()}-{secrets.token_hex(4)}"
        self._owner = Child("owner", 0)
        self._frontends = [Child("frontend", i) for i in range(settings.frontends)]
        self._stopping = False
        # With the Envoy front: each front end's socket for its bridged calls, and their folder.
        self._sockets: list[Path] = []
        self._bridge_folder = ""

    async def run(self) -> int:
        settings = self._settings
        setup_logging("inference", os.environ.get("TFMESH_LOG_LEVEL", "INFO"))
        model_specs(settings)
        holders = [reserve_port(settings.host, settings.port)]
        port = holders[0].getsockname()[1]
        http_port = settings.http_port
        if http_port >= 0:
            holders.append(reserve_port(settings.host, http_port))
            http_port = holders[1].getsockname()[1]
        metrics_dir = tempfile.mkdtemp(prefix="tfmesh-inference-metrics-")
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
            "TFMESH_INFERENCE_PORT": str(port),
            "TFMESH_INFERENCE_HTTP_PORT": str(http_port),
            "TFMESH_INFERENCE_METRICS_PORT": "-1",
        }
        envoy = self._envoy_front(port, env, holders)
        metrics_server = self._metrics_server(metrics_dir)
        consul = ConsulDiscovery.from_env()
        if consul is not None:
            await consul.register("inference", settings.host, port)
        keepers = [
            asyncio.create_task(self._keep(child, env, metrics_dir))
            for child in [self._owner, *self._frontends]
        ]
        if envoy is not None:
            await envoy.start()
        log.info(
            "supervising",
            extra={
                "address": f"{settings.host}:{port}",
                "http_port": http_port,
                "frontends": len(self._frontends),
                "grpc_front": settings.grpc_front,
                "metrics_port": metrics_server.server_port if metrics_server else None,
            },
        )
        await signalled()
        log.info("shutting down", extra={"grace_s": settings.shutdown_grace_s})
        self._stopping = True
        if envoy is not None:
            await envoy.stop()
        await self._stop([c for c in self._frontends if c.process is not None])
        await self._stop([self._owner] if self._owner.process is not None else [])
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        if consul is not None:
            await consul.deregister_all()
        if metrics_server is not None:
            metrics_server.shutdown()
        for folder in (metrics_dir, self._bridge_folder):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        for holder in holders:
            holder.close()
        log.info("stopped")
        return 0

    def _metrics_server(self, metrics_dir: str) -> WSGIServer | None:
        """The processes' metrics aggregated on the service's metrics port (-1: none)."""
        if self._settings.metrics_port < 0:
            return None
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=metrics_dir)
        server, _ = start_http_server(
            self._settings.metrics_port, addr=self._settings.host, registry=registry
        )
        return server

    def _envoy_front(
        self, port: int, env: dict[str, str], holders: list[socket.socket]
    ) -> EnvoyFront | None:
        """With the Envoy front: Envoy on the service's port (beside the holder, both with
        SO_REUSEPORT), the front ends' grpc.aio on a loopback port held here, and a socket
        per front end for its bridged calls."""
        settings = self._settings
        if settings.grpc_front != "envoy":
            return None
        holders.append(reserve_port("127.0.0.1", 0))
        grpc_port = holders[-1].getsockname()[1]
        env["TFMESH_INFERENCE_PORT"] = str(grpc_port)
        folder = bridge_folder()
        self._bridge_folder = str(folder)
        self._sockets = [folder / f"calls-{child.index}.sock" for child in self._frontends]
        paths = unary_method_paths(inference_services())
        public = settings.model_copy(update={"port": port})
        return EnvoyFront(public, folder, self._sockets, grpc_port, paths)

    def _command(self, child: Child) -> list[str]:
        command = [sys.executable, "-m", "services.inference.server", child.role]
        command += ["--socket", self._address, "--index", str(child.index)]
        if self._sockets and child.role == "frontend":
            command += ["--bridge-socket", str(self._sockets[child.index])]
        return command + ["--parent", str(os.getpid())]

    async def _keep(self, child: Child, env: dict[str, str], metrics_dir: str) -> None:
        delay = FIRST_RESTART_DELAY_S
        while not self._stopping:
            started = time.monotonic()
            try:
                process = await asyncio.create_subprocess_exec(*self._command(child), env=env)
            except OSError as error:
                code: int | str = f"could not start: {error}"
            else:
                child.process = process
                code = await process.wait()
                multiprocess.mark_process_dead(process.pid, metrics_dir)
            if self._stopping:
                return
            child.restarts += 1
            if time.monotonic() - started >= STABLE_AFTER_S:
                delay = FIRST_RESTART_DELAY_S
            log.warning(
                "process exited; restarting it",
                extra={
                    "child": child.name,
                    "code": code,
                    "restarts": child.restarts,
                    "restart_in_s": delay,
                },
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY_S)

    async def _stop(self, children: list[Child]) -> None:
        """SIGTERM, then SIGKILL whatever is still running after the grace period."""
        running = [c.process for c in children if c.process and c.process.returncode is None]
        for process in running:
            process.terminate()
        waits = [process.wait() for process in running]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), self._settings.shutdown_grace_s + 5.0)
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    process.kill()
            await asyncio.gather(*(process.wait() for process in running))
