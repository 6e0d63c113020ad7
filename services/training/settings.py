"""Settings of the training service, from `TFMESH_TRAINING_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StatefulSettings


class TrainingSettings(StatefulSettings):
    model_config = SettingsConfigDict(env_prefix="TFMESH_TRAINING_")

    port: int = Field(default=50052, ge=0, le=65535)
    # Jobs trained at the same time by this process, each on its own thread; 0 makes the
    # service an API only, whose jobs the worker processes run
    # (`python -m services.training.worker_server`, which trains at least one at a time).
    concurrency: int = Field(default=1, ge=0, le=64)
    # A worker's claim on a running job lasts this long past its last heartbeat (one
    # every third of it); then any worker puts the job back in the queue, and the next
    # to claim it resumes it from its last checkpoint.
    claim_s: float = Field(default=15.0, gt=0)
    # A job's final training writes a checkpoint (and, with a shared blob store, uploads
    # it) at the end of the first epoch this long after the last one, and after its last
    # epoch; 0 checkpoints every epoch. A worker killed meanwhile loses the epochs since.
    checkpoint_interval_s: float = Field(default=10.0, ge=0)
    # A worker process's gRPC port (health only) and Prometheus port (0: free ones).
    worker_port: int = Field(default=0, ge=0, le=65535)
    worker_metrics_port: int = Field(default=-1, ge=-1, le=65535)
    # Peers (`cli.stack` sets `TFMESH_TRAINING_<PEER>_ADDR`).
    data_addr: str = "127.0.0.1:50051"
    registry_addr: str = "127.0.0.1:50053"
    # Read a dataset version's Parquet files where the data service stored them (its
    # disk when this machine shares it, or the object store) instead of streaming the
    # rows through the data service; a file out of reach is read through the service.
    direct_reads: bool = True
    # Overall time a registration (upload with retries) may take.
    registration_deadline_s: float = Field(default=300.0, gt=0)
    # Recorded as lineage on every registered version.
    code_version: str = "dev"
    # How often an idle worker looks for queued jobs queued by another process.
    idle_poll_s: float = Field(default=1.0, gt=0)
    # How often WatchJob re-reads a job's events.
    watch_poll_s: float = Field(default=0.2, gt=0)
