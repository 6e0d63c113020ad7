"""Reading the `google.rpc.Status` a failed gRPC call carries, as tests assert on it."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def violation_list(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The BadRequest field violations of a failed call, in order, as (field, description)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no google.rpc.Status details on {error.code()}"  # type: ignore[attr-defined]
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found += [(v.field, v.description) for v in bad_request.field_violations]
    return found


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    """The same violations by field."""
    return dict(violation_list(error))


async def expect_error(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    """Await `call`, which must fail with `code`; the error, for more assertions."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value
