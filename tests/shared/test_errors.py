"""Domain errors through the shared interceptor on a real server: each becomes its gRPC code
with typed `google.rpc.Status` details, a full disk RESOURCE_EXHAUSTED, anything else
INTERNAL without leaking its message, for unary and server-streaming handlers, and the
server keeps serving."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc
import pytest
import sqlalchemy.exc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from shared.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    invalid,
)
from shared.http_codes import retry_after
from shared.server import RunningServer
from tests.shared.conftest import StartServer
from tests.support.probe import (
    PROBE_SERVICE,
    SERVING,
    Request,
    Response,
    call_status,
    register_probe,
    streaming_method,
    unary_method,
)

SECRET = "password=hunter2"
Detail = TypeVar("Detail", bound=Message)


def raise_on_request(request: Request) -> None:
    """The error each test asks for, chosen by the request's `service` field."""
    if request.service == "invalid":
        raise InvalidArgument(
            [FieldViolation("model.name", "must not be empty"), FieldViolation("page_size", "< 0")]
        )
    if request.service == "not-found":
        raise NotFound("model", "iris")
    if request.service == "exists":
        raise AlreadyExists("dataset", "iris@abc")
    if request.service == "precondition":
        raise FailedPrecondition("version 3 is not a candidate")
    if request.service == "exhausted":
        raise ResourceExhausted("queue full", retry_after_s=0.25)
    if request.service == "unavailable":
        raise Unavailable("warming up")
    if request.service == "data-loss":
        raise DataLoss("blob abc is corrupt")
    if request.service == "long-name":
        raise NotFound("model", "n" * 3000, "name")
    if request.service == "not-implemented":
        raise NotImplementedError("Method not implemented!")
    if request.service == "bug":
        raise ValueError(f"connect failed with {SECRET}")
    if request.service == "disk-full":
        raise OSError(errno.ENOSPC, "No space left on device", "/data/spool/upload-1")
    if request.service == "database-away":
        # What SQLAlchemy raises when PostgreSQL restarts under a query.
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionError(SECRET))


async def fail_unary(request: Request, context: grpc.aio.ServicerContext) -> Response:
    raise_on_request(request)
    return Response(status=SERVING)


async def fail_streaming(
    request: Request, context: grpc.aio.ServicerContext
) -> AsyncIterator[Response]:
    yield Response(status=SERVING)
    raise_on_request(request)
    yield Response(status=SERVING)


async def fail_writing(request: Request, context: grpc.aio.ServicerContext) -> None:
    """A streaming handler in the other style grpc.aio allows: a coroutine that writes."""
    await context.write(Response(status=SERVING))
    raise_on_request(request)
    await context.write(Response(status=SERVING))


@pytest.fixture
async def probe(serve: StartServer) -> RunningServer:
    register = register_probe(
        unary={"Fail": fail_unary},
        streaming={"FailStream": fail_streaming, "FailWriting": fail_writing},
    )
    return await serve(register, [PROBE_SERVICE])


