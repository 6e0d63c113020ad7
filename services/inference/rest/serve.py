"""uvicorn (with httptools' HTTP parser) serving the REST API on the process's event loop.

Each front end binds the HTTP port itself with SO_REUSEPORT, as it does the gRPC port,
so the kernel spreads HTTP connections over the front ends too. uvicorn's own signal
handling is left out: the process's start-up code owns SIGTERM and stops this server with
the gRPC one."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from services.inference.rest.app import RestApi
from shared.tls import TlsFiles, uvicorn_tls

BACKLOG = 2048
# How long an idle keep-alive connection stays open. Longer than any pool in front of it
# keeps one (the gateway's: gateway.forward.POOL_IDLE_S), so the client side always closes
# first: a server closing a connection while the client reuses it fails that request.
KEEP_ALIVE_S = 75


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class HttpServer:
    port: int
    _server: _Server
    _task: asyncio.Task[None]

    async def stop(self) -> None:
        """Stop taking connections, finish the requests under way, return."""
        self._server.should_exit = True
        await self._task


def bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio turns Nagle's algorithm off (TCP_NODELAY) only
    # on sockets that say so, and a response's head and body are two writes; with Nagle on
    # they wait out the client's delayed ACK (40 ms) whenever a connection is reused.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


async def start_http(
    api: RestApi, host: str, port: int, reuse_port: bool, tls: TlsFiles | None = None
) -> HttpServer:
    """Serve `api` on `port` (HTTPS when `tls` has a certificate; client certificates
    required when it has a client CA)."""
    return await serve_asgi(api, bind(host, port, reuse_port), KEEP_ALIVE_S, tls)


async def serve_asgi(
    app: Any, sock: socket.socket, keep_alive_s: int, tls: TlsFiles | None = None
) -> HttpServer:
    """Serve the ASGI `app` on the bound socket `sock` (TCP or Unix)."""
    config = uvicorn.Config(
        app,
        **uvicorn_tls(tls),
        http="httptools",
        loop="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=BACKLOG,
        timeout_keep_alive=keep_alive_s,
        # Nothing reads the client's address: no X-Forwarded-For rewriting per request.
        proxy_headers=False,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the HTTP server stopped while starting")
        await asyncio.sleep(0.01)
    port = sock.getsockname()[1] if sock.family != socket.AF_UNIX else 0
    return HttpServer(port, server, task)
