"""gRPC server interceptors: domain errors to `google.rpc.Status`, and RPC metrics.

This is the one place where exceptions become status codes: a `DomainError` keeps its
code and typed details, any other exception becomes INTERNAL with its message logged
(never leaked) so a bug in one call never takes the server down. Request bytes that do
not parse as the method's message are the caller's mistake: INVALID_ARGUMENT naming the
message type, for a unary request and for any message of a request stream alike (gRPC
itself would answer UNKNOWN or INTERNAL)."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status
from prometheus_client import Counter, Histogram

from shared.errors import DomainError, invalid

log = logging.getLogger(__name__)

RPC_HANDLED = Counter(
    "tfmesh_grpc_server_handled_total",
    "RPCs completed by the server, by method and status code.",
    ["service", "method", "code"],
)
RPC_SECONDS = Histogram(
    "tfmesh_grpc_server_handling_seconds",
    "Time from RPC start to its last response, by method.",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


async def _abort(context: grpc.aio.ServicerContext, error: BaseException) -> None:
    if isinstance(error, DomainError):
        status = rpc_status.to_status(error.to_status())
        await context.abort(status.code, status.details, status.trailing_metadata)
    if isinstance(error, NotImplementedError):
        # What a generated servicer base class raises for a method the server leaves out
        # (TF Serving's Classify, Regress, MultiInference): the caller's answer is that.
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server does not implement it")
    log.exception("unhandled error in RPC", exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")


def _split_method(full_method: str) -> tuple[str, str]:
    _, service, method = full_method.split("/", 2)
    return service, method


def _record(full_method: str, started: float, context: grpc.aio.ServicerContext) -> None:
    service, method = _split_method(full_method)
    code = context.code() or grpc.StatusCode.OK
    if isinstance(code, int):
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    RPC_HANDLED.labels(service, method, code.name).inc()
    RPC_SECONDS.labels(service, method).observe(time.perf_counter() - started)


class ErrorAndMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler kind so that errors map to statuses and each call is counted."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        streaming_requests = bool(handler.stream_unary or handler.stream_stream)
        if handler.unary_unary or handler.stream_unary:
            inner = _checking_requests(
                handler.unary_unary or handler.stream_unary, streaming_requests
            )
            wrapped = _wrap_unary_response(inner, method)
            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
        else:
            inner = _checking_requests(
                handler.unary_stream or handler.stream_stream, streaming_requests
            )
            wrapped = _wrap_stream_response(inner, method)
            factory = (
                grpc.unary_stream_rpc_method_handler
                if handler.unary_stream
                else grpc.stream_stream_rpc_method_handler
            )
        return factory(
            wrapped,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


class _Undecodable:
    """What a request that failed to parse becomes, so the handler's wrapper can refuse it."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as error:
            return _Undecodable(error)

    return deserialize


def _checked(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise invalid("request", f"the bytes do not parse: {request.error}")
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request)


def _checking_requests(inner: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
    """`inner` refusing undecodable requests with INVALID_ARGUMENT."""
    if streaming:
        return lambda requests, context: inner(_checked_stream(requests), context)
    return lambda request, context: inner(_checked(request), context)


def _wrap_unary_response(inner: Callable[..., Any], method: str) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            return await inner(request, context)
        except Exception as error:  # noqa: BLE001 - mapped to a status, never re-raised
            if _is_abort(error):
                raise
            await _abort(context, error)
        finally:
            _record(method, started, context)

    return call


def _wrap_stream_response(inner: Callable[..., Any], method: str) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        try:
            responses = inner(request, context)
            if inspect.isawaitable(responses):
                # A handler that streams with `context.write` (e.g. health Watch) is a
                # coroutine, not an async iterator: await it; its writes go out directly.
                await responses
            else:
                async for response in responses:
                    yield response
        except Exception as error:  # noqa: BLE001 - mapped to a status, never re-raised
            if _is_abort(error):
                raise
            await _abort(context, error)
        finally:
            _record(method, started, context)

    return call


def _is_abort(error: BaseException) -> bool:
    # context.abort() raises grpc.aio.AbortError; it already carries its status.
    return isinstance(error, grpc.aio.AbortError)
