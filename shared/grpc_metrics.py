"""Prometheus metrics of gRPC calls, server and client side, with the gRPC ecosystem's names.

The names and labels are py-grpc-prometheus's (and go-grpc-prometheus's):
`grpc_server_started_total`, `grpc_server_handled_total` and `grpc_server_handling_seconds`
labelled `grpc_type`, `grpc_service`, `grpc_method` (and `grpc_code` on the handled
counter), and the same three with `grpc_client_` for the calls a service makes, so
dashboards and alert rules written for those libraries work on tfmesh unchanged. The
server side is recorded by the error interceptor (shared.interceptors); the client side by
the interceptors `client_interceptors` returns, which `shared.channels` installs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from shared.metric_children import child

HANDLING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_CALL = ["grpc_type", "grpc_service", "grpc_method"]

SERVER_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _CALL)
SERVER_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, whatever their status code.",
    [*_CALL, "grpc_code"],
)
SERVER_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's start to its last response on the server.",
    _CALL,
    buckets=HANDLING_BUCKETS,
)
CLIENT_STARTED = Counter("grpc_client_started_total", "RPCs started by this client.", _CALL)
CLIENT_HANDLED = Counter(
    "grpc_client_handled_total",
    "RPCs this client saw complete, whatever their status code.",
    [*_CALL, "grpc_code"],
)
CLIENT_SECONDS = Histogram(
    "grpc_client_handling_seconds",
    "Time from an RPC's start to its status, as this client saw it.",
    _CALL,
    buckets=HANDLING_BUCKETS,
)

UNARY = "unary"
CLIENT_STREAM = "client_stream"
SERVER_STREAM = "server_stream"
BIDI_STREAM = "bidi_stream"


def call_type(request_streaming: bool, response_streaming: bool) -> str:
    if request_streaming:
        return BIDI_STREAM if response_streaming else CLIENT_STREAM
    return SERVER_STREAM if response_streaming else UNARY


def split_method(full_method: str | bytes) -> tuple[str, str]:
    """`/pkg.Service/Method` -> (`pkg.Service`, `Method`)."""
    text = full_method.decode() if isinstance(full_method, bytes) else full_method
    _, service, method = text.split("/", 2)
    return service, method


def code_name(code: grpc.StatusCode | int | None) -> str:
    """The upper-case name of a status code, from the enum or its number."""
    if code is None:
        return grpc.StatusCode.OK.name
    if isinstance(code, grpc.StatusCode):
        return code.name
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")


class ServerCall:
    """One RPC as the server sees it: counted when it starts and when it completes."""

    __slots__ = ("_labels", "_started")

    def __init__(self, kind: str, full_method: str) -> None:
        self._labels = (kind, *split_method(full_method))
        self._started = time.perf_counter()
        child(SERVER_STARTED, *self._labels).inc()

    def finish(self, code: grpc.StatusCode | int | None) -> None:
        child(SERVER_HANDLED, *self._labels, code_name(code)).inc()
        child(SERVER_SECONDS, *self._labels).observe(time.perf_counter() - self._started)


def _watch(kind: str, details: grpc.aio.ClientCallDetails, call: Any) -> Any:
    labels = (kind, *split_method(details.method))
    started = time.perf_counter()
    child(CLIENT_STARTED, *labels).inc()

    async def record(done: Any) -> None:
        code = grpc.StatusCode.CANCELLED if done.cancelled() else await done.code()
        child(CLIENT_HANDLED, *labels, code_name(code)).inc()
        child(CLIENT_SECONDS, *labels).observe(time.perf_counter() - started)

    # A done call's code is a coroutine that returns at once; the callback cannot await.
    call.add_done_callback(lambda done: asyncio.ensure_future(record(done)))
    return call


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return _watch(UNARY, client_call_details, await continuation(client_call_details, request))


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        return _watch(SERVER_STREAM, client_call_details, call)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        call = await continuation(client_call_details, request_iterator)
        return _watch(CLIENT_STREAM, client_call_details, call)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        call = await continuation(client_call_details, request_iterator)
        return _watch(BIDI_STREAM, client_call_details, call)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that record every call of a channel, one per call shape."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]
