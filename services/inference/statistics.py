"""Per-version counters of what a model version computed, in Triton's statistics terms.

Each loaded version keeps one `VersionStatistics`: rows computed (`inference_count`),
batches run (`execution_count`), requests answered and failed with their total time,
time in the batch queue, and per request the assembly, forward pass and split durations
of the batch it ran in, also broken down by batch size. The batcher records batches and
queue times, whoever owns a request's life (the core, or the model owner for a front
end) records its answer. For rollouts it also keeps the latency of each answered request
in fine logarithmic buckets (`LATENCY_BOUNDS_S`, so a p99 can be compared between
versions) and the requests the model itself failed (an exception in its forward pass, not
a caller's bad input or cancel). Every update happens on the event loop's thread, so no
lock is needed; `snapshot` hands out a copy, with the version's drift status and feedback
tally as of then."""

from __future__ import annotations

import bisect
import copy
import time
from dataclasses import dataclass, field

from services.inference.drift import DriftStatus
from services.inference.feedback import FeedbackTally

# Upper bounds of the latency buckets: 50 us to about 2 min, each 10 % above the last
# (the last bucket, past them, takes the rest).
LATENCY_BOUNDS_S: tuple[float, ...] = tuple(50e-6 * 1.1**i for i in range(155))


@dataclass
class Duration:
    """How many events, and the nanoseconds they took in total."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns * count


@dataclass
class BatchDurations:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(frozen=True)
class BatchTiming:
    """Nanoseconds one batch spent being assembled, computed and split."""

    input_ns: int
    infer_ns: int
    output_ns: int


@dataclass
class VersionStatistics:
    model: str
    version: int
    # Milliseconds since the epoch of the last answered request; 0 before the first.
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    # By batch size as run (padding included).
    batches: dict[int, BatchDurations] = field(default_factory=dict)
    # Rows waiting in the batch queue when the snapshot was taken.
    queued_rows: int = 0
    # The version's live-input drift when the snapshot was taken.
    drift: DriftStatus = field(default_factory=DriftStatus)
    # Answered requests by latency: index i counts those of at most LATENCY_BOUNDS_S[i]
    # (and above the bound before); one more bucket for the slower ones.
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_S) + 1))
    # Requests the model failed (its forward pass raised).
    model_errors: int = 0
    # What feedback said about the version when the snapshot was taken.
    feedback: FeedbackTally = field(default_factory=FeedbackTally)

    def record_queued(self, waited_s: float) -> None:
        self.queue.add(int(waited_s * 1e9))

    def record_batch(self, size: int, rows: int, requests: int, timing: BatchTiming) -> None:
        self.execution_count += 1
        self.inference_count += rows
        self.compute_input.add(timing.input_ns, requests)
        self.compute_infer.add(timing.infer_ns, requests)
        self.compute_output.add(timing.output_ns, requests)
        by_size = self.batches.setdefault(size, BatchDurations())
        by_size.compute_input.add(timing.input_ns)
        by_size.compute_infer.add(timing.infer_ns)
        by_size.compute_output.add(timing.output_ns)

    def record_answer(self, ok: bool, took_s: float) -> None:
        (self.success if ok else self.fail).add(int(took_s * 1e9))
        if ok:
            self.last_inference_ms = int(time.time() * 1000)
            self.latency_counts[bisect.bisect_left(LATENCY_BOUNDS_S, took_s)] += 1

    def record_timeout(self, took_s: float) -> None:
        """A request whose deadline passed after the version took it: it took at least
        this long, so it counts in the latency buckets (a slow version cannot hide)."""
        self.latency_counts[bisect.bisect_left(LATENCY_BOUNDS_S, took_s)] += 1

    def record_model_error(self) -> None:
        self.model_errors += 1

    def snapshot(
        self,
        queued_rows: int,
        drift: DriftStatus | None = None,
        feedback: FeedbackTally | None = None,
    ) -> VersionStatistics:
        taken = copy.deepcopy(self)
        taken.queued_rows = queued_rows
        taken.drift = drift or DriftStatus()
        taken.feedback = copy.copy(feedback) if feedback is not None else FeedbackTally()
        return taken
