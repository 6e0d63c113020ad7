"""The inference service's REST API: an ASGI application that uvicorn serves.

Its routes, KServe v2's (with Triton's config, statistics and binary tensors) and TF
Serving's, are the one table in shared.rest_routes: each names the permission it needs
and the handler that answers it, in its protocol's REST module
(services.inference.protocols.kserve.rest, services.inference.protocols.tfserving.rest).
This module is the HTTP side they share: routing, credentials, bodies and errors.

Every failure is `{"error": "<message>"}` (both APIs' shape) with the HTTP status of its
gRPC code, and `Retry-After` when the failure says when to come back. The body is read up
to the service's message limit (413 past it); a body that declares a content type neither
API reads is refused with 415. The routes are matched by regular expressions, not a web
framework, so a request costs what uvicorn, the JSON codec and the prediction cost. Each
answer is counted and timed under its route's template (shared.http_metrics)."""

from __future__ import annotations

import logging
import time
from typing import Any

from services.inference.pipeline import Pipeline
from services.inference.protocols.kserve.rest import KServeRest
from services.inference.protocols.tfserving.rest import TFServingRest
from services.inference.rest.replies import BINARY, Call, Handler, Reply, error_reply
from shared import http_metrics
from shared.auth import Authenticator
from shared.errors import DomainError
from shared.http_codes import HTTP_STATUS, retry_after
from shared.rest_routes import route_of

log = logging.getLogger(__name__)

# Content types a body may declare: JSON ones, and what curl and Triton's clients send.
READABLE_TYPES = (b"application/json", b"application/x-www-form-urlencoded", b"text/plain", BINARY)
# Past the limit, a body is still read (and dropped) up to this much more, so the client
# gets its 413 rather than a reset connection; beyond, the connection is closed.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


# The handlers of each API, by the tag its routes carry (shared.rest_routes).
APIS: dict[str, type[KServeRest] | type[TFServingRest]] = {
    "kserve": KServeRest,
    "tfserving": TFServingRest,
}


class BodyTooLarge(Exception):
    pass


class RestApi:
    def __init__(
        self, pipeline: Pipeline, max_body_bytes: int, authenticator: Authenticator | None = None
    ) -> None:
        self._apis = {tag: api(pipeline) for tag, api in APIS.items()}
        self._max_body_bytes = max_body_bytes
        self._authenticator = authenticator

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        template, reply = await self._handle(scope, receive)
        headers = [
            (b"content-type", reply.content_type),
            (b"content-length", str(len(reply.body)).encode()),
            *reply.headers,
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        http_metrics.record(template, scope["method"], reply.status, started)

    async def _handle(self, scope: dict[str, Any], receive) -> tuple[str, Reply]:  # type: ignore[no-untyped-def]
        """The answer to a request, and the template of the route that took it."""
        method, path = scope["method"], scope["path"]
        route, params, allowed = route_of(method, path)
        if route is None:
            if allowed:
                reply = error_reply(405, f"{path} takes {' or '.join(sorted(allowed))}")
                return http_metrics.UNMATCHED, reply
            return http_metrics.UNMATCHED, error_reply(404, f"no route for {method} {path}")
        if self._authenticator is not None:
            authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            try:
                self._authenticator.check_permission(
                    route.permission, f"{method} {path}", authorization
                )
            except DomainError as error:
                return route.template, error_reply(HTTP_STATUS[error.code], error.message)
        handler = getattr(self._apis[route.tag], route.handler)
        return route.template, await self._answer(handler, params, scope, receive)

    async def _answer(self, handler: Handler, params: dict[str, str], scope, receive) -> Reply:  # type: ignore[no-untyped-def]
        method, path = scope["method"], scope["path"]
        headers = dict(scope["headers"])
        try:
            body = await self._read_body(headers, receive) if method == "POST" else b""
        except ConnectionError as error:
            return error_reply(499, str(error))
        except BodyTooLarge:
            reply = error_reply(
                413,
                f"the body is larger than this server takes ({self._max_body_bytes} bytes: "
                "TFMESH_INFERENCE_MAX_MESSAGE_BYTES)",
            )
            reply.headers = ((b"connection", b"close"),)
            return reply
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if body and content_type and not _readable(content_type):
            return error_reply(415, f"content type {content_type.decode()!r} is not JSON")
        try:
            return await handler(Call(params, headers, body))
        except DomainError as error:
            reply = error_reply(HTTP_STATUS.get(error.code, 500), error.message)
            wait = retry_after(getattr(error, "retry_after_s", None))
            reply.headers = tuple((k.lower().encode(), v.encode()) for k, v in wait.items())
            return reply
        except Exception:  # noqa: BLE001 - a bug in one request must not take the server down
            log.exception("unhandled error in a REST request", extra={"path": path})
            return error_reply(500, "internal error")

    async def _read_body(self, headers: dict[bytes, bytes], receive) -> bytes:  # type: ignore[no-untyped-def]
        declared = headers.get(b"content-length")
        too_large = (
            declared is not None and declared.isdigit() and int(declared) > self._max_body_bytes
        )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BodyTooLarge() if too_large else ConnectionError("client went away")
            part = message.get("body", b"")
            size += len(part)
            too_large = too_large or size > self._max_body_bytes
            if not too_large:
                chunks.append(part)
            if (
                not message.get("more_body", False)
                or size > self._max_body_bytes + DRAIN_LIMIT_BYTES
            ):
                break
        if too_large:
            raise BodyTooLarge()
        return b"".join(chunks)


def _readable(content_type: bytes) -> bool:
    return content_type in READABLE_TYPES or content_type.endswith(b"+json")
