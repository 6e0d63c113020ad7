"""Prometheus metrics of the inference service: batching, queues and answers by code.

Queue and compute times, batch sizes and padding are observed by each version's batcher;
requests by status code by the core. Labels are the model and version, so a dashboard
can compare a canary with production."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
)
REQUESTS = Counter(
    "tfmesh_inference_requests_total",
    "Prediction requests answered, by model, version (0 when none was chosen) and code.",
    ["model", "version", "code"],
)


UNKNOWN_MODEL_LABEL = "unknown"


def count_request(model: str, known: bool, version: int, code: str) -> None:
    """Count one answered request; names of unknown models share one label value, so a
    client cannot grow the series without bound."""
    REQUESTS.labels(model if known else UNKNOWN_MODEL_LABEL, str(version), code).inc()


class BatcherMetrics:
    """The metric children of one model version, bound once so the hot path skips lookups."""

    def __init__(self, model: str, version: int) -> None:
        labels = (model, str(version))
        self.queue_seconds = QUEUE_SECONDS.labels(*labels)
        self.compute_seconds = COMPUTE_SECONDS.labels(*labels)
        self.batch_rows = BATCH_ROWS.labels(*labels)
        self.padding_rows = PADDING_ROWS.labels(*labels)
        self.queued_rows = QUEUED_ROWS.labels(*labels)
