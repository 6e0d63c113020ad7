"""Start-up and shutdown shared by every gRPC service.

`start_server` builds a `grpc.aio` server with the error/metrics interceptor and (when
spans are exported) the tracing interceptor, the standard `grpc.health.v1` service (with a
`liveness` name beside the overall status), server reflection, the configured message-size
limit, optional TLS or mTLS, and a Prometheus /metrics port.
`serve_until_signalled` runs it until SIGTERM/SIGINT, then stops accepting calls, lets
in-flight ones finish within the grace period, and returns so the process exits 0."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from shared.auth import authenticator_for
from shared.discovery import ConsulDiscovery
from shared.heap import freeze_heap
from shared.interceptors import ErrorAndMetricsInterceptor
from shared.settings import ServiceSettings, SettingsError
from shared.telemetry import Telemetry

log = logging.getLogger(__name__)

# A health service name that says only that the process answers: a liveness probe asks for
# it, while the overall status ("") may go NOT_SERVING when a dependency is away (an
# inference front end without its model owner), which is for readiness to act on.
LIVENESS = "liveness"


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    service_names: list[str]
    host: str = "127.0.0.1"
    metrics_port: int | None = None
    # The HTTP port of a service that also serves REST itself (inference).
    http_port: int | None = None
    _on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _before_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def address(self) -> str:
        """Where a client on this machine reaches the server."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` after in-flight calls have drained (close stores, stop workers)."""
        self._on_stop.append(callback)

    def before_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` when stopping starts, before the server drains (a proxy in front
        of it closes its listener and lets its calls finish)."""
        self._before_stop.append(callback)

    def watch_dependency(self, name: str, check: Callable[[], None], interval_s: float) -> None:
        """Check a backing service every `interval_s` (in a thread): while `check` raises,
        the overall health and the services' say NOT_SERVING (liveness stays SERVING)."""
        statuses = {True: health_pb2.HealthCheckResponse.SERVING}
        statuses[False] = health_pb2.HealthCheckResponse.NOT_SERVING

        async def watch() -> None:
            healthy = True
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await asyncio.to_thread(check)
                    now = True
                except Exception as error:
                    now = False
                    if healthy:
                        log.warning(f"{name} is away: {error}")
                if now != healthy:
                    healthy = now
                    if now:
                        log.info(f"{name} is back")
                    for service in ["", *self.service_names]:
                        await self.health.set(service, statuses[now])

        task = asyncio.create_task(watch())

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.on_stop(stop)

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        for callback in self._before_stop:
            await callback()
        await self.server.stop(grace_s)
        for callback in reversed(self._on_stop):
            await callback()


async def start_server(
    settings: ServiceSettings,
    telemetry: Telemetry,
    register: Callable[[grpc.aio.Server], None],
    service_names: list[str],
    *,
    reuse_port: bool = False,
    address: str = "",
) -> RunningServer:
    """Build, bind and start a server; `register` adds the service's servicers.
    `reuse_port` lets several processes share the port (SO_REUSEPORT); `address` binds
    gRPC there instead of the settings' host and port (the metrics port stays)."""
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    server = grpc.aio.server(
        interceptors=[
            *telemetry.server_interceptors(),
            ErrorAndMetricsInterceptor(authenticator_for(settings)),
        ],
        options=options,
    )
    register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [
            *service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    address = address or f"{settings.host}:{settings.port}"
    credentials = settings.tls_files().server_credentials()
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    for name in ["", LIVENESS, *service_names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(server, port, health, service_names, settings.host)
    if settings.metrics_port >= 0:
        httpd, _ = start_http_server(settings.metrics_port, addr=settings.host)
        running.metrics_port = httpd.server_port
        running.on_stop(lambda: asyncio.to_thread(httpd.shutdown))
    log.info(
        "serving",
        extra={
            "address": f"{address.rsplit(':', 1)[0]}:{port}",
            "metrics_port": running.metrics_port,
            "services": service_names,
            "tls": credentials is not None,
        },
    )
    return running


async def serve(running: RunningServer, settings: ServiceSettings, discovery_name: str) -> None:
    """Register with Consul when `CONSUL_HTTP_ADDR` is set, then serve until signalled."""
    consul = ConsulDiscovery.from_env()
    if consul is not None:
        await consul.register(discovery_name, settings.host, running.port)
        running.on_stop(consul.deregister_all)
    await serve_until_signalled(running, settings.shutdown_grace_s)


def run_service(name: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """A service's process: run `main`; a setting or schema that stops the start is one
    line on stderr (what to fix) and exit status 2, not a traceback."""
    try:
        asyncio.run(main())
    except SettingsError as error:
        print(f"{name} cannot start: {error}", file=sys.stderr)
        sys.exit(2)


async def signalled() -> None:
    """Return when the process gets SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def serve_until_signalled(running: RunningServer, grace_s: float) -> None:
    """Block until SIGTERM or SIGINT, then shut down gracefully. The heap built by the
    start-up is frozen first (shared.heap)."""
    freeze_heap()
    await signalled()
    log.info("shutting down", extra={"grace_s": grace_s})
    await running.stop(grace_s)
    log.info("stopped")
