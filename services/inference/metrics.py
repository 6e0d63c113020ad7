"""Prometheus metrics of the inference service: answers, batching, queues, the versions it
serves and how traffic is split between them.

Queue and compute times, batch sizes and padding are observed by each version's batcher;
requests by status code and their latency by whichever process answered them (a front end,
or the in-process core); loads, unloads, alias moves and route weights by the model
manager. Labels are the model and version, so a dashboard can compare a canary with
production. With front ends the metrics live in prometheus_client's multiprocess files:
gauges the model owner alone sets say how the processes' values combine."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

from services.inference.feedback import FeedbackOutcome, PredictionLog
from shared.metric_children import child

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

QUEUE_SECONDS = Histogram(
    "tfmesh_inference_queue_seconds",
    "Time a request waited in its batch queue before its batch started.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
COMPUTE_SECONDS = Histogram(
    "tfmesh_inference_compute_seconds",
    "Time one batch took to assemble, run and split.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
BATCH_ROWS = Histogram(
    "tfmesh_inference_batch_rows",
    "Rows of real requests in a batch, before padding.",
    ["model", "version"],
    buckets=SIZE_BUCKETS,
)
PADDING_ROWS = Histogram(
    "tfmesh_inference_padding_rows",
    "Rows added to a batch to reach an allowed batch size.",
    ["model", "version"],
    buckets=(0, *SIZE_BUCKETS),
)
QUEUED_ROWS = Gauge(
    "tfmesh_inference_queued_rows",
    "Rows waiting in a version's batch queue.",
    ["model", "version"],
    multiprocess_mode="livesum",
)
QUEUE_CAPACITY_ROWS = Gauge(
    "tfmesh_inference_queue_capacity_rows",
    "Rows a version's batch queue takes before it refuses requests.",
    ["model", "version"],
    multiprocess_mode="livemax",
)
REQUESTS = Counter(
    "tfmesh_inference_requests_total",
    "Prediction requests answered, by model, version (0 when none was chosen) and code.",
    ["model", "version", "code"],
)
REQUEST_SECONDS = Histogram(
    "tfmesh_inference_request_duration_seconds",
    "Time from a prediction request's arrival in the service to its answer.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
MODEL_LOADS = Counter(
    "tfmesh_inference_model_loads_total",
    "Attempts to load a version, by outcome (loaded, failed).",
    ["model", "version", "outcome"],
)
MODEL_UNLOADS = Counter(
    "tfmesh_inference_model_unloads_total",
    "Versions unloaded (no served alias names them any more).",
    ["model", "version"],
)
ALIAS_SWAPS = Counter(
    "tfmesh_inference_alias_swaps_total",
    "Times an alias (production, canary) started routing to another version.",
    ["model", "alias"],
)
ROUTE_WEIGHT = Gauge(
    "tfmesh_inference_route_weight_ratio",
    "Share of a model's unpinned requests routed to a version (0 to 1).",
    ["model", "version"],
    multiprocess_mode="livemax",
)
DRIFT_SCORE = Gauge(
    "tfmesh_inference_drift_score",
    "How far a feature of a version's live inputs has drifted from its training data "
    "(statistic psi: population stability index; linf: L-infinity distance).",
    ["model", "version", "feature", "statistic"],
    multiprocess_mode="livemax",
)
DRIFT_SAMPLED_ROWS = Counter(
    "tfmesh_inference_drift_sampled_rows_total",
    "Rows of live inputs sampled for drift, by version.",
    ["model", "version"],
)
FEEDBACK = Counter(
    "tfmesh_inference_feedback_total",
    "Feedback items reported, by outcome: matched to a prediction, unknown (no such "
    "request id kept; version 0) or late (its prediction was older than the retention).",
    ["model", "version", "outcome"],
)
FEEDBACK_ROWS = Counter(
    "tfmesh_inference_feedback_rows_total",
    "Rows whose true value was reported, by whether the version predicted it (classifiers).",
    ["model", "version", "correct"],
)
LIVE_ACCURACY = Gauge(
    "tfmesh_inference_live_accuracy_ratio",
    "Share of a version's reported rows it predicted correctly, since it was loaded.",
    ["model", "version"],
    multiprocess_mode="livemax",
)
LIVE_ABS_ERROR = Gauge(
    "tfmesh_inference_live_mean_absolute_error",
    "Mean absolute error of a version's reported rows, since it was loaded.",
    ["model", "version"],
    multiprocess_mode="livemax",
)


UNKNOWN_MODEL_LABEL = "unknown"


def count_request(model: str, known: bool, version: int, code: str, started: float) -> None:
    """Count and time one answered request that arrived at `started` (perf_counter);
    names of unknown models share one label value, so a client cannot grow the series
    without bound."""
    labels = (model if known else UNKNOWN_MODEL_LABEL, str(version))
    child(REQUESTS, *labels, code).inc()
    child(REQUEST_SECONDS, *labels).observe(time.perf_counter() - started)


def record_routing(
    model: str, before: dict[str, int], after: dict[str, int], weights: dict[int, float]
) -> None:
    """After a routing table swap: count the aliases that moved, and set each version's
    share of traffic (0 for versions that no longer get any)."""
    for alias, version in after.items():
        if before.get(alias) != version:
            ALIAS_SWAPS.labels(model, alias).inc()
    for version in {*before.values(), *after.values()}:
        ROUTE_WEIGHT.labels(model, str(version)).set(weights.get(version, 0.0))


class BatcherMetrics:
    """The metric children of one model version, bound once so the hot path skips lookups."""

    def __init__(self, model: str, version: int) -> None:
        labels = (model, str(version))
        self.queue_seconds = QUEUE_SECONDS.labels(*labels)
        self.compute_seconds = COMPUTE_SECONDS.labels(*labels)
        self.batch_rows = BATCH_ROWS.labels(*labels)
        self.padding_rows = PADDING_ROWS.labels(*labels)
        self.queued_rows = QUEUED_ROWS.labels(*labels)
        self.capacity_rows = QUEUE_CAPACITY_ROWS.labels(*labels)


def count_feedback(model: str, outcome: FeedbackOutcome, log: PredictionLog) -> None:
    """After a report: count what it added to each version's tally, and set the live
    accuracy and mean absolute error of the versions it touched."""
    FEEDBACK.labels(model, "0", "unknown").inc(outcome.unknown)
    for version, added in outcome.added.items():
        labels = (model, str(version))
        FEEDBACK.labels(*labels, "matched").inc(added.requests)
        FEEDBACK.labels(*labels, "late").inc(added.late)
        FEEDBACK_ROWS.labels(*labels, "true").inc(added.correct_rows)
        FEEDBACK_ROWS.labels(*labels, "false").inc(added.rows - added.correct_rows)
        total = log.tally(version)
        if total.classified_rows:
            LIVE_ACCURACY.labels(*labels).set(total.correct_rows / total.classified_rows)
        if total.rows:
            LIVE_ABS_ERROR.labels(*labels).set(total.abs_error_sum / total.rows)
