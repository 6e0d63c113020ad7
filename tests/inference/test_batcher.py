"""Unit tests of the batcher: no sockets, a model that is a plain function recording batches."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.inference.batcher import (
    Batcher,
    BatchingOptions,
    BatchShapeError,
    powers_of_two_up_to,
)
from shared.errors import DeadlineExceeded, ResourceExhausted, Unavailable


class RecordingModel:
    """Doubles its input; records every batch; can be held mid-batch by a gate."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[np.ndarray] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        if not hold:
            self.gate.set()

    def __call__(self, inputs):
        self.entered.set()
        self.batches.append(inputs["x"].copy())
        self.gate.wait(10)
        return {"y": inputs["x"] * 2}

    def seen(self) -> set[float]:
        return {float(v) for batch in self.batches for v in batch[:, 0]}


def rows_of(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[v, v] for v in values], dtype=np.float32)}


async def wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


async def test_timeout_flushes_a_partial_batch_after_batch_timeout():
    model = RecordingModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=8, batch_timeout_micros=80_000))
    started = time.monotonic()
    result = await batcher.submit(rows_of(1, 2, 3), 3)
    waited = time.monotonic() - started
    assert 0.07 <= waited < 1.0
    assert [len(b) for b in model.batches] == [3]
    np.testing.assert_array_equal(result["y"][:, 0], [2, 4, 6])
    await batcher.close()


async def test_a_full_batch_runs_without_waiting_for_the_timeout():
    model = RecordingModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=4, batch_timeout_micros=10_000_000))
    started = time.monotonic()
    futures = [batcher.submit(rows_of(i), 1) for i in range(4)]
    results = await asyncio.gather(*futures)
    assert time.monotonic() - started < 1.0
    assert [len(b) for b in model.batches] == [4]
    assert [float(r["y"][0, 0]) for r in results] == [0, 2, 4, 6]
    await batcher.close()


async def test_pads_to_the_next_allowed_size_with_the_first_row_and_returns_real_rows_only():
    model = RecordingModel()
    options = BatchingOptions(max_batch_size=8, allowed_batch_sizes=(1, 2, 4, 8))
    batcher = Batcher(model, options)
    result = await batcher.submit(rows_of(5, 6, 7), 3)
    assert model.batches[0][:, 0].tolist() == [5, 6, 7, 5]
    assert result["y"][:, 0].tolist() == [10, 12, 14]
    await batcher.close()


async def test_rows_of_many_requests_run_together_and_split_back_in_order():
    model = RecordingModel(hold=True)
    batcher = Batcher(model, BatchingOptions(max_batch_size=16))
    first = batcher.submit(rows_of(0), 1)
    await asyncio.to_thread(model.entered.wait, 5)
    # While the first batch computes, three requests of 1, 2 and 3 rows gather.
    later = [batcher.submit(rows_of(1), 1), batcher.submit(rows_of(2, 3), 2)]
    later.append(batcher.submit(rows_of(4, 5, 6), 3))
    model.gate.set()
    await first
    results = await asyncio.gather(*later)
    assert [len(b) for b in model.batches] == [1, 6]
    assert [r["y"][:, 0].tolist() for r in results] == [[2], [4, 6], [8, 10, 12]]
    await batcher.close()


async def test_a_model_error_fans_out_to_every_request_of_the_batch():
    failure = RuntimeError("kernel exploded")

    def broken(inputs):
        raise failure

    batcher = Batcher(broken, BatchingOptions(max_batch_size=4, batch_timeout_micros=50_000))
    futures = [batcher.submit(rows_of(i), 1) for i in range(3)]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert outcomes == [failure, failure, failure]
    await batcher.close()


async def test_a_model_that_drops_rows_fails_the_batch_instead_of_misrouting_answers():
    batcher = Batcher(
        lambda inputs: {"y": inputs["x"][:-1]},
        BatchingOptions(max_batch_size=4, batch_timeout_micros=50_000),
    )
    outcomes = await asyncio.gather(
        batcher.submit(rows_of(1), 1), batcher.submit(rows_of(2), 1), return_exceptions=True
    )
    assert all(isinstance(o, BatchShapeError) for o in outcomes)
    await batcher.close()


