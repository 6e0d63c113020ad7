"""`shared.retries` against a real server that fails on purpose: transient codes are
retried, others are not, and the overall deadline bounds every attempt; a peer channel
retries exactly the methods whose protos declare them safe to repeat, never on
RESOURCE_EXHAUSTED, and waits as long as the server's RetryInfo asks."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from shared.errors import DomainError, ResourceExhausted, Unavailable, invalid
from shared.retries import (
    RetryingChannel,
    RetryPolicy,
    is_transient,
    retry_delay,
    retry_idempotent,
)
from tests.shared.conftest import StartServer
from tests.support.probe import (
    PROBE_SERVICE,
    SERVING,
    Request,
    Response,
    register_probe,
    unary_method,
)
from tfmesh.registry.v1 import registry_pb2, registry_pb2_grpc

FAST = RetryPolicy(max_attempts=5, initial_backoff_s=0.01, max_backoff_s=0.05)


class Flaky:
    """Handlers that count their calls; `Flaky` fails UNAVAILABLE `failures` times first."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def flaky(self, request: Request, context: grpc.aio.ServicerContext) -> Response:
        self.calls += 1
        if self.calls <= self.failures:
            raise Unavailable(f"not yet ({self.calls})")
        return Response(status=SERVING)

    async def rejecting(self, request: Request, context: grpc.aio.ServicerContext) -> Response:
        self.calls += 1
        raise invalid("service", "never valid")

    async def hanging(self, request: Request, context: grpc.aio.ServicerContext) -> Response:
        self.calls += 1
        await asyncio.sleep(10)
        return Response(status=SERVING)


async def start(serve: StartServer, handlers: Flaky) -> grpc.aio.Channel:
    register = register_probe(
        unary={"Flaky": handlers.flaky, "Reject": handlers.rejecting, "Hang": handlers.hanging}
    )
    running = await serve(register, [PROBE_SERVICE])
    return grpc.aio.insecure_channel(running.address)


async def test_transient_failures_are_retried_until_success(serve: StartServer) -> None:
    handlers = Flaky(failures=2)
    async with await start(serve, handlers) as channel:
        method = unary_method(channel, "Flaky")
        answer = await retry_idempotent(
            lambda timeout_s: method(Request(), timeout=timeout_s), deadline_s=5, policy=FAST
        )
    assert answer.status == SERVING
    assert handlers.calls == 3


async def test_attempts_are_capped_by_the_policy(serve: StartServer) -> None:
    handlers = Flaky(failures=100)
    async with await start(serve, handlers) as channel:
        method = unary_method(channel, "Flaky")
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await retry_idempotent(
                lambda timeout_s: method(Request(), timeout=timeout_s), deadline_s=5, policy=FAST
            )
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert handlers.calls == FAST.max_attempts


async def test_invalid_argument_is_not_retried(serve: StartServer) -> None:
    handlers = Flaky(failures=0)
    async with await start(serve, handlers) as channel:
        method = unary_method(channel, "Reject")
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await retry_idempotent(
                lambda timeout_s: method(Request(), timeout=timeout_s), deadline_s=5, policy=FAST
            )
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert handlers.calls == 1


async def test_deadline_bounds_the_total_time_of_retries(serve: StartServer) -> None:
    handlers = Flaky(failures=10_000)
    many_attempts = RetryPolicy(max_attempts=10_000, initial_backoff_s=0.02, max_backoff_s=0.1)
    async with await start(serve, handlers) as channel:
        method = unary_method(channel, "Flaky")
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await retry_idempotent(
                lambda timeout_s: method(Request(), timeout=timeout_s),
                deadline_s=0.5,
                policy=many_attempts,
            )
        elapsed = time.monotonic() - started
    assert failed.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert 1 < handlers.calls < many_attempts.max_attempts
    assert elapsed < 3.0


