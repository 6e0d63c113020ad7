"""The inference APIs' unary gRPC calls as Envoy's gRPC-to-HTTP/1.1 bridge hands them
over: an ASGI application, served by uvicorn on a Unix socket.

With `TFMESH_INFERENCE_GRPC_FRONT=envoy`, Envoy (services.inference.bridge.envoy) holds
the gRPC port. It ends HTTP/2 and gRPC's framing in C++ and posts each unary call of the
inference services here as one HTTP/1.1 request: the path is the method's
(`/inference.GRPCInferenceService/ModelInfer`), the body the serialized request message,
the headers the call's metadata. The call runs the handler the servicer registered on the
grpc.aio server (`RecordingServer` keeps them as they are registered) with a context that
carries the deadline (`grpc-timeout`) and the metadata, under the gRPC server's caller
check, status mapping and metrics (shared.interceptors), in a server span when spans are
exported. A client that goes away does not cancel its call here (its deadline still
bounds it). The answer is the serialized reply. A status other than OK and any
trailing metadata travel as `tfmesh-trailer-<key>` headers beside a `tfmesh-trailers`
flag; Envoy's Lua filter moves them into the gRPC trailers. Streaming methods, health and
reflection stay on the grpc.aio server behind Envoy."""

from __future__ import annotations

import base64
import logging
import re
import time
import urllib.parse
import zlib
from collections.abc import Iterable
from typing import Any, NamedTuple

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError
from opentelemetry import propagate, trace

from shared.auth import Authenticator
from shared.errors import ResourceExhausted, invalid
from shared.grpc_metrics import ServerCall, call_type
from shared.interceptors import check_caller, status_of, undecodable

log = logging.getLogger(__name__)

# What the bridge sends as the body's content type (Envoy's filter setting and ours).
PROTOBUF = b"application/x-protobuf"
TRAILERS_FLAG = b"tfmesh-trailers"
TRAILER_PREFIX = "tfmesh-trailer-"
# Headers of the HTTP/1.1 hop, not the caller's metadata.
NOT_METADATA = frozenset(
    {"content-type", "content-length", "host", "te", "accept", "grpc-timeout", "grpc-encoding",
     "grpc-accept-encoding", "x-forwarded-proto"}
)  # fmt: skip
TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
UNARY = call_type(False, False)
# gRPC's percent-encoding of grpc-message leaves printable ASCII but '%' as it is.
MESSAGE_SAFE = " !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"


class _CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


def unary_method_paths(services: list[str]) -> list[str]:
    """The unary methods of `services` (full names, in the protobuf descriptor pool) as
    gRPC paths: `/<service>/<method>`."""
    paths = []
    for service in dict.fromkeys(services):
        for method in descriptor_pool.Default().FindServiceByName(service).methods:
            if not (method.client_streaming or method.server_streaming):
                paths.append(f"/{service}/{method.name}")
    return paths


class RecordingServer:
    """Passes servicers' registrations on to a grpc.aio server and keeps their handlers."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self._generic: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        handlers = tuple(handlers)
        self._generic.extend(handlers)
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        # The generic handlers registered with them carry the same methods.
        self._server.add_registered_method_handlers(service, handlers)

    def unary_methods(self, services: list[str]) -> dict[str, grpc.RpcMethodHandler]:
        """The registered unary methods of `services` (full names), by path."""
        methods = {}
        for path in unary_method_paths(services):
            handler = self._handler(path)
            if handler is not None and handler.unary_unary is not None:
                methods[path] = handler
        return methods

    def _handler(self, path: str) -> grpc.RpcMethodHandler | None:
        details = _CallDetails(path, ())
        for generic in self._generic:
            found = generic.service(details)  # type: ignore[arg-type]
            if found is not None:
                return found
        return None


class Aborted(Exception):
    """A handler's `context.abort`: the call ends with this status."""

    def __init__(self, code: grpc.StatusCode, details: str, metadata: tuple) -> None:
        super().__init__(details)
        self.status = (code, details, tuple(metadata))


class BridgedContext:
    """What servicers use of grpc.aio.ServicerContext, for a bridged call."""

    def __init__(self, metadata: tuple[tuple[str, Any], ...], deadline: float | None) -> None:
        self._metadata = metadata
        self._deadline = deadline
        self.trailing: tuple[tuple[str, Any], ...] = ()
        # A status the handler set without raising (grpc's set_code / set_details).
        self._code = grpc.StatusCode.OK
        self._details = ""

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, Any]]) -> None:
        self.trailing = tuple(metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: tuple = ()
    ) -> None:
        raise Aborted(code, details, trailing_metadata)

    def auth_context(self) -> dict[str, list[bytes]]:
        # Envoy ends TLS (or the mesh does): no client certificate reaches this hop.
        return {}


def timeout_deadline(value: bytes | None) -> float | None:
    """A `grpc-timeout` header (`<digits><unit>`) as a `time.monotonic()` instant."""
    if not value:
        return None
    found = TIMEOUT.match(value.decode("latin-1"))
    if found is None:
        return None
    return time.monotonic() + int(found[1]) * TIMEOUT_UNITS[found[2]]


def metadata_of(headers: list[tuple[bytes, bytes]]) -> tuple[tuple[str, Any], ...]:
    """The caller's metadata from the request's headers; `-bin` values decoded."""
    metadata: list[tuple[str, Any]] = []
    for raw_key, raw_value in headers:
        key = raw_key.decode("latin-1")
        if key in NOT_METADATA or key.startswith(("x-envoy-", ":")):
            continue
        value = raw_value.decode("latin-1")
        metadata.append((key, _unbase64(value) if key.endswith("-bin") else value))
    return tuple(metadata)