async def unary_failure(
    server: RunningServer, what: str
) -> tuple[grpc.StatusCode, str, status_pb2.Status | None]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = unary_method(channel, "Fail")(Request(service=what), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        return raised.value.code(), raised.value.details() or "", await call_status(call)


async def streaming_failure(
    server: RunningServer, what: str, method: str = "FailStream"
) -> tuple[int, grpc.StatusCode, str, status_pb2.Status | None]:
    """Messages received before the failure, and the failure itself."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = streaming_method(channel, method)(Request(service=what), timeout=5)
        received = 0
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                received += 1
        return received, raised.value.code(), raised.value.details() or "", await call_status(call)


def unpack(status: status_pb2.Status | None, message_type: type[Detail]) -> Detail:
    assert status is not None, "no grpc-status-details-bin trailer"
    assert len(status.details) == 1
    detail = message_type()
    assert status.details[0].Unpack(detail)
    return detail


async def assert_still_serving(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def handled_count(method: str, code: str) -> float:
    kind = "server_stream" if method.endswith("Stream") else "unary"
    labels = {
        "grpc_type": kind,
        "grpc_service": PROBE_SERVICE,
        "grpc_method": method,
        "grpc_code": code,
    }
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


async def test_invalid_argument_carries_field_violations(probe: RunningServer) -> None:
    code, details, status = await unary_failure(probe, "invalid")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "model.name: must not be empty; page_size: < 0"
    bad_request = unpack(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("model.name", "must not be empty"),
        ("page_size", "< 0"),
    ]
    await assert_still_serving(probe)


async def test_not_found_and_already_exists_carry_resource_info(probe: RunningServer) -> None:
    code, _, status = await unary_failure(probe, "not-found")
    assert code == grpc.StatusCode.NOT_FOUND
    info = unpack(status, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("model", "iris")
    assert info.description == "model 'iris' not found"

    code, _, status = await unary_failure(probe, "exists")
    assert code == grpc.StatusCode.ALREADY_EXISTS
    info = unpack(status, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("dataset", "iris@abc")


async def test_caller_text_is_cut_so_the_status_reaches_the_client(probe: RunningServer) -> None:
    code, details, status = await unary_failure(probe, "long-name")
    assert code == grpc.StatusCode.NOT_FOUND
    assert details.endswith("(2744 more characters)' not found")
    assert status is not None and len(status.SerializeToString()) < 4096
    info = error_details_pb2.ResourceInfo()
    assert status.details[0].Unpack(info)
    assert info.resource_name == "n" * 256 + "... (2744 more characters)"


async def test_a_method_left_out_is_unimplemented_not_internal(probe: RunningServer) -> None:
    code, _, _ = await unary_failure(probe, "not-implemented")
    assert code == grpc.StatusCode.UNIMPLEMENTED
    await assert_still_serving(probe)


async def test_retry_info_and_plain_codes(probe: RunningServer) -> None:
    code, details, status = await unary_failure(probe, "exhausted")
    assert (code, details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
    retry = unpack(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToMilliseconds() == 250

    code, details, status = await unary_failure(probe, "unavailable")
    assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "warming up")
    assert status is not None and list(status.details) == []

    code, details, _ = await unary_failure(probe, "precondition")
    assert (code, details) == (grpc.StatusCode.FAILED_PRECONDITION, "version 3 is not a candidate")
    code, _, _ = await unary_failure(probe, "data-loss")
    assert code == grpc.StatusCode.DATA_LOSS


async def test_a_database_that_does_not_answer_is_unavailable_not_internal(
    probe: RunningServer,
) -> None:
    code, details, _ = await unary_failure(probe, "database-away")
    assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "the database is not available now")
    await assert_still_serving(probe)


async def test_a_full_disk_is_resource_exhausted_not_internal(probe: RunningServer) -> None:
    code, details, _ = await unary_failure(probe, "disk-full")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == "no space left on the service's disk"
    await assert_still_serving(probe)


async def test_unexpected_exception_is_internal_without_its_message(
    probe: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    code, details, status = await unary_failure(probe, "bug")
    assert code == grpc.StatusCode.INTERNAL
    assert details == "internal error: ValueError"
    assert status is None or SECRET not in status.SerializeToString().decode(errors="replace")
    # The message is logged for the operator, with the traceback.
    logged = [r for r in caplog.records if r.exc_info and SECRET in str(r.exc_info[1])]
    assert logged, "the unhandled error was not logged"
    await assert_still_serving(probe)


async def test_streaming_handler_errors_map_the_same_way(probe: RunningServer) -> None:
    received, code, _, status = await streaming_failure(probe, "invalid")
    assert (received, code) == (1, grpc.StatusCode.INVALID_ARGUMENT)
    bad_request = unpack(status, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["model.name", "page_size"]

    received, code, _, status = await streaming_failure(probe, "not-found")
    assert (received, code) == (1, grpc.StatusCode.NOT_FOUND)
    assert unpack(status, error_details_pb2.ResourceInfo).resource_name == "iris"

    received, code, details, _ = await streaming_failure(probe, "bug")
    assert (received, code) == (1, grpc.StatusCode.INTERNAL)
    assert SECRET not in details
    await assert_still_serving(probe)


async def test_writing_stream_handler_errors_map_the_same_way(probe: RunningServer) -> None:
    received, code, _, status = await streaming_failure(probe, "not-found", "FailWriting")
    assert (received, code) == (1, grpc.StatusCode.NOT_FOUND)
    assert unpack(status, error_details_pb2.ResourceInfo).resource_type == "model"

    received, code, details, _ = await streaming_failure(probe, "bug", "FailWriting")
    assert (received, code) == (1, grpc.StatusCode.INTERNAL)
    assert SECRET not in details
    await assert_still_serving(probe)


@pytest.mark.parametrize("method", ["FailStream", "FailWriting"])
async def test_streaming_handler_that_succeeds_sends_everything(
    probe: RunningServer, method: str
) -> None:
    async with grpc.aio.insecure_channel(probe.address) as channel:
        call = streaming_method(channel, method)(Request(service="fine"), timeout=5)
        answers = [answer.status async for answer in call]
        assert await call.code() == grpc.StatusCode.OK
    assert answers == [SERVING, SERVING]


async def test_handled_counter_counts_each_code(probe: RunningServer) -> None:
    before = {
        ("Fail", "INVALID_ARGUMENT"): handled_count("Fail", "INVALID_ARGUMENT"),
        ("Fail", "INTERNAL"): handled_count("Fail", "INTERNAL"),
        ("Fail", "OK"): handled_count("Fail", "OK"),
        ("FailStream", "NOT_FOUND"): handled_count("FailStream", "NOT_FOUND"),
    }
    await unary_failure(probe, "invalid")
    await unary_failure(probe, "invalid")
    await unary_failure(probe, "bug")
    await streaming_failure(probe, "not-found")
    async with grpc.aio.insecure_channel(probe.address) as channel:
        await unary_method(channel, "Fail")(Request(service="fine"), timeout=5)
    after = {key: handled_count(*key) for key in before}
    assert {key: after[key] - before[key] for key in before} == {
        ("Fail", "INVALID_ARGUMENT"): 2,
        ("Fail", "INTERNAL"): 1,
        ("Fail", "OK"): 1,
        ("FailStream", "NOT_FOUND"): 1,
    }


def test_invalid_helper_builds_one_violation() -> None:
    error = invalid("tensor.shape", "dimensions must be >= 0")
    assert error.violations == [FieldViolation("tensor.shape", "dimensions must be >= 0")]
    status = error.to_status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message == "tensor.shape: dimensions must be >= 0"


@pytest.mark.parametrize("method", ["Fail", "FailStream"])
async def test_undecodable_request_bytes_are_invalid_argument(
    probe: RunningServer, method: str
) -> None:
    """Bytes that are not the method's request message are the caller's mistake; gRPC
    alone would answer UNKNOWN naming a Python exception."""
    async with grpc.aio.insecure_channel(probe.address) as channel:
        path = f"/{PROBE_SERVICE}/{method}"
        if method == "Fail":
            call = channel.unary_unary(path)(b"\xff\xff\xff not a message", timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
        else:
            call = channel.unary_stream(path)(b"\xff\xff\xff not a message", timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for _ in call:
                    pass
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        violation = unpack(await call_status(call), error_details_pb2.BadRequest)
        assert violation.field_violations[0].field == "request"
        assert "do not parse" in violation.field_violations[0].description
    await assert_still_serving(probe)


def test_retry_after_is_whole_seconds_and_at_least_one():
    assert retry_after(0.05) == {"Retry-After": "1"}
    assert retry_after(2.2) == {"Retry-After": "3"}
    assert retry_after(None) == retry_after(0) == {}
