"""The JSON error body every failure of the gateway gets, with the HTTP status of its gRPC
code (`shared.http_codes`). The body follows Google's JSON error shape,
`{"error": {"code", "status", "message", "details"}}`, with the gRPC status details
(field violations, resource info) carried over. The TF Serving and KServe v2 paths are
forwarded to the inference service (gateway.forward), which answers their failures in the
shape those APIs' clients expect, `{"error": "<message>"}`; the OpenAPI document describes
both shapes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from fastapi.exceptions import RequestValidationError
from google.protobuf import any_pb2, json_format
from grpc_status import rpc_status

from shared.errors import Code, DomainError
from shared.http_codes import HTTP_STATUS


def error_body(http_status: int, status: str, message: str, details: list[Any] | None = None):
    return {
        "error": {
            "code": http_status,
            "status": status,
            "message": message,
            "details": details or [],
        }
    }


def _status_response(
    code: Code, message: str, details: Iterable[any_pb2.Any]
) -> tuple[int, dict[str, Any]]:
    http_status = HTTP_STATUS.get(code, 500)
    converted = [json_format.MessageToDict(detail) for detail in details]
    return http_status, error_body(http_status, code.name, message or code.name, converted)


def rpc_error_response(error: grpc.RpcError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for a failed gRPC call (asyncio or blocking)."""
    call: Any = error
    try:
        status = rpc_status.from_call(call)
    except ValueError:  # trailers that disagree with the status: keep the status alone
        status = None
    details = status.details if status is not None else []
    return _status_response(Code(call.code().value[0]), call.details() or "", details)


def domain_error_response(error: DomainError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for a problem the gateway found itself."""
    return _status_response(error.code, error.message, error.details())


def validation_violations(error: RequestValidationError) -> list[dict[str, str]]:
    """FastAPI's request validation errors as BadRequest field violations."""
    return [
        {"field": ".".join(str(p) for p in item["loc"]), "description": item["msg"]}
        for item in error.errors()
    ]


def validation_error_response(error: RequestValidationError) -> tuple[int, dict[str, Any]]:
    violations = validation_violations(error)
    bad_request = "type.googleapis.com/google.rpc.BadRequest"
    details = [{"@type": bad_request, "fieldViolations": violations}]
    message = "; ".join(f"{v['field']}: {v['description']}" for v in violations)
    return 400, error_body(400, "INVALID_ARGUMENT", message, details)


GOOGLE_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message", "details"],
            "properties": {
                "code": {"type": "integer", "description": "The HTTP status"},
                "status": {"type": "string", "description": "The gRPC code's name"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}
PLAIN_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
PLAIN_PATHS = ("/v1/", "/v2")


def document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Describe the gateway's error answers in an OpenAPI document: every operation may
    fail with its API's error body (`default`), and request validation fails with 400
    (FastAPI's own 422 entries are replaced)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = GOOGLE_ERROR_SCHEMA
    schemas["PlainError"] = PLAIN_ERROR_SCHEMA
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    google = {"$ref": "#/components/schemas/Error"}
    plain = {"anyOf": [{"$ref": "#/components/schemas/PlainError"}, google]}
    for path, operations in document.get("paths", {}).items():
        schema = plain if path.startswith(PLAIN_PATHS) else google
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = {
                "description": "The request failed; the body says why",
                "content": {"application/json": {"schema": schema}},
            }
    return document
