"""The training database's tables: `training_jobs`, `training_job_events` and
`training_trials` (SQLAlchemy 2 ORM), their migrations, and a job row read back as a
`JobRecord`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.training.jobs import JobRecord, JobState, Registration
from services.training.spec import spec_from_dict
from shared.db import as_utc
from shared.leases import LEASES_METADATA
from shared.migrations import Migrations

BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class JobRow(Base):
    __tablename__ = "training_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), index=True)
    phase: Mapped[str] = mapped_column(String(32), default="")
    epochs_completed: Mapped[int] = mapped_column(Integer, default=0)
    trials_completed: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    resumed_from_epoch: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The worker running the job, and until when its claim holds without a heartbeat.
    claimed_by: Mapped[str | None] = mapped_column(String(256))
    claim_expires_at: Mapped[datetime | None]
    # The latest checkpoint in the blob store (services.training.checkpoint_store).
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    checkpoint_epoch: Mapped[int | None] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    trials: Mapped[list[Any]] = mapped_column(default=list)
    artifacts: Mapped[list[Any]] = mapped_column(default=list)
    registration: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str] = mapped_column(Text, default="")
    last_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]


class EventRow(Base):
    __tablename__ = "training_job_events"
    __table_args__ = (UniqueConstraint("job_row_id", "sequence"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_row_id: Mapped[int] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="CASCADE"), index=True
    )
    sequence: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]]


class TrialState:
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"


class TrialRow(Base):
    """One trial of a job's search: queued until a worker claims it, then running under
    that worker's claim (renewed by its heartbeats), then complete or pruned. Its
    parameters and objective are in the job's `trials`; its Optuna trial is in the
    study (services.training.search)."""

    __tablename__ = "training_trials"
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), index=True)
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(256))
    claim_expires_at: Mapped[datetime | None]
    # The number of the latest attempt's Optuna trial (a dead attempt's is marked failed).
    study_trial_number: Mapped[int | None] = mapped_column(BigInteger)


def now() -> datetime:
    return datetime.now(UTC)


def utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else as_utc(moment)


def job_record(row: JobRow) -> JobRecord:
    return JobRecord(
        job_id=row.job_id,
        spec=spec_from_dict(row.spec),
        state=JobState(row.state),
        create_time=as_utc(row.created_at),
        start_time=utc(row.started_at),
        end_time=utc(row.ended_at),
        phase=row.phase,
        epochs_completed=row.epochs_completed,
        trials_completed=row.trials_completed,
        attempt=row.attempt,
        resumed_from_epoch=row.resumed_from_epoch,
        cancel_requested=row.cancel_requested,
        metrics=dict(row.metrics),
        params=dict(row.params),
        trials=list(row.trials),
        artifacts=list(row.artifacts),
        registration=Registration(**row.registration) if row.registration else None,
        error=row.error,
    )


# The database's migrations (Alembic); a start refuses an older schema. The leases table
# (shared.leases) is the checkpoint collector's.
MIGRATIONS = Migrations(
    "training", Path(__file__).resolve().parent / "migrations", [Base.metadata, LEASES_METADATA]
)
