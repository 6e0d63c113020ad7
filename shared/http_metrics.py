"""Prometheus metrics of HTTP requests: the usual `http_requests_total` and
`http_request_duration_seconds` pair, labelled by route template, method and status code.

The route template (`/api/v1/models/{model}`), never the raw path, is the `handler` label,
so a client cannot grow the series without bound. `HttpMetrics` is an ASGI middleware for
the gateway (the template comes from the route Starlette matched); the inference REST
server, which routes by itself, calls `record` with its own templates."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Histogram

from shared.metric_children import child

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered.", ["handler", "method", "code"]
)
HTTP_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Time from a request's arrival to its answer's last byte.",
    ["handler", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UNMATCHED = "unmatched"


def record(handler: str, method: str, status: int, started: float) -> None:
    """Count one answered request that arrived at `started` (time.perf_counter())."""
    child(HTTP_REQUESTS, handler, method, str(status)).inc()
    child(HTTP_SECONDS, handler, method).observe(time.perf_counter() - started)


def route_template(scope: dict[str, Any]) -> str:
    """The path template of the route Starlette matched, or UNMATCHED."""
    route = scope.get("route")
    return getattr(route, "path", UNMATCHED)


class HttpMetrics:
    """Counts and times every HTTP request; `handler_of(scope)` names its route once the
    application has answered (routing has filled the scope by then)."""

    def __init__(self, app: Any, handler_of: Callable[[dict[str, Any]], str]) -> None:
        self.app = app
        self.handler_of = handler_of

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # A request whose handler fails before answering is a 500 to its client.
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            record(self.handler_of(scope), scope["method"], status, started)