async def test_each_attempt_gets_only_the_time_left(serve: StartServer) -> None:
    handlers = Flaky(failures=0)
    timeouts: list[float] = []
    async with await start(serve, handlers) as channel:
        method = unary_method(channel, "Hang")

        def attempt(timeout_s: float | None) -> grpc.aio.UnaryUnaryCall:
            timeouts.append(timeout_s)
            return method(Request(), timeout=timeout_s)

        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await retry_idempotent(attempt, deadline_s=0.4, policy=FAST)
        elapsed = time.monotonic() - started
    assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert handlers.calls == 1
    assert len(timeouts) == 1 and 0 < timeouts[0] <= 0.4
    assert elapsed < 3.0


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        # An overloaded server's answer: back to the caller, with its RetryInfo.
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False),
        (grpc.StatusCode.ABORTED, True),
        (grpc.StatusCode.INVALID_ARGUMENT, False),
        (grpc.StatusCode.DEADLINE_EXCEEDED, False),
        (grpc.StatusCode.INTERNAL, False),
        (grpc.StatusCode.NOT_FOUND, False),
    ],
)
def test_transient_codes(code: grpc.StatusCode, transient: bool) -> None:
    error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")
    assert is_transient(error) is transient


def test_other_exceptions_are_not_transient() -> None:
    assert not is_transient(ValueError("boom"))
    assert not is_transient(ConnectionError("refused"))


class Declared:
    """tfmesh methods (as their protos declare them) that fail with `error` `failures`
    times first, noting when each call came."""

    def __init__(self, failures: int, error: DomainError) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[float] = []

    async def answer(self, request: object, context: grpc.aio.ServicerContext) -> object:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise self.error
        return registry_pb2.GetModelResponse()

    def register(self, server: grpc.aio.Server) -> None:
        registry_methods = {
            # NO_SIDE_EFFECTS in its proto: retried.
            "GetModel": (registry_pb2.GetModelRequest, registry_pb2.GetModelResponse),
            # Declares no idempotency: called once.
            "CreateModel": (registry_pb2.CreateModelRequest, registry_pb2.GetModelResponse),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self.answer,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, (request, response) in registry_methods.items()
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("tfmesh.registry.v1.RegistryService", handlers),)
        )


async def declared_stub(
    serve: StartServer, handlers: Declared
) -> tuple[RetryingChannel, registry_pb2_grpc.RegistryServiceStub]:
    running = await serve(handlers.register, ["tfmesh.registry.v1.RegistryService"])
    channel = RetryingChannel(grpc.aio.insecure_channel(running.address), FAST)
    return channel, registry_pb2_grpc.RegistryServiceStub(channel)  # type: ignore[arg-type]


async def test_a_peer_channel_retries_a_method_its_proto_declares_safe(
    serve: StartServer,
) -> None:
    handlers = Declared(failures=2, error=Unavailable("not yet"))
    channel, stub = await declared_stub(serve, handlers)
    async with channel:
        await stub.GetModel(registry_pb2.GetModelRequest(name="m"), timeout=5)
    assert len(handlers.calls) == 3


async def test_a_peer_channel_calls_a_method_with_side_effects_once(serve: StartServer) -> None:
    handlers = Declared(failures=2, error=Unavailable("not yet"))
    channel, stub = await declared_stub(serve, handlers)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.CreateModel(registry_pb2.CreateModelRequest(name="m"), timeout=5)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(handlers.calls) == 1


async def test_resource_exhausted_is_never_retried(serve: StartServer) -> None:
    handlers = Declared(failures=2, error=ResourceExhausted("queue full", retry_after_s=0.05))
    channel, stub = await declared_stub(serve, handlers)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.GetModel(registry_pb2.GetModelRequest(name="m"), timeout=5)
    assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay(failed.value) == pytest.approx(0.05)
    assert len(handlers.calls) == 1


async def test_a_retry_waits_as_long_as_the_servers_retry_info_asks(serve: StartServer) -> None:
    # The policy's own backoff is at most 50 ms; the server asks for 400.
    handlers = Declared(failures=1, error=Unavailable("restarting", retry_after_s=0.4))
    channel, stub = await declared_stub(serve, handlers)
    async with channel:
        await stub.GetModel(registry_pb2.GetModelRequest(name="m"), timeout=5)
    first, second = handlers.calls
    assert second - first >= 0.4
