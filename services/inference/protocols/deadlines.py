"""A gRPC call's deadline as the pipeline takes it: a `time.monotonic()` instant."""

from __future__ import annotations

import time

import grpc


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as a `time.monotonic()` instant, or None without one."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining
