"""The gateway's FastAPI application: routes, request limits, auth and error mapping.

`create_app` wires the platform's `/api/v1` routers, and the forwarding of TF Serving's
`/v1/models` and KServe v2's `/v2` to the inference service's REST port, to a
`Backends` object, so tests drive the app through an ASGI client against real servers.
Every failure is a JSON body: gRPC errors and the gateway's own domain errors map to HTTP
codes (gateway.errors), malformed JSON and schema errors are 400, an oversized body 413,
a missing or wrong bearer token 401. The OpenAPI document at `/openapi.json` carries the
schemas of the protobuf messages routes answer, and of the forwarded bodies. Every request
is counted and timed by route template (shared.http_metrics), and its caller's
`Authorization` goes on with every call made for it, so the services authorize the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.access_log import AccessLog
from gateway.auth import bearer_matches
from gateway.backends import FORWARDED_AUTHORIZATION, Backends
from gateway.console import mount_console
from gateway.errors import (
    document_errors,
    domain_error_response,
    error_body,
    rpc_error_response,
    validation_error_response,
)
from gateway.forward import DataPlaneForwarder, is_data_plane
from gateway.jsonio import OrjsonResponse
from gateway.routes import data, inference, registry, rollouts, training
from gateway.schemas import add_model_schemas, add_proto_schemas
from gateway.serving_docs import add_serving_routes
from gateway.settings import GatewaySettings
from shared.errors import DomainError
from shared.http_codes import retry_after
from shared.http_metrics import HttpMetrics, route_template
from shared.retries import retry_delay
from shared.telemetry import Telemetry

# The console's pages (`/ui` and below) are public; the API calls they make carry the
# user's token.
OPEN_PATHS = ("/openapi.json", "/docs", "/healthz", "/v2/health/", "/ui/")
CONSOLE = "/ui"


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether or not they say their size."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = OrjsonResponse(
            error_body(413, "PAYLOAD_TOO_LARGE", f"request body over {self.limit} bytes"), 413
        )
        await response({"type": "http"}, _no_body, send)


class _BodyTooLarge(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the forwarded data-plane APIs (documented from the route
    table the inference service serves, not mounted), and the schemas of the protobuf
    messages the routes name and of the error bodies."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        document = add_serving_routes(document)
        app.openapi_schema = document_errors(add_model_schemas(add_proto_schemas(document)))
    return app.openapi_schema


def create_app(
    settings: GatewaySettings, backends: Backends, telemetry: Telemetry | None = None
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.backends.close()

    app = FastAPI(
        title="tfmesh gateway",
        version="1.0.0",
        description="REST/JSON in front of tfmesh's data, training, registry and inference "
        "services, plus TF Serving's and KServe v2's REST APIs.",
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
    )
    app.state.backends = backends

    _answer_errors_as_json(app)
    if settings.api_token:

        @app.middleware("http")
        async def _require_token(request: Request, call_next):  # type: ignore[no-untyped-def]
            path = request.url.path
            if path != CONSOLE and not path.startswith(OPEN_PATHS):
                given = request.headers.get("authorization", "").encode()
                if not bearer_matches(given, settings.api_token):
                    return OrjsonResponse(
                        error_body(401, "UNAUTHENTICATED", "missing or wrong bearer token"),
                        401,
                        headers={"WWW-Authenticate": "Bearer"},
                    )
            return await call_next(request)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for routes in (registry, rollouts, data, training, inference):
        app.include_router(routes.router)
    mount_console(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if telemetry is not None:
        FastAPIInstrumentor.instrument_app(app, tracer_provider=telemetry.tracer_provider)
    # Outermost: the data-plane paths never reach the framework (see gateway.forward).
    app.add_middleware(
        DataPlaneForwarder, api_token=settings.api_token, max_body_bytes=settings.max_body_bytes
    )
    app.add_middleware(HttpMetrics, handler_of=_handler)
    app.add_middleware(AccessLog)
    app.add_middleware(ForwardAuthorization)
    return app


def _answer_errors_as_json(app: FastAPI) -> None:
    """Every failure as the gateway's JSON error body, with the HTTP status of its code."""

    @app.exception_handler(grpc.RpcError)
    async def _rpc_error(_: Request, error: grpc.RpcError) -> OrjsonResponse:
        status, body = rpc_error_response(error)
        return OrjsonResponse(body, status, headers=retry_after(retry_delay(error)))

    @app.exception_handler(DomainError)
    async def _domain(_: Request, error: DomainError) -> OrjsonResponse:
        status, body = domain_error_response(error)
        wait = retry_after(getattr(error, "retry_after_s", None))
        return OrjsonResponse(body, status, headers=wait)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> OrjsonResponse:
        status, body = validation_error_response(error)
        return OrjsonResponse(body, status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> OrjsonResponse:
        return OrjsonResponse(
            error_body(error.status_code, "HTTP_ERROR", str(error.detail)), error.status_code
        )


class ForwardAuthorization:
    """The caller's `Authorization` header goes on to the services with every call made
    for its request (gateway.backends), so they check the caller's own permissions."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            value = dict(scope["headers"]).get(b"authorization", b"")
            FORWARDED_AUTHORIZATION.set(value.decode("latin-1"))
        await self.app(scope, receive, send)


def _handler(scope: dict[str, Any]) -> str:
    """The `handler` label of a request: its route's template; forwarded data-plane
    requests by API, since the inference service's own metrics name their routes."""
    path = scope["path"]
    if is_data_plane(path):
        return "/v1/models/{forwarded}" if path.startswith("/v1/") else "/v2/{forwarded}"
    return route_template(scope)
