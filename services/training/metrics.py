"""Prometheus metrics of the training service: jobs by state, jobs that ended, epoch times,
dataset splits read by path.

Jobs by state are counted in the job store when Prometheus scrapes, so the figure is the
durable queue's own, across restarts and replicas sharing one database. Jobs that ended
and epoch wall times are counted by this process as they happen."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.training.jobs import JobState

JOBS_FINISHED = Counter(
    "tfmesh_training_jobs_finished_total",
    "Training jobs that ended, by final state.",
    ["state"],
)
EPOCH_SECONDS = Histogram(
    "tfmesh_training_epoch_seconds",
    "Wall time of one epoch of a job's final training, by the model the job registers.",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
SPLIT_READS = Counter(
    "tfmesh_training_dataset_split_reads_total",
    "Dataset splits loaded for training, by path: `files` read straight from the version's"
    " Parquet files, `service` streamed through the data service.",
    ["path"],
)
# The model label of a job that registers nothing.
UNREGISTERED = "none"


class JobsByState(Collector):
    """`tfmesh_training_jobs{state}`: jobs now in each state, read from the store."""

    def __init__(self, count_by_state: Callable[[], Mapping[JobState, int]]) -> None:
        self._count_by_state = count_by_state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._count_by_state()
        family = GaugeMetricFamily(
            "tfmesh_training_jobs", "Training jobs now in each state.", labels=["state"]
        )
        for state in JobState:
            family.add_metric([state.value], counts.get(state, 0))
        yield family
