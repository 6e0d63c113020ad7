"""Status codes to HTTP status codes: Google's canonical mapping (google/rpc/code.proto),
used wherever a failure leaves tfmesh over HTTP (the gateway, the inference service's REST
front ends), and the `Retry-After` header of a failure that says when to come back."""

from __future__ import annotations

import math

from shared.errors import Code

HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.UNAUTHENTICATED: 401,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
}


def retry_after(seconds: float | None) -> dict[str, str]:
    """The `Retry-After` header that asks an HTTP client to wait `seconds` (HTTP counts
    whole seconds: at least 1), or no header when the server asked for no wait."""
    if not seconds or seconds <= 0:
        return {}
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
