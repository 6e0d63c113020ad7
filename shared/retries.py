"""Retries of gRPC calls that are safe to repeat: exponential backoff with jitter, the
server's own RetryInfo delay honoured, bounded by the caller's deadline.

Whether a call is safe to repeat is its proto's word (shared.rpc_methods): a peer channel
(`RetryingChannel`, which shared.channels.peer_channel returns) retries the unary calls
of methods declared NO_SIDE_EFFECTS or IDEMPOTENT, and calls every other method once.
Callers with a compound attempt (a stream read whole, a download checked by its digest)
wrap it in `retry_idempotent` themselves. Only UNAVAILABLE and ABORTED are retried:
RESOURCE_EXHAUSTED is an overloaded server's answer, which goes back to the caller with
its RetryInfo rather than coming back sooner. Each retry waits at least as long as the
failed attempt's RetryInfo asks, and never past the caller's deadline; each attempt is
given the time that is left."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from shared.rpc_methods import retryable

T = TypeVar("T")

TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def is_transient(error: BaseException) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() in TRANSIENT_CODES  # type: ignore[attr-defined]


def retry_delay(error: BaseException | None) -> float:
    """The seconds a failed call's RetryInfo asks the client to wait (0 without one)."""
    if not isinstance(error, grpc.RpcError) or not hasattr(error, "trailing_metadata"):
        return 0.0
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info.retry_delay.ToTimedelta().total_seconds()
    return 0.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0


DEFAULT_POLICY = RetryPolicy()


async def retry_idempotent(
    attempt: Callable[[float | None], Awaitable[T]],
    *,
    deadline_s: float | None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> T:
    """Run `attempt(timeout_s)` until it succeeds, fails for good, or the deadline passes.

    `attempt` receives the seconds left before the overall deadline (None without one)
    and should pass them as the gRPC call's timeout, so no attempt outlives the caller's
    budget."""
    backoff = wait_random_exponential(multiplier=policy.initial_backoff_s, max=policy.max_backoff_s)

    def wait(state: RetryCallState) -> float:
        failed = state.outcome.exception() if state.outcome else None
        return max(backoff(state), retry_delay(failed))

    stop: stop_base = stop_after_attempt(policy.max_attempts)
    deadline = None
    if deadline_s is not None:
        deadline = time.monotonic() + deadline_s
        stop = stop | stop_before_delay(deadline_s)
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient), wait=wait, stop=stop, reraise=True
    )
    async for try_ in retrying:
        with try_:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            return await attempt(left)
    raise AssertionError("unreachable: tenacity re-raises the last error")


class RetryingChannel:
    """A channel (or anything with a channel's four call factories) whose unary calls are
    retried where their method is declared safe to repeat. Each attempt is a new call on
    the channel underneath, so a balancing channel picks an instance per attempt."""

    def __init__(self, channel: Any, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self._channel = channel
        self._policy = policy

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        multicallable = self._channel.unary_unary(method, *args, **kwargs)
        if not retryable(method):
            return multicallable
        return _RetriedUnaryUnary(multicallable, self._policy)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    async def __aenter__(self) -> RetryingChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._channel.close()


class _RetriedUnaryUnary:
    def __init__(self, multicallable: Any, policy: RetryPolicy) -> None:
        self._multicallable = multicallable
        self._policy = policy

    def __call__(self, request: Any, *, timeout: float | None = None, **kwargs: Any) -> Any:
        return retry_idempotent(
            lambda left: self._multicallable(request, timeout=left, **kwargs),
            deadline_s=timeout,
            policy=self._policy,
        )