async def test_a_full_queue_refuses_at_once_with_resource_exhausted():
    model = RecordingModel(hold=True)
    options = BatchingOptions(max_batch_size=2, max_enqueued_batches=1)
    batcher = Batcher(model, options)
    running = batcher.submit(rows_of(0), 1)
    await asyncio.to_thread(model.entered.wait, 5)
    queued = [batcher.submit(rows_of(1), 1), batcher.submit(rows_of(2), 1)]
    started = time.perf_counter()
    with pytest.raises(ResourceExhausted) as refused:
        batcher.submit(rows_of(3), 1)
    assert time.perf_counter() - started < 0.010
    assert refused.value.retry_after_s is not None
    model.gate.set()
    await asyncio.gather(running, *queued)
    assert 3.0 not in model.seen()
    await batcher.close()


async def test_a_request_whose_deadline_passed_in_the_queue_is_never_computed():
    model = RecordingModel(hold=True)
    batcher = Batcher(model, BatchingOptions(max_batch_size=4))
    running = batcher.submit(rows_of(0), 1)
    await asyncio.to_thread(model.entered.wait, 5)
    late = batcher.submit(rows_of(99), 1, deadline=time.monotonic() + 0.001)
    on_time = batcher.submit(rows_of(1), 1, deadline=time.monotonic() + 30)
    await asyncio.sleep(0.01)
    model.gate.set()
    with pytest.raises(DeadlineExceeded):
        await late
    await asyncio.gather(running, on_time)
    assert model.seen() == {0.0, 1.0}
    await batcher.close()


async def test_a_cancelled_request_is_dropped_before_compute():
    model = RecordingModel(hold=True)
    batcher = Batcher(model, BatchingOptions(max_batch_size=4))
    running = batcher.submit(rows_of(0), 1)
    await asyncio.to_thread(model.entered.wait, 5)

    async def caller():
        return await batcher.submit(rows_of(42), 1)

    abandoned = asyncio.create_task(caller())
    await asyncio.sleep(0.01)
    abandoned.cancel()
    kept = batcher.submit(rows_of(1), 1)
    model.gate.set()
    await asyncio.gather(running, kept)
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    assert model.seen() == {0.0, 1.0}
    await batcher.close()


async def test_the_event_loop_keeps_running_while_a_batch_computes():
    def slow(inputs):
        time.sleep(0.3)
        return {"y": inputs["x"]}

    batcher = Batcher(slow, BatchingOptions(max_batch_size=4))
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    counting = asyncio.create_task(ticker())
    await batcher.submit(rows_of(1), 1)
    counting.cancel()
    assert ticks >= 10
    await batcher.close()


async def test_worker_threads_run_batches_concurrently():
    model = RecordingModel(hold=True)
    batcher = Batcher(model, BatchingOptions(max_batch_size=1, num_batch_threads=3))
    futures = [batcher.submit(rows_of(i), 1) for i in range(3)]
    await wait_until(lambda: len(model.batches) == 3)
    model.gate.set()
    await asyncio.gather(*futures)
    await batcher.close()


async def test_close_finishes_queued_requests_then_refuses_new_ones():
    model = RecordingModel(hold=True)
    batcher = Batcher(model, BatchingOptions(max_batch_size=1))
    futures = [batcher.submit(rows_of(i), 1) for i in range(3)]
    await asyncio.to_thread(model.entered.wait, 5)
    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0.01)
    with pytest.raises(Unavailable):
        batcher.submit(rows_of(9), 1)
    model.gate.set()
    await closing
    assert [float(r["y"][0, 0]) for r in await asyncio.gather(*futures)] == [0, 2, 4]


