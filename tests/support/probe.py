"""A tiny gRPC service for testing the shared server stack without generating a proto.

`probe_handler` builds a generic handler for `tfmesh.testing.v1.Probe` whose methods are
async functions chosen by each test. Requests and responses reuse the health protocol's
messages (`HealthCheckRequest` in, `HealthCheckResponse` out), which every server already
carries. `unary_method` / `streaming_method` are the matching client side, and
`call_status` decodes the `google.rpc.Status` a failed call carries in its trailers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeAlias

import grpc
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

PROBE_SERVICE = "tfmesh.testing.v1.Probe"
Request: TypeAlias = health_pb2.HealthCheckRequest
Response: TypeAlias = health_pb2.HealthCheckResponse
SERVING = health_pb2.HealthCheckResponse.SERVING

UnaryBehaviour = Callable[[Request, grpc.aio.ServicerContext], Awaitable[Response]]
# Either an async generator of responses, or a coroutine that sends them with context.write.
StreamBehaviour = Callable[
    [Request, grpc.aio.ServicerContext], AsyncIterator[Response] | Awaitable[None]
]


def probe_handler(
    unary: Mapping[str, UnaryBehaviour] | None = None,
    streaming: Mapping[str, StreamBehaviour] | None = None,
) -> grpc.GenericRpcHandler:
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for name, behaviour in (unary or {}).items():
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=Request.FromString,
            response_serializer=Response.SerializeToString,
        )
    for name, stream_behaviour in (streaming or {}).items():
        handlers[name] = grpc.unary_stream_rpc_method_handler(
            stream_behaviour,
            request_deserializer=Request.FromString,
            response_serializer=Response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(PROBE_SERVICE, handlers)


def register_probe(
    unary: Mapping[str, UnaryBehaviour] | None = None,
    streaming: Mapping[str, StreamBehaviour] | None = None,
) -> Callable[[grpc.aio.Server], None]:
    """The `register` callback `shared.server.start_server` expects."""
    handler = probe_handler(unary, streaming)

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((handler,))

    return register


def unary_method(channel: grpc.aio.Channel, name: str) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        f"/{PROBE_SERVICE}/{name}",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )


def streaming_method(channel: grpc.aio.Channel, name: str) -> grpc.aio.UnaryStreamMultiCallable:
    return channel.unary_stream(
        f"/{PROBE_SERVICE}/{name}",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )


async def call_status(call: grpc.aio.Call) -> status_pb2.Status | None:
    """The rich status of a finished call, decoded by grpcio-status (None when absent)."""
    return await rpc_status.aio.from_call(call)
