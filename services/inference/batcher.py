"""Dynamic batching for one loaded model version, with TF Serving's parameters and meanings.

Callers `submit` a request (a dict of arrays whose first dimension is its row count) and
await the future it returns. A gathering task forms a batch once a worker thread is free
and either enough rows wait or `batch_timeout_micros` have passed since the oldest
waiting request arrived; rows keep queueing while a batch computes, so under load the
next batch is ready when the thread frees up. "Enough" is as many rows as recent batches
had (a moving average, capped at `max_batch_size`): under steady load the batcher waits
for the callers it just answered to come back, so batches stay full, while a lone caller
is never held for the timeout with nothing to batch it with. A batch is padded (by repeating its
first row) to the next of `allowed_batch_sizes`, so a compiled function is reused, runs
in one forward pass on a worker thread (the event loop is not held), and its outputs
are split back per request, after a check that the model returned a row for every row it
was given; an exception fans out to every request of the batch. A model so fast that a
batch of that size recently computed in under `INLINE_BELOW_S` runs on the loop's own
thread instead, which costs less than the two thread hand-offs. The queue is bounded at
`max_enqueued_batches` full batches: past that, `submit` raises ResourceExhausted at once.
Requests whose deadline passed or whose caller gave up are dropped before compute."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace

from services.inference.metrics import BatcherMetrics
from services.inference.statistics import BatchTiming, VersionStatistics
from shared.errors import DeadlineExceeded, ResourceExhausted, Unavailable

Arrays = dict[str, np.ndarray]
PredictFn = Callable[[Arrays], Mapping[str, np.ndarray]]
# A batch whose forward pass took less than this (at its size, recently) runs on the
# event loop's thread: sending it to a worker thread and its answers back costs two thread
# wake-ups, more than such a batch computes. A size not seen yet always goes to a thread.
INLINE_BELOW_S = 0.0002


@dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's batching parameters; an empty `allowed_batch_sizes` means no padding."""

    max_batch_size: int = 64
    batch_timeout_micros: int = 0
    allowed_batch_sizes: tuple[int, ...] = ()
    num_batch_threads: int = 1
    max_enqueued_batches: int = 16

    def __post_init__(self) -> None:
        problems = []
        if self.max_batch_size < 1:
            problems.append("max_batch_size must be >= 1")
        if self.batch_timeout_micros < 0:
            problems.append("batch_timeout_micros must be >= 0")
        if self.num_batch_threads < 1:
            problems.append("num_batch_threads must be >= 1")
        if self.max_enqueued_batches < 1:
            problems.append("max_enqueued_batches must be >= 1")
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            if sizes[0] < 1 or any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
                problems.append("allowed_batch_sizes must be positive and strictly increasing")
            elif sizes[-1] != self.max_batch_size:
                problems.append(
                    f"the last of allowed_batch_sizes ({sizes[-1]}) must equal max_batch_size "
                    f"({self.max_batch_size})"
                )
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def max_queued_rows(self) -> int:
        return self.max_enqueued_batches * self.max_batch_size

    def padded_size(self, rows: int) -> int:
        """The batch size `rows` runs at: the next allowed size, or `rows` without padding."""
        sizes = self.allowed_batch_sizes
        if not sizes:
            return rows
        return sizes[bisect.bisect_left(sizes, rows)]

    def warmup_sizes(self) -> tuple[int, ...]:
        """Every batch size a batch can run at, or the two ends when any size can occur."""
        return self.allowed_batch_sizes or tuple(sorted({1, self.max_batch_size}))


def powers_of_two_up_to(max_batch_size: int) -> tuple[int, ...]:
    """1, 2, 4, ... below `max_batch_size`, then `max_batch_size` itself."""
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size]
    return (*sizes, max_batch_size)


class BatchShapeError(RuntimeError):
    """The model answered a batch with a different number of rows than it was given."""


@dataclass(frozen=True)
class QueueSnapshot:
    """What a batcher holds at one moment."""

    requests: int
    rows: int
    capacity_rows: int
    # Seconds the oldest queued request has waited (0 with none queued).
    oldest_wait_s: float
    # Batches computing on the worker threads.
    running_batches: int
    # The rows the batcher waits for (up to the timeout) before it runs a batch.
    expected_rows: int


@dataclass(eq=False)
class _Pending:
    inputs: Arrays
    rows: int
    future: asyncio.Future[Arrays]
    enqueued: float
    deadline: float | None
    span_context: trace.SpanContext | None


