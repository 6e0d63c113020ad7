"""The stream helper behind PredictStream and ModelStreamInfer, without sockets: answers in
completion order, a failed request answered as an error while the stream goes on, a
reader held back when answers are not taken, and cleanup when the call ends early."""

from __future__ import annotations

import asyncio

import pytest

from services.inference.streaming import answer_stream


async def requests_of(items, pulled: list | None = None):
    for item in items:
        if pulled is not None:
            pulled.append(item)
        yield item


async def slow_echo(delay: float) -> str:
    await asyncio.sleep(delay)
    if delay < 0:
        raise ValueError("negative")
    return f"done {delay}"


def error_answer(request, error) -> str:
    return f"failed {request}: {error}"


async def collect(stream) -> list:
    return [item async for item in stream]


async def test_answers_come_in_completion_order():
    answers = await collect(
        answer_stream(requests_of([0.05, 0.01, 0.03]), slow_echo, error_answer, 16)
    )
    assert answers == ["done 0.01", "done 0.03", "done 0.05"]


async def test_a_failed_request_is_answered_and_the_stream_goes_on():
    async def answer(delay: float) -> str:
        if delay < 0:
            raise ValueError("negative")
        return await slow_echo(delay)

    answers = await collect(answer_stream(requests_of([0.02, -1, 0.04]), answer, error_answer, 4))
    assert answers == ["failed -1: negative", "done 0.02", "done 0.04"]


async def test_unread_answers_stop_the_reading():
    pulled: list[int] = []
    stream = answer_stream(requests_of(range(1000), pulled), asyncio.sleep, error_answer, 4)
    first = await anext(stream)
    await asyncio.sleep(0.1)
    # One answer was taken (its slot freed), then nobody reads: the reader holds at most
    # max_in_flight unanswered requests, plus the one it waits to find a slot for.
    assert first is None
    assert len(pulled) <= 4 + 1 + 1
    await stream.aclose()


async def test_a_failing_request_stream_ends_the_call_with_its_error():
    async def broken():
        yield 0.0
        raise OSError("the client sent garbage")

    with pytest.raises(OSError, match="garbage"):
        await collect(answer_stream(broken(), slow_echo, error_answer, 4))


async def test_ending_the_call_early_cancels_running_requests():
    started: list[asyncio.Task] = []

    async def forever(_: int) -> str:
        started.append(asyncio.current_task())
        await asyncio.sleep(3600)
        return "never"

    stream = answer_stream(requests_of(range(3)), forever, error_answer, 8)
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await stream.aclose()
    assert len(started) == 3
    assert all(task.done() for task in started)