def _unbase64(value: str) -> bytes:
    return base64.b64decode(value + "=" * (-len(value) % 4))


def trailer_headers(
    code: grpc.StatusCode, message: str, trailing: Iterable[tuple[str, Any]]
) -> list[tuple[bytes, bytes]]:
    """A status and trailing metadata as the headers Envoy's Lua filter moves to trailers."""
    entries: list[tuple[str, str]] = []
    if code is not grpc.StatusCode.OK:
        entries.append(("grpc-status", str(code.value[0])))
        entries.append(("grpc-message", urllib.parse.quote(message, safe=MESSAGE_SAFE)))
    for key, value in trailing:
        if key.endswith("-bin"):
            value = base64.b64encode(value).decode().rstrip("=")
        entries.append((key, str(value)))
    if not entries:
        return []
    headers = [(TRAILERS_FLAG, b"1")]
    headers += [(f"{TRAILER_PREFIX}{k}".encode(), v.encode("latin-1")) for k, v in entries]
    return headers


def _too_large(limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"the request is larger than this server takes ({limit} bytes: "
        "TFMESH_INFERENCE_MAX_MESSAGE_BYTES)"
    )


def decompressed(body: bytes, encoding: bytes | None, limit: int) -> bytes:
    """The request message, at most `limit` bytes: gzip and deflate (gRPC's compressions)
    undone. Envoy has already dropped the frame's compressed flag, so a message the client
    sent uncompressed under a `grpc-encoding` header is recognised by its bytes."""
    if encoding == b"gzip" and body[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == b"deflate":
        inflater = zlib.decompressobj()
    else:
        return body
    try:
        message = inflater.decompress(body, limit + 1)
    except zlib.error:
        if encoding == b"deflate":
            return body
        raise invalid("request", "the gzip-compressed message does not decompress") from None
    if len(message) > limit:
        raise _too_large(limit)
    return message


class UnaryCalls:
    def __init__(
        self,
        methods: dict[str, grpc.RpcMethodHandler],
        authenticator: Authenticator | None,
        max_message_bytes: int,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._methods = methods
        self._authenticator = authenticator
        self._max_message_bytes = max_message_bytes
        self._tracer = tracer
        self.in_flight = 0

    @property
    def paths(self) -> list[str]:
        return sorted(self._methods)

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        self.in_flight += 1
        try:
            if self._tracer is None:
                body, headers = await self._answer(scope, receive)
            else:
                body, headers = await self._traced(self._tracer, scope, receive)
            head = [(b"content-type", PROTOBUF), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": head + headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            self.in_flight -= 1

    async def _traced(self, tracer: trace.Tracer, scope: dict[str, Any], receive):  # type: ignore[no-untyped-def]
        """The call in a server span, a child of the caller's (W3C trace context)."""
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        service, _, method = scope["path"].lstrip("/").partition("/")
        with tracer.start_as_current_span(
            scope["path"].lstrip("/"),
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        ):
            return await self._answer(scope, receive)

    async def _answer(self, scope: dict[str, Any], receive) -> tuple[bytes, list]:  # type: ignore[no-untyped-def]
        path = scope["path"]
        counted = ServerCall(UNARY, path)
        code = grpc.StatusCode.OK
        context = BridgedContext((), None)
        try:
            handler = self._methods.get(path)
            if handler is None:
                code = grpc.StatusCode.UNIMPLEMENTED
                return b"", trailer_headers(code, f"Method not found: {path}", ())
            headers = dict(scope["headers"])
            request = await self._request(handler, headers, receive)
            context = BridgedContext(
                metadata_of(scope["headers"]), timeout_deadline(headers.get(b"grpc-timeout"))
            )
            check_caller(self._authenticator, path, context)  # type: ignore[arg-type]
            reply = await handler.unary_unary(request, context)
            code = context.code()
            if code is not grpc.StatusCode.OK:
                return b"", trailer_headers(code, context.details(), context.trailing)
            return handler.response_serializer(reply), trailer_headers(code, "", context.trailing)
        except ConnectionError:
            code = grpc.StatusCode.CANCELLED
            return b"", trailer_headers(code, "the call went away", ())
        except Exception as error:  # noqa: BLE001 - mapped to a status, never re-raised
            code, message, metadata = (
                error.status if isinstance(error, Aborted) else status_of(error)
            )
            try:
                return b"", trailer_headers(code, message, (*context.trailing, *metadata))
            except Exception:  # noqa: BLE001 - a trailer that cannot be written
                log.exception("unwritable trailing metadata", extra={"path": path})
                code = grpc.StatusCode.INTERNAL
                return b"", trailer_headers(code, "internal error: trailing metadata", ())
        finally:
            counted.finish(code)

    async def _request(self, handler: grpc.RpcMethodHandler, headers: dict, receive) -> Any:  # type: ignore[no-untyped-def]
        chunks = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError("the bridge closed the request")
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self._max_message_bytes:
                raise _too_large(self._max_message_bytes)
        body = decompressed(
            b"".join(chunks), headers.get(b"grpc-encoding"), self._max_message_bytes
        )
        try:
            return handler.request_deserializer(body)
        except DecodeError as error:
            raise undecodable(error) from None
