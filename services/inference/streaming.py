"""Bidirectional prediction streams: many requests in flight on one call, each answered
as soon as it completes, every answer carrying its request's id.

`answer_stream` reads requests while fewer than `max_in_flight` of them are unanswered,
so a client that stops reading its answers soon stops being read (gRPC flow control
then holds it back) and the server's memory stays bounded. Each request is answered
concurrently through the same path as a unary call (and so the same batcher); a request
that fails gets an error answer and the stream goes on. When the client half-closes,
the stream ends after the last answer; when the call ends early, every request still
running is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

Request = TypeVar("Request")
Answer = TypeVar("Answer")


async def answer_stream(
    requests: AsyncIterator[Request],
    answer: Callable[[Request], Awaitable[Answer]],
    error_answer: Callable[[Request, Exception], Answer],
    max_in_flight: int,
) -> AsyncIterator[Answer]:
    """Answers to `requests`, in completion order; `answer` turns one request into its
    answer (or raises), `error_answer` turns a failure into the answer the client gets."""
    answers: asyncio.Queue[Answer | _End] = asyncio.Queue()
    slots = asyncio.Semaphore(max_in_flight)
    running: set[asyncio.Task[None]] = set()

    async def answer_one(request: Request) -> None:
        try:
            result = await answer(request)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - one failed request must not end the stream
            result = error_answer(request, error)
        answers.put_nowait(result)

    async def read() -> None:
        try:
            async for request in requests:
                await slots.acquire()
                task = asyncio.create_task(answer_one(request))
                running.add(task)
                task.add_done_callback(running.discard)
            while running:
                await asyncio.gather(*running)
        except Exception as error:  # noqa: BLE001 - handed to the writer, which re-raises it
            answers.put_nowait(_End(error))
        else:
            answers.put_nowait(_End(None))

    reader = asyncio.create_task(read())
    try:
        while not isinstance(item := await answers.get(), _End):
            yield item
            slots.release()
        if item.error is not None:
            raise item.error
    finally:
        for task in [reader, *running]:
            task.cancel()
        await asyncio.gather(reader, *running, return_exceptions=True)


@dataclass(frozen=True)
class _End:
    """The last item of the answer queue: the stream ended, by `error` if there was one."""

    error: Exception | None
