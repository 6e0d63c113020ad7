"""Settings of the training service, from `TFMESH_TRAINING_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StatefulSettings


class TrainingSettings(StatefulSettings):
    model_config = SettingsConfigDict(env_prefix="TFMESH_TRAINING_")

    port: int = Field(default=50052, ge=0, le=65535)
    # Jobs trained at the same time, each on its own thread.
    concurrency: int = Field(default=1, ge=1, le=64)
    # Peers (`cli.stack` sets `TFMESH_TRAINING_<PEER>_ADDR`).
    data_addr: str = "127.0.0.1:50051"
    registry_addr: str = "127.0.0.1:50053"
    # Overall time a registration (upload with retries) may take.
    registration_deadline_s: float = Field(default=300.0, gt=0)
    # Recorded as lineage on every registered version.
    code_version: str = "dev"
    # How often an idle worker looks for queued jobs queued by another process.
    idle_poll_s: float = Field(default=1.0, gt=0)
    # How often WatchJob re-reads a job's events.
    watch_poll_s: float = Field(default=0.2, gt=0)
