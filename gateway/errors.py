"""gRPC status codes to HTTP status codes, and the JSON error body every failure gets.

The mapping is Google's canonical one (google/rpc/code.proto); the body follows Google's
JSON error shape, `{"error": {"code", "status", "message", "details"}}`, with the gRPC
status details (field violations, resource info) carried over."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format
from grpc_status import rpc_status

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
STATUS_NAME = {http: code.name for code, http in reversed(list(HTTP_STATUS.items()))}


def error_body(http_status: int, status: str, message: str, details: list[Any] | None = None):
    return {
        "error": {
            "code": http_status,
            "status": status,
            "message": message,
            "details": details or [],
        }
    }


def rpc_error_response(error: grpc.aio.AioRpcError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for a failed gRPC call."""
    code = error.code()
    http_status = HTTP_STATUS.get(code, 500)
    details: list[Any] = []
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is not None:
        details = [json_format.MessageToDict(detail) for detail in status.details]
    return http_status, error_body(http_status, code.name, error.details() or code.name, details)
