"""gRPC server interceptors: domain errors to `google.rpc.Status`, and RPC metrics.

This is the one place where exceptions become status codes: a `DomainError` keeps its
code and typed details, a database that does not answer is UNAVAILABLE (retryable), a
full disk RESOURCE_EXHAUSTED, any other exception INTERNAL with its message logged
(never leaked) so a bug in one call never takes the server down. Request bytes that do
not parse as the method's message are the caller's mistake: INVALID_ARGUMENT naming the
message type, for a unary request and for any message of a request stream alike (gRPC
itself would answer UNKNOWN or INTERNAL). With an authenticator, every call's caller is
checked against the permission table before its handler runs (shared.auth), and refused
calls are statuses like any other. Every call is counted and timed under the gRPC
ecosystem's metric names (shared.grpc_metrics)."""

from __future__ import annotations

import errno
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from shared.auth import Authenticator, act_as
from shared.errors import DomainError, ResourceExhausted, invalid
from shared.grpc_metrics import ServerCall, call_type

log = logging.getLogger(__name__)


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, Any], ...]]:
    """The status a handler's exception becomes: its code, its message and the trailing
    metadata that carry its typed details."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        # A full disk (or quota): the operator's to fix, the caller's to retry later; what
        # gRPC's own codes name RESOURCE_EXHAUSTED ("the entire file system is out of space").
        log.error("no space left on the service's disk", exc_info=error)
        error = ResourceExhausted("no space left on the service's disk")
    if isinstance(error, DomainError):
        status = rpc_status.to_status(error.to_status())
        return status.code, status.details, tuple(status.trailing_metadata)
    if _database_away(error):
        # The database did not answer (a restart, a failover): retryable, not a bug.
        log.warning("database unavailable", exc_info=error)
        return grpc.StatusCode.UNAVAILABLE, "the database is not available now", ()
    if isinstance(error, NotImplementedError):
        # What a generated servicer base class raises for a method the server leaves out
        # (TF Serving's Classify, Regress, MultiInference): the caller's answer is that.
        return grpc.StatusCode.UNIMPLEMENTED, "this server does not implement it", ()
    log.exception("unhandled error in RPC", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}", ()


async def _abort(context: grpc.aio.ServicerContext, error: BaseException) -> None:
    await context.abort(*status_of(error))


def _database_away(error: BaseException) -> bool:
    """A SQLAlchemy connection failure, in a process that has SQLAlchemy loaded (the
    gateway and inference have not)."""
    exc = sys.modules.get("sqlalchemy.exc")
    return exc is not None and isinstance(error, exc.OperationalError | exc.InterfaceError)


class ErrorAndMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler kind so that callers are checked, errors map to statuses and
    each call is counted."""

    def __init__(self, authenticator: Authenticator | None = None) -> None:
        self._authenticator = authenticator

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
        kind = call_type(streaming_requests, bool(handler.unary_stream or handler.stream_stream))
        if handler.unary_unary or handler.stream_unary:
            inner = _checking_requests(
                handler.unary_unary or handler.stream_unary, streaming_requests
            )
            wrapped = _wrap_unary_response(inner, kind, method, self._authenticator)
            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
        else:
            inner = _checking_requests(
                handler.unary_stream or handler.stream_stream, streaming_requests
            )
            wrapped = _wrap_stream_response(inner, kind, method, self._authenticator)
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


def undecodable(error: DecodeError) -> DomainError:
    """The INVALID_ARGUMENT of request bytes that do not parse as the method's message."""
    return invalid("request", f"the bytes do not parse: {error}")


def _checked(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise undecodable(request.error)
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request)


def _checking_requests(inner: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
    """`inner` refusing undecodable requests with INVALID_ARGUMENT."""
    if streaming:
        return lambda requests, context: inner(_checked_stream(requests), context)
    return lambda request, context: inner(_checked(request), context)


def check_caller(
    authenticator: Authenticator | None, method: str, context: grpc.aio.ServicerContext
) -> None:
    if authenticator is None or not authenticator.enabled:
        return
    metadata = context.invocation_metadata() or ()
    authorization = next((str(v) for k, v in metadata if k == "authorization"), "")
    names = (context.auth_context() or {}).get("x509_common_name", [])
    act_as(authenticator.check(method, authorization, [n.decode(errors="replace") for n in names]))


def _wrap_unary_response(
    inner: Callable[..., Any], kind: str, method: str, authenticator: Authenticator | None
) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        counted = ServerCall(kind, method)
        try:
            check_caller(authenticator, method, context)
            return await inner(request, context)
        except Exception as error:  # noqa: BLE001 - mapped to a status, never re-raised
            if _is_abort(error):
                raise
            await _abort(context, error)
        finally:
            counted.finish(context.code())

    return call


def _wrap_stream_response(
    inner: Callable[..., Any], kind: str, method: str, authenticator: Authenticator | None
) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        counted = ServerCall(kind, method)
        try:
            check_caller(authenticator, method, context)
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
            counted.finish(context.code())

    return call


def _is_abort(error: BaseException) -> bool:
    # context.abort() raises grpc.aio.AbortError; it already carries its status.
    return isinstance(error, grpc.aio.AbortError)