async def test_batch_span_links_to_the_span_of_every_request_it_served():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    model = RecordingModel()
    batcher = Batcher(
        model, BatchingOptions(max_batch_size=2, batch_timeout_micros=1_000_000), tracer=tracer
    )

    async def request(value: float):
        with tracer.start_as_current_span("request") as span:
            await batcher.submit(rows_of(value), 1)
            return span.get_span_context().span_id

    request_ids = set(await asyncio.gather(request(1), request(2)))
    await batcher.close()
    (batch_span,) = [s for s in exporter.get_finished_spans() if s.name == "inference.batch"]
    assert {link.context.span_id for link in batch_span.links} == request_ids
    assert batch_span.attributes["batch.rows"] == 2


@pytest.mark.parametrize(
    "arguments, problem",
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"batch_timeout_micros": -1}, "batch_timeout_micros"),
        ({"num_batch_threads": 0}, "num_batch_threads"),
        ({"max_enqueued_batches": 0}, "max_enqueued_batches"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (4, 2, 8)}, "strictly increasing"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (2, 4)}, "must equal max_batch_size"),
    ],
)
def test_options_are_checked_when_built(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        BatchingOptions(**arguments)


def test_padded_sizes_and_warmup_sizes():
    options = BatchingOptions(max_batch_size=12, allowed_batch_sizes=powers_of_two_up_to(12))
    assert options.allowed_batch_sizes == (1, 2, 4, 8, 12)
    assert [options.padded_size(n) for n in (1, 3, 5, 9, 12)] == [1, 4, 8, 12, 12]
    assert options.warmup_sizes() == (1, 2, 4, 8, 12)
    assert BatchingOptions(max_batch_size=6).warmup_sizes() == (1, 6)
    assert BatchingOptions(max_batch_size=6).padded_size(5) == 5


async def test_submit_refuses_more_rows_than_a_batch_holds():
    batcher = Batcher(RecordingModel(), BatchingOptions(max_batch_size=2))
    with pytest.raises(ValueError):
        batcher.submit(rows_of(1, 2, 3), 3)
    await batcher.close()


async def test_a_lone_caller_after_lone_callers_is_not_held_for_the_timeout():
    """Batching on costs nothing when there is nothing to batch: once a wait showed that
    requests come one at a time, the next one runs at once; a burst still waits to fill."""
    model = RecordingModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=8, batch_timeout_micros=300_000))
    started = time.monotonic()
    await batcher.submit(rows_of(1), 1)
    assert time.monotonic() - started >= 0.25  # no history yet: the first waits
    for value in range(5):
        started = time.monotonic()
        await batcher.submit(rows_of(value), 1)
        assert time.monotonic() - started < 0.2
    # Bursts of 4: then the batcher expects 4, and waits for late ones of a burst (within
    # the timeout) instead of running the early ones alone.
    for _ in range(3):
        await asyncio.gather(*(batcher.submit(rows_of(i), 1) for i in range(4)))
    early = [batcher.submit(rows_of(i), 1) for i in range(2)]
    await asyncio.sleep(0.05)
    late = [batcher.submit(rows_of(i), 1) for i in range(2)]
    started = time.monotonic()
    await asyncio.gather(*early, *late)
    assert time.monotonic() - started < 0.2
    assert len(model.batches[-1]) == 4
    await batcher.close()


async def test_a_snapshot_shows_what_waits_behind_a_running_batch():
    model = RecordingModel(hold=True)
    batcher = Batcher(model, BatchingOptions(max_batch_size=2, max_enqueued_batches=4))
    idle = batcher.snapshot()
    assert (idle.requests, idle.rows, idle.capacity_rows, idle.running_batches) == (0, 0, 8, 0)
    assert idle.oldest_wait_s == 0.0
    first = batcher.submit(rows_of(1), 1)
    await asyncio.to_thread(model.entered.wait, 5)
    waiting = [batcher.submit(rows_of(2, 3), 2), batcher.submit(rows_of(4), 1)]
    await asyncio.sleep(0.05)
    busy = batcher.snapshot()
    assert (busy.requests, busy.rows, busy.running_batches) == (2, 3, 1)
    assert 0.05 <= busy.oldest_wait_s < 5
    model.gate.set()
    await asyncio.gather(first, *waiting)
    await batcher.close()
    assert batcher.snapshot().requests == 0
