"""Settings of the inference service, from `TFMESH_INFERENCE_*` environment variables.

Models come from the registry (`TFMESH_INFERENCE_MODELS`, following the aliases in
`TFMESH_INFERENCE_ALIASES`) and/or from a model config file
(`TFMESH_INFERENCE_MODEL_CONFIG_FILE`, see `services.inference.config`), which can also
serve local files with no registry at all. The batching and runtime settings here are the
defaults a model config entry may override."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.aliases import FOLLOWED
from shared.settings import ServiceSettings

CommaList = Annotated[list[str], NoDecode]
CommaInts = Annotated[list[int], NoDecode]


CGROUP_QUOTAS = (
    # cgroup v2: "<quota> <period>" or "max <period>"
    (Path("/sys/fs/cgroup/cpu.max"), None),
    # cgroup v1: the quota (-1 for none) and the period in files of their own
    (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")),
)


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity (a cpuset), capped by a cgroup CPU
    quota (a container's CPU limit, which affinity does not show), at least 1."""
    cores = len(os.sched_getaffinity(0))
    for quota_file, period_file in CGROUP_QUOTAS:
        try:
            if period_file is None:
                quota, period = quota_file.read_text().split()
            else:
                quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
            if quota not in ("max", "-1"):
                cores = min(cores, math.ceil(int(quota) / int(period)))
        except (OSError, ValueError):
            continue
    return max(1, cores)


class InferenceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TFMESH_INFERENCE_")

    port: int = Field(default=50054, ge=0, le=65535)
    # KServe v2 and TF Serving REST, served by the same processes; -1 turns it off.
    http_port: int = Field(default=50055, ge=-1, le=65535)
    # gRPC front-end processes sharing the port, in front of one model-owner process;
    # 0 serves everything from one process.
    frontends: int = Field(default_factory=usable_cores, ge=0, le=256)
    # What holds the gRPC port: grpcio's server, or Envoy bridging the unary inference
    # calls to HTTP/1.1 (services.inference.bridge; no TLS of its own).
    grpc_front: Literal["grpcio", "envoy"] = "grpcio"
    # Each front end's shared-memory slab for request and answer tensors.
    slab_bytes: int = Field(default=128 * 1024 * 1024, ge=1024 * 1024)
    # Requests a streaming call may have unanswered before the server stops reading it.
    stream_max_in_flight: int = Field(default=1024, ge=1)
    # TensorFlow's thread pools; 0 derives them from the cores left after the front ends.
    intra_op_threads: int = Field(default=0, ge=0)
    inter_op_threads: int = Field(default=0, ge=0)
    registry_addr: str = "127.0.0.1:50053"
    # Registry models to serve, comma-separated.
    models: CommaList = Field(default_factory=list)
    # Registry aliases followed for each model; `production` takes unpinned traffic and
    # `canary` its weight's share.
    aliases: CommaList = Field(default_factory=lambda: list(FOLLOWED))
    model_config_file: Path | None = None
    # Runtime of registry models: tensorflow (SavedModel), keras_jax (.keras via XLA),
    # litert (.tflite), or auto (per version, by the artifact it has).
    runtime: str = "tensorflow"
    # TensorFlow on a GPU: 0 grows memory as needed, otherwise a cap in MiB.
    gpu_memory_limit_mb: int = Field(default=0, ge=0)
    max_batch_size: int = Field(default=64, ge=1)
    batch_timeout_micros: int = Field(default=0, ge=0)
    # Comma-separated; empty means powers of two up to max_batch_size.
    allowed_batch_sizes: CommaInts = Field(default_factory=list)
    num_batch_threads: int = Field(default=1, ge=1)
    max_enqueued_batches: int = Field(default=16, ge=1)
    # A burst of registry events (a replay) settles this long before versions load.
    swap_settle_s: float = Field(default=0.05, ge=0)
    # Reconnecting to the registry backs off exponentially up to this.
    registry_max_backoff_s: float = Field(default=5.0, gt=0)
    # The data service, for the statistics a version's live inputs are compared with
    # (drift); empty turns drift off.
    data_addr: str = ""
    # Share of requests whose rows are sampled for drift (0 turns drift off), and the
    # sampled rows each version keeps (memory: rows x the features' histogram bins x 4 bytes).
    drift_sampling_rate: float = Field(default=0.1, ge=0, le=1)
    drift_window_rows: int = Field(default=2000, ge=100, le=1_000_000)
    # Predictions each model keeps for the feedback clients report on them (0 turns
    # feedback off; about 200 bytes each), and how old a prediction may be when its
    # feedback arrives before the feedback counts as late.
    feedback_max_predictions: int = Field(default=50_000, ge=0, le=10_000_000)
    feedback_retention_s: float = Field(default=3600.0, gt=0)

    @field_validator("models", "aliases", "allowed_batch_sizes", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _envoy_front_without_tls(self) -> InferenceSettings:
        if self.grpc_front != "envoy":
            return self
        if self.tls_cert_file is not None:
            raise ValueError(
                "TFMESH_INFERENCE_GRPC_FRONT=envoy takes plaintext from the mesh: TLS ends "
                "at the mesh's proxy, not in this process (unset TFMESH_INFERENCE_TLS_*)"
            )
        return self

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        from services.inference.runtimes import known_runtime

        return known_runtime(value)