@dataclass
class _Queue:
    """FIFO of pending requests that knows how many rows it holds."""

    capacity_rows: int
    items: deque[_Pending] = field(default_factory=deque)
    rows: int = 0

    def push(self, pending: _Pending) -> bool:
        if self.rows + pending.rows > self.capacity_rows:
            return False
        self.items.append(pending)
        self.rows += pending.rows
        return True

    def _pop(self) -> _Pending:
        pending = self.items.popleft()
        self.rows -= pending.rows
        return pending

    def drop_dead(self, now: float) -> None:
        """Drop requests at the head whose caller left or whose deadline passed."""
        while self.items:
            head = self.items[0]
            if head.future.done():
                self._pop()
            elif head.deadline is not None and head.deadline <= now:
                self._pop().future.set_exception(
                    DeadlineExceeded("the deadline passed while the request was queued")
                )
            else:
                return

    def take(self, max_rows: int, now: float) -> list[_Pending]:
        """Live requests in arrival order whose rows add up to at most `max_rows`."""
        batch: list[_Pending] = []
        rows = 0
        while True:
            self.drop_dead(now)
            if not self.items or rows + self.items[0].rows > max_rows:
                return batch
            pending = self._pop()
            batch.append(pending)
            rows += pending.rows


class Batcher:
    """The batch queue and worker threads of one model version."""

    def __init__(
        self,
        predict: PredictFn,
        options: BatchingOptions,
        *,
        name: str = "model",
        metrics: BatcherMetrics | None = None,
        statistics: VersionStatistics | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._predict = predict
        self.options = options
        self.name = name
        self._metrics = metrics
        if metrics:
            metrics.capacity_rows.set(options.max_queued_rows)
        self._statistics = statistics
        self._tracer = tracer or trace.NoOpTracer()
        self._timeout_s = options.batch_timeout_micros / 1e6
        self._queue = _Queue(options.max_queued_rows)
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(options.num_batch_threads)
        self._executor = ThreadPoolExecutor(
            options.num_batch_threads, thread_name_prefix=f"batch-{name}"
        )
        self._running: set[asyncio.Future[None]] = set()
        # Recent forward-pass seconds by batch size (an exponential moving average).
        self._infer_s: dict[int, float] = {}
        # Rows of recent batches (a moving average), starting from a full batch.
        self._recent_rows = float(options.max_batch_size)
        self._closed = False
        self._gatherer = asyncio.create_task(self._gather_forever(), name=f"gather-{name}")

    @property
    def queued_rows(self) -> int:
        return self._queue.rows

    def snapshot(self) -> QueueSnapshot:
        items = self._queue.items
        return QueueSnapshot(
            requests=len(items),
            rows=self._queue.rows,
            capacity_rows=self.options.max_queued_rows,
            oldest_wait_s=time.monotonic() - items[0].enqueued if items else 0.0,
            running_batches=len(self._running),
            expected_rows=self._expected_rows(),
        )

    def submit(
        self,
        inputs: Arrays,
        rows: int,
        deadline: float | None = None,
        link: trace.SpanContext | None = None,
    ) -> asyncio.Future[Arrays]:
        """Queue a request of `rows` rows; `deadline` is a `time.monotonic()` instant. The
        batch span links to `link`, by default to the current span."""
        if self._closed:
            raise Unavailable(f"{self.name} is unloading", retry_after_s=0.1)
        if not 1 <= rows <= self.options.max_batch_size:
            raise ValueError(f"rows must be 1..{self.options.max_batch_size}, got {rows}")
        span = link or trace.get_current_span().get_span_context()
        pending = _Pending(
            inputs,
            rows,
            self._loop.create_future(),
            time.monotonic(),
            deadline,
            span if span.is_valid else None,
        )
        if not self._queue.push(pending):
            raise ResourceExhausted(
                f"the batch queue of {self.name} is full "
                f"({self.options.max_queued_rows} rows waiting)",
                retry_after_s=0.05,
            )
        if self._metrics:
            self._metrics.queued_rows.set(self._queue.rows)
        self._arrived.set()
        return pending.future

    async def close(self) -> None:
        """Refuse new requests, finish every queued and running one, stop the threads."""
        self._closed = True
        self._arrived.set()
        await self._gatherer
        if self._running:
            await asyncio.gather(*self._running)
        self._executor.shutdown(wait=True)

    async def _gather_forever(self) -> None:
        while True:
            await self._slots.acquire()
            batch = await self._next_batch()
            if not batch:
                self._slots.release()
                return
            size = self.options.padded_size(sum(p.rows for p in batch))
            if self._infer_s.get(size, INLINE_BELOW_S) < INLINE_BELOW_S:
                self._settle(batch, self._compute(batch, size))
                self._slots.release()
                # Let the loop take in more requests (and other batchers run) before the
                # next batch: an inline batch never leaves the loop on its own.
                await asyncio.sleep(0)
                continue
            running = self._loop.run_in_executor(self._executor, self._run, batch, size)
            self._running.add(running)
            running.add_done_callback(self._batch_done)

    def _batch_done(self, running: asyncio.Future[None]) -> None:
        self._running.discard(running)
        self._slots.release()

    async def _next_batch(self) -> list[_Pending]:
        """Wait for a full batch or the timeout; empty once closed and drained."""
        queue = self._queue
        while True:
            now = time.monotonic()
            queue.drop_dead(now)
            if not queue.items:
                if self._closed:
                    return []
                self._arrived.clear()
                await self._arrived.wait()
                continue
            wait_s = queue.items[0].enqueued + self._timeout_s - now
            if queue.rows >= self._expected_rows() or wait_s <= 0 or self._closed:
                timed_out = wait_s <= 0 and queue.rows < self._expected_rows()
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wait_s)
        batch = queue.take(self.options.max_batch_size, now)
        rows = sum(p.rows for p in batch)
        # Waiting out the timeout showed how many come: expect that many next time.
        self._recent_rows = rows if timed_out else 0.5 * self._recent_rows + 0.5 * rows
        if self._metrics:
            self._metrics.queued_rows.set(queue.rows)
            for pending in batch:
                self._metrics.queue_seconds.observe(now - pending.enqueued)
        if self._statistics:
            for pending in batch:
                self._statistics.record_queued(now - pending.enqueued)
        return batch

    def _expected_rows(self) -> int:
        """The rows to wait for (up to the timeout): as many as recent batches had, since
        those callers are likely on their way back, and no more than a full batch. A lone
        request after lone requests goes at once: there is nothing to batch it with."""
        return max(1, min(self.options.max_batch_size, math.ceil(self._recent_rows - 0.01)))

    def _run(self, batch: list[_Pending], size: int) -> None:
        """On a worker thread: compute the batch, then hand the outcome to the loop."""
        self._loop.call_soon_threadsafe(self._settle, batch, self._compute(batch, size))

    def _compute(self, batch: list[_Pending], size: int) -> _Computed | Exception:
        """One forward pass for the whole batch, padded to `size`."""
        started = time.perf_counter_ns()
        rows = sum(p.rows for p in batch)
        links = [trace.Link(p.span_context) for p in batch if p.span_context is not None]
        try:
            with self._tracer.start_as_current_span(
                "inference.batch",
                links=links,
                attributes={"batch.rows": rows, "batch.size": size, "batch.requests": len(batch)},
            ):
                assembled = _assemble(batch, size)
                computing = time.perf_counter_ns()
                outputs = self._predict(assembled)
                splitting = time.perf_counter_ns()
                results = _split(batch, outputs, size)
        except Exception as error:  # noqa: BLE001 - fanned out to every caller of the batch
            return error
        ended = time.perf_counter_ns()
        timing = BatchTiming(computing - started, splitting - computing, ended - splitting)
        return _Computed(results, size, rows, timing)

    def _settle(self, batch: list[_Pending], computed: _Computed | Exception) -> None:
        """On the loop: answer every request of the batch, and count."""
        if isinstance(computed, Exception):
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(computed)
            return
        timing = computed.timing
        infer_s = timing.infer_ns / 1e9
        previous = self._infer_s.get(computed.size)
        self._infer_s[computed.size] = (
            infer_s if previous is None else 0.8 * previous + 0.2 * infer_s
        )
        if self._statistics:
            self._statistics.record_batch(computed.size, computed.rows, len(batch), timing)
        if self._metrics:
            total_ns = timing.input_ns + timing.infer_ns + timing.output_ns
            self._metrics.compute_seconds.observe(total_ns / 1e9)
            self._metrics.batch_rows.observe(computed.rows)
            self._metrics.padding_rows.observe(computed.size - computed.rows)
        for pending, result in zip(batch, computed.results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)


@dataclass(frozen=True)
class _Computed:
    results: list[Arrays]
    size: int
    rows: int
    timing: BatchTiming


def _assemble(batch: list[_Pending], size: int) -> Arrays:
    """Concatenate the requests' rows per input and pad by repeating the first row."""
    rows = sum(p.rows for p in batch)
    assembled: Arrays = {}
    for name in batch[0].inputs:
        parts = [p.inputs[name] for p in batch]
        if size > rows:
            parts.append(np.repeat(parts[0][:1], size - rows, axis=0))
        assembled[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return assembled


def _split(batch: list[_Pending], outputs: Mapping[str, np.ndarray], size: int) -> list[Arrays]:
    for name, value in outputs.items():
        if np.ndim(value) == 0 or len(value) != size:
            raise BatchShapeError(
                f"output {name!r} has {np.shape(value)[:1] or 'no'} rows for a batch of {size}"
            )
    results = []
    offset = 0
    for pending in batch:
        end = offset + pending.rows
        results.append({name: value[offset:end] for name, value in outputs.items()})
        offset = end
    return results
