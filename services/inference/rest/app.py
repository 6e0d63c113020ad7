"""The inference service's REST API: an ASGI application that uvicorn serves.

Its routes, KServe v2's (with Triton's config, statistics and binary tensors) and TF
Serving's, are the one table in shared.rest_routes: each names the method here that
answers it and the permission it needs. A version is a number, or a label for KServe; TF
Serving pins with `/versions/N` or `/labels/L`; `:classify` and `:regress` answer 501.

Every failure is `{"error": "<message>"}` (both APIs' shape) with the HTTP status of its
gRPC code. The body is read up to the service's message limit (413 past it); a body that
declares a content type neither API reads is refused with 415; readiness answers 400 for
false, as KServe's protocol says. The routes are matched by regular expressions, not a web
framework, so a request costs what uvicorn, the JSON codec and the prediction cost. Each
answer is counted and timed under its route's template (shared.http_metrics)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format

from inference import grpc_predict_v2_pb2 as v2
from services.inference import triton_converters as triton
from services.inference.catalog import VersionState
from services.inference.controls import Controls
from services.inference.kserve_converters import field_renamer, tensor_metadata, version_pin
from services.inference.kserve_servicer import EXTENSIONS, platform_of
from services.inference.pipeline import Pipeline, Prediction
from services.inference.rest import kserve_json, tfserving_json
from shared import http_metrics
from shared.auth import Authenticator
from shared.errors import DomainError, InvalidArgument, invalid
from shared.http_codes import HTTP_STATUS, retry_after
from shared.rest_routes import route_of
from shared.serving_names import SERVER_NAME, SERVER_VERSION, VERSION_HEADER

log = logging.getLogger(__name__)

JSON = b"application/json"
BINARY = b"application/octet-stream"
# Content types a body may declare: JSON ones, and what curl and Triton's clients send.
READABLE_TYPES = (b"application/json", b"application/x-www-form-urlencoded", b"text/plain", BINARY)
# Past the limit, a body is still read (and dropped) up to this much more, so the client
# gets its 413 rather than a reset connection; beyond, the connection is closed.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


REQUEST_ID_HEADER = b"x-request-id"


def _answer_headers(prediction: Prediction) -> tuple[tuple[bytes, bytes], ...]:
    """The version that answered, and the request id feedback names the prediction by."""
    return (
        (VERSION_HEADER.lower().encode(), str(prediction.version).encode()),
        (REQUEST_ID_HEADER, prediction.request_id.encode()),
    )


def _request_id(call: Call, given: str = "") -> str:
    """The request id in the body, else the `x-request-id` header (Envoy sets one)."""
    return given or call.headers.get(REQUEST_ID_HEADER, b"").decode("latin-1")


def json_reply(document: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY))


def error_reply(status: int, message: str) -> Reply:
    return json_reply({"error": message}, status)


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Call:
    params: dict[str, str]
    headers: dict[bytes, bytes]
    body: bytes


Handler = Callable[[Call], Awaitable[Reply]]


class RestApi:
    def __init__(
        self, pipeline: Pipeline, max_body_bytes: int, authenticator: Authenticator | None = None
    ) -> None:
        self._pipeline = pipeline
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
        handler = getattr(self, route.handler)
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

    # --- KServe v2 --------------------------------------------------------------------------

    async def server_metadata(self, call: Call) -> Reply:
        return json_reply(
            {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}
        )

    async def live(self, call: Call) -> Reply:
        return json_reply({"live": True})

    async def ready(self, call: Call) -> Reply:
        ready = self._pipeline.ready() and self._pipeline.catalog().ready()
        return json_reply({"ready": ready}, 200 if ready else 400)

    def _pin(self, call: Call) -> tuple[int, str]:
        return version_pin(call.params.get("version") or "", "version")

    async def model_ready(self, call: Call) -> Reply:
        name = call.params["model"]
        ready = False
        if self._pipeline.ready():
            catalog = self._pipeline.catalog()
            ready = catalog.knows(name) and catalog.model(name).ready(*self._pin(call))
        return json_reply({"name": name, "ready": ready}, 200 if ready else 400)

    async def model_metadata(self, call: Call) -> Reply:
        name = call.params["model"]
        catalog = self._pipeline.catalog()
        target = catalog.resolve(name, *self._pin(call))
        assert target.signature is not None  # routable versions are loaded
        versions = catalog.model(name).versions
        return json_reply(
            {
                "name": name,
                "versions": [
                    str(n) for n, v in sorted(versions.items()) if v.state is VersionState.AVAILABLE
                ],
                "platform": platform_of(target.runtime),
                "inputs": [_message(tensor_metadata(s)) for s in target.signature.inputs],
                "outputs": [_message(tensor_metadata(s)) for s in target.signature.outputs],
            }
        )

    async def model_config(self, call: Call) -> Reply:
        name = call.params["model"]
        catalog = self._pipeline.catalog()
        target = catalog.resolve(name, *self._pin(call))
        config = triton.model_config(catalog.model(name), target, platform_of(target.runtime))
        return json_reply(_message(config))

    async def model_stats(self, call: Call) -> Reply:
        name = call.params.get("model", "")
        version, label = self._pin(call)
        if label:
            version = self._pipeline.catalog().resolve(name, 0, label).version
        statistics = await self._pipeline.control(Controls.statistics, name, version)
        answer = v2.ModelStatisticsResponse(
            model_stats=[triton.model_statistics(s) for s in statistics]
        )
        return json_reply(_message(answer))

    async def infer(self, call: Call) -> Reply:
        header, binary = _split_binary(call)
        request = kserve_json.parse_infer(header, binary)
        version, label = version_pin(call.params.get("version") or "", "model_version")
        try:
            prediction = await self._pipeline.predict(
                call.params["model"],
                request.inputs,
                version=version,
                label=label,
                output_filter=request.outputs,
                request_id=_request_id(call, request.id),
            )
        except InvalidArgument as error:
            raise error.renamed(field_renamer(request.indexes)) from None
        body, header_length = kserve_json.infer_response(prediction, request)
        if header_length == len(body):
            return Reply(200, body, headers=_answer_headers(prediction))
        return Reply(
            200,
            body,
            BINARY,
            (
                (kserve_json.HEADER_LENGTH.encode(), str(header_length).encode()),
                *_answer_headers(prediction),
            ),
        )

    # --- TF Serving -------------------------------------------------------------------------

    def _tf_pin(self, call: Call) -> tuple[int, str]:
        version = call.params.get("version")
        if version is not None and int(version) < 1:
            raise invalid("version", "versions start at 1")
        return int(version or 0), call.params.get("label") or ""

    async def tf_status(self, call: Call) -> Reply:
        name = call.params["model"]
        catalog = self._pipeline.catalog()
        version, label = self._tf_pin(call)
        pinned = catalog.resolve(name, version, label) if version or label else None
        return json_reply(tfserving_json.model_status(catalog.model(name), pinned))

    async def tf_metadata(self, call: Call) -> Reply:
        name = call.params["model"]
        target = self._pipeline.catalog().resolve(name, *self._tf_pin(call))
        return json_reply(tfserving_json.metadata(name, target))

    async def tf_predict(self, call: Call) -> Reply:
        name = call.params["model"]
        version, label = self._tf_pin(call)
        target = self._pipeline.catalog().resolve(name, version, label)
        inputs, rows = tfserving_json.predict_inputs(call.body, target)
        prediction = await self._pipeline.predict(
            name, inputs, version=version, label=label, request_id=_request_id(call)
        )
        body = tfserving_json.predict_answer(prediction, rows)
        return Reply(200, body, headers=_answer_headers(prediction))

    async def tf_unimplemented(self, call: Call) -> Reply:
        return error_reply(501, f"{call.params['verb']} is not served: only :predict is")


# 64-bit integer fields of the messages answered as JSON: protobuf's JSON mapping writes
# them as strings, Triton's HTTP API as numbers.
INT64_FIELDS = {
    "shape",
    "dims",
    "versions",
    "max_queue_delay_microseconds",
    "default_timeout_microseconds",
    "priority_levels",
    "default_priority_level",
    "last_inference",
    "inference_count",
    "execution_count",
    "count",
    "ns",
    "batch_size",
}


def _numbers(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _numbers(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(item, key) for item in value]
    if isinstance(value, str) and key in INT64_FIELDS:
        return int(value)
    return value


def _message(message: Any) -> dict[str, Any]:
    document = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(document)


def _readable(content_type: bytes) -> bool:
    return content_type in READABLE_TYPES or content_type.endswith(b"+json")


def _split_binary(call: Call) -> tuple[bytes, memoryview | None]:
    """The JSON part of an infer body, and the binary part when the header says there is
    one."""
    declared = call.headers.get(kserve_json.HEADER_LENGTH.encode())
    if declared is None:
        return call.body, None
    if not declared.isdigit() or int(declared) > len(call.body):
        raise invalid(
            "Inference-Header-Content-Length",
            f"must be a byte count within the body ({len(call.body)} bytes), got "
            f"{declared.decode(errors='replace')!r}",
        )
    length = int(declared)
    return call.body[:length], memoryview(call.body)[length:]
