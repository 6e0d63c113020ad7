"""The data-plane paths (`/v2/...`, `/v1/models/...`) forwarded to the inference service's
own REST port, unparsed.

The inference front ends serve KServe v2 and TF Serving REST themselves; the gateway only
checks the caller (its auth middleware and body limit ran already), passes the request's
bytes on over a keep-alive connection pool, and streams the answer back with its status
and the headers its clients read (content type, Triton's binary header). The error bodies
are the front ends' own (`{"error": "..."}`); when no front end answers, the gateway says
so in the same shape with 503. Trace context goes along in `traceparent`."""

from __future__ import annotations

import httpx
from opentelemetry.propagate import inject
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.jsonio import OrjsonResponse

REQUEST_HEADERS = ("content-type", "accept", "inference-header-content-length")
ANSWER_HEADERS = ("content-type", "content-length", "inference-header-content-length")


def inference_client(address: str, timeout_s: float) -> httpx.AsyncClient:
    """A client whose connections to the inference service's REST port stay open."""
    return httpx.AsyncClient(
        base_url=f"http://{address}",
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
    )


async def forward(request: Request) -> Response:
    client: httpx.AsyncClient = request.app.state.backends.http
    headers = {name: request.headers[name] for name in REQUEST_HEADERS if name in request.headers}
    inject(headers)
    # The path as the client sent it (still percent-encoded), query included.
    target = request.scope["raw_path"]
    if request.scope.get("query_string"):
        target += b"?" + request.scope["query_string"]
    try:
        upstream_request = client.build_request(
            request.method,
            client.base_url.copy_with(raw_path=target),
            content=await request.body(),
            headers=headers,
        )
    except httpx.InvalidURL as error:
        return OrjsonResponse({"error": f"the path cannot be forwarded: {error}"}, 400)
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.TransportError as error:
        return OrjsonResponse(
            {"error": f"the inference service's REST port is not answering: {error!r}"}, 503
        )
    return StreamingResponse(
        upstream.aiter_raw(),
        status_code=upstream.status_code,
        headers={
            name: upstream.headers[name] for name in ANSWER_HEADERS if name in upstream.headers
        },
        background=BackgroundTask(upstream.aclose),
    )
