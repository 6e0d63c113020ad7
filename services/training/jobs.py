"""A training job as the rest of the service sees it: its state machine, its record, its
events (state changes, per-epoch metrics, trial results), and what the worker needs from
the registry (`Registrar`), independent of the database and of gRPC."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from services.training.spec import JobSpec


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class EventKind(enum.StrEnum):
    STATE = "state"
    EPOCH = "epoch"
    TRIAL = "trial"


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    sequence: int
    time: datetime
    kind: EventKind
    # STATE: {state, message}; EPOCH: {trial, epoch, epochs, metrics};
    # TRIAL: {number, params, objective}.
    payload: dict[str, Any]


@dataclass(frozen=True)
class Registration:
    model: str
    version: int
    created: bool
    promotion_requested: bool = False
    promoted: bool = False
    promotion_message: str = ""


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    spec: JobSpec
    state: JobState
    create_time: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    phase: str = ""
    epochs_completed: int = 0
    trials_completed: int = 0
    attempt: int = 0
    resumed_from_epoch: int | None = None
    cancel_requested: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    # Each {number, params (native values), objective}.
    trials: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    registration: Registration | None = None
    error: str = ""


# Why a running job stops (`StopRequested.reason`).
CANCELLED = "cancelled"
SHUTDOWN = "shutdown"
# The worker's claim lapsed and another worker took the job: stop without writing.
LOST = "claim lost"


class StopRequested(Exception):
    """A running job was asked to stop ("cancelled" or "shutdown") and did, at a batch end."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"training stopped: {reason}")
        self.reason = reason


class ClaimLost(StopRequested):
    """The worker's claim on a running job (or on a trial of its search) lapsed (no
    heartbeat in time) and it went back to the queue, or the job ended or is cancelled:
    this worker stops writing to it."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"claim on {job_id} lost")


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one attempt of a running job."""

    worker: str
    attempt: int


@dataclass(frozen=True)
class TrialClaim:
    """A worker's hold on one attempt of one trial of a running job's search."""

    job_id: str
    number: int
    worker: str
    attempt: int


@dataclass(frozen=True)
class ArtifactFile:
    name: str
    path: Path
    media_type: str


@dataclass(frozen=True)
class VersionUpload:
    """A new registry version: artifacts in upload order, metrics, params and lineage."""

    model: str
    artifacts: list[ArtifactFile]
    metrics: dict[str, float]
    params: dict[str, str]
    dataset_version: str
    job_id: str
    code_version: str


@dataclass(frozen=True)
class UploadedVersion:
    version: int
    # False when a retried upload found the version an earlier attempt created.
    created: bool


@dataclass(frozen=True)
class PromotionOutcome:
    promoted: bool
    message: str = ""


class Registrar(Protocol):
    async def upload(self, upload: VersionUpload) -> UploadedVersion:
        """Create the version, idempotently: the job id is the idempotency key."""

    async def promote(self, model: str, version: int, job_id: str, reason: str) -> PromotionOutcome:
        """Ask for alias `production`; a refusal by the registry's gate is an outcome."""
