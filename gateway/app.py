"""The gateway's FastAPI application: routes, request limits, auth and error mapping.

`create_app` wires the routers to a `Backends` object, so tests drive the app through an
ASGI client against real gRPC servers. Every failure is a JSON body: gRPC errors map to
HTTP codes (gateway.errors), malformed JSON and schema errors are 400, an oversized body
413, a missing or wrong bearer token 401."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.backends import Backends
from gateway.errors import error_body, rpc_error_response
from gateway.jsonio import OrjsonResponse
from gateway.routes import registry
from gateway.settings import GatewaySettings
from shared.telemetry import Telemetry

OPEN_PATHS = ("/openapi.json", "/docs", "/healthz", "/v2/health/")


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


def create_app(
    settings: GatewaySettings, backends: Backends, telemetry: Telemetry | None = None
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await backends.close()

    app = FastAPI(
        title="tfmesh gateway",
        version="1.0.0",
        description="REST/JSON in front of tfmesh's data, training, registry and inference "
        "services, plus TF Serving's and KServe v2's REST APIs.",
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
    )
    app.state.backends = backends

    @app.exception_handler(grpc.aio.AioRpcError)
    async def _rpc_error(_: Request, error: grpc.aio.AioRpcError) -> OrjsonResponse:
        status, body = rpc_error_response(error)
        return OrjsonResponse(body, status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> OrjsonResponse:
        violations = [
            {"field": ".".join(str(p) for p in item["loc"]), "description": item["msg"]}
            for item in error.errors()
        ]
        details = [
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}
        ]
        message = "; ".join(f"{v['field']}: {v['description']}" for v in violations)
        return OrjsonResponse(error_body(400, "INVALID_ARGUMENT", message, details), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> OrjsonResponse:
        return OrjsonResponse(
            error_body(error.status_code, "HTTP_ERROR", str(error.detail)), error.status_code
        )

    if settings.api_token:
        expected = f"Bearer {settings.api_token}".encode()

        @app.middleware("http")
        async def _require_token(request: Request, call_next):  # type: ignore[no-untyped-def]
            if not request.url.path.startswith(OPEN_PATHS):
                given = request.headers.get("authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    return OrjsonResponse(
                        error_body(401, "UNAUTHENTICATED", "missing or wrong bearer token"),
                        401,
                        headers={"WWW-Authenticate": "Bearer"},
                    )
            return await call_next(request)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(registry.router)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if telemetry is not None:
        FastAPIInstrumentor.instrument_app(app, tracer_provider=telemetry.tracer_provider)
    return app
