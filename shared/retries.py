"""Retries for idempotent gRPC calls: exponential backoff with jitter, bounded by a deadline.

Only calls that are safe to repeat go through `retry_idempotent`; it retries on codes
that say "try again" (UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED) and never past the
caller's overall deadline, handing each attempt the time that is left."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

T = TypeVar("T")

TRANSIENT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
)


def is_transient(error: BaseException) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() in TRANSIENT_CODES  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0


DEFAULT_POLICY = RetryPolicy()


async def retry_idempotent(
    attempt: Callable[[float], Awaitable[T]],
    *,
    deadline_s: float,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> T:
    """Run `attempt(timeout_s)` until it succeeds, fails for good, or the deadline passes.

    `attempt` receives the seconds left before the overall deadline and should pass them
    as the gRPC call's timeout, so no attempt outlives the caller's budget."""
    deadline = time.monotonic() + deadline_s
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_random_exponential(multiplier=policy.initial_backoff_s, max=policy.max_backoff_s),
        stop=stop_after_attempt(policy.max_attempts) | stop_before_delay(deadline_s),
        reraise=True,
    )
    async for try_ in retrying:
        with try_:
            return await attempt(max(deadline - time.monotonic(), 0.001))
    raise AssertionError("unreachable: tenacity re-raises the last error")
