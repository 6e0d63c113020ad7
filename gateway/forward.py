"""The data-plane paths (`/v2/...`, `/v1/models/...`) passed straight to the inference
service's own REST port, unparsed.

The inference front ends serve KServe v2 and TF Serving REST themselves. This ASGI
middleware sits in front of the gateway's web framework and, for those paths only, checks
the bearer token (when one is configured; KServe's health paths are open), reads the body
up to the gateway's limit (413 past it), sends the request's bytes (the path as the client
sent it, percent-encoding kept) over aiohttp's keep-alive connection pool, and streams
the answer back with its status and the headers its clients read: content type and
Triton's binary header. Error bodies are the front ends' own, `{"error": "..."}`; the
gateway's refusals and a REST port that does not answer (503) take the same shape. Trace
context goes along in `traceparent`. Everything else goes on to the framework."""

from __future__ import annotations

import ssl

import aiohttp
import orjson
import yarl
from opentelemetry.propagate import inject
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import bearer_matches
from shared.serving_names import VERSION_HEADER

OPEN_PREFIXES = ("/v2/health/",)
# Past the limit a body is still read (and dropped) up to this much more, so the client
# gets its 413 rather than a reset connection; beyond, the connection is closed.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
# Seconds an idle pooled connection to a front end is kept.
POOL_IDLE_S = 30
# The caller's credentials go on too: the inference service authorizes the caller itself.
REQUEST_HEADERS = (
    b"content-type",
    b"accept",
    b"inference-header-content-length",
    b"authorization",
    b"x-request-id",
)
ANSWER_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Inference-Header-Content-Length",
    VERSION_HEADER,
    "X-Request-Id",
)


def is_data_plane(path: str) -> bool:
    return path == "/v2" or path.startswith(("/v2/", "/v1/models/"))


class DataPlaneForwarder:
    def __init__(self, app: ASGIApp, api_token: str, max_body_bytes: int) -> None:
        self.app = app
        self._token = api_token
        self._limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_data_plane(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        guarded = self._token and not scope["path"].startswith(OPEN_PREFIXES)
        if guarded and not bearer_matches(headers.get(b"authorization", b""), self._token):
            await _answer(send, 401, "missing or wrong bearer token", www_authenticate=True)
            return
        body = await _read_body(receive, self._limit)
        if body is None:
            await _answer(send, 413, f"request body over {self._limit} bytes")
            return
        query = scope["query_string"]
        target = scope.get("raw_path") or scope["path"].encode()
        target += b"?" + query if query else b""
        if any(byte <= 0x20 or byte >= 0x7F for byte in target):
            await _answer(send, 400, "the path must be printable ASCII (percent-encode the rest)")
            return
        outgoing = {
            name.decode(): headers[name].decode("latin-1")
            for name in REQUEST_HEADERS
            if name in headers
        }
        inject(outgoing)
        # The application's backends (Starlette puts the application in the scope).
        backends = scope["app"].state.backends
        session: aiohttp.ClientSession = backends.inference_http
        url = yarl.URL(backends.inference_http_base + target.decode(), encoded=True)
        started = False
        try:
            async with session.request(scope["method"], url, data=body, headers=outgoing) as answer:
                start = [
                    (name.lower().encode(), answer.headers[name].encode())
                    for name in ANSWER_HEADERS
                    if name in answer.headers
                ]
                status = answer.status
                await send({"type": "http.response.start", "status": status, "headers": start})
                started = True
                async for chunk in answer.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (aiohttp.ClientError, TimeoutError) as error:
            if not started:
                message = f"the inference service's REST port is not answering: {error!r}"
                await _answer(send, 503, message)
                return
        # Also after an answer cut short: the client sees a body that ends early.
        await send({"type": "http.response.body", "body": b""})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None when it is larger than `limit`."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body", False) or size > limit + DRAIN_LIMIT_BYTES:
            return b"".join(chunks) if size <= limit else None


async def _answer(send: Send, status: int, message: str, www_authenticate: bool = False) -> None:
    body = orjson.dumps({"error": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if www_authenticate:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def inference_session(timeout_s: float, tls: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    """A session whose connections to the inference service's REST port stay open, idle
    for less time than the front ends keep them (services.inference.rest.serve.KEEP_ALIVE_S),
    so the gateway never reuses a connection the server is closing; over TLS with `tls`."""
    connector = aiohttp.TCPConnector(
        limit=256, keepalive_timeout=POOL_IDLE_S, ssl=tls if tls is not None else True
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        auto_decompress=False,
    )
