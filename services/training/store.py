"""Durable jobs: the `training_jobs`, `training_job_events` and `training_trials` tables
(SQLAlchemy 2 ORM).

Every change to a job and the event that announces it commit in one transaction, with the
job row locked, so a job's event sequence numbers follow commit order and a watcher that
resumes after sequence n misses nothing. SQLite (WAL, full fsync) by default, PostgreSQL
by URL, through `shared.db`. Queued jobs are claimed one at a time (`FOR UPDATE SKIP
LOCKED` on PostgreSQL; SQLite's write lock serializes claims). The trials of a job's
search are rows of their own, claimed the same way by any worker (the job's own worker
and idle ones), so one search runs on many workers at once."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from services.training.jobs import (
    Claim,
    ClaimLost,
    EventKind,
    JobEvent,
    JobRecord,
    JobState,
    Registration,
    TrialClaim,
)
from services.training.metrics import JOBS_FINISHED
from services.training.spec import JobSpec, spec_from_dict, spec_to_dict
from shared.errors import FailedPrecondition, NotFound, invalid
from shared.leases import LEASES_METADATA
from shared.migrations import Migrations

BigId = BigInteger().with_variant(Integer(), "sqlite")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_EVENTS_PER_READ = 500


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


@dataclass(frozen=True)
class TrialTicket:
    """A claimed trial: the job it belongs to, the claim that fences its writes, and the
    Optuna trial an earlier attempt left behind, if any."""

    job: JobRecord
    claim: TrialClaim
    abandoned_study_trial: int | None


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime | None) -> datetime | None:
    # SQLite hands timestamps back without a zone; they were written in UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _record(row: JobRow) -> JobRecord:
    created = _utc(row.created_at)
    assert created is not None
    return JobRecord(
        job_id=row.job_id,
        spec=spec_from_dict(row.spec),
        state=JobState(row.state),
        create_time=created,
        start_time=_utc(row.started_at),
        end_time=_utc(row.ended_at),
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


class _Change:
    """One transaction on one locked job row; `emit` appends the job's next event."""

    def __init__(self, session: Session, row: JobRow) -> None:
        self.session = session
        self.row = row

    def emit(self, kind: EventKind, payload: dict[str, Any]) -> None:
        self.row.last_sequence += 1
        self.session.add(
            EventRow(
                job_row_id=self.row.id,
                sequence=self.row.last_sequence,
                created_at=_now(),
                kind=kind.value,
                payload=payload,
            )
        )

    def set_state(self, state: JobState, message: str = "") -> None:
        self.row.state = state.value
        if state is JobState.RUNNING and self.row.started_at is None:
            self.row.started_at = _now()
        if state.is_terminal:
            self.row.ended_at = _now()
            JOBS_FINISHED.labels(state.value).inc()
        if state is not JobState.RUNNING:
            # No worker holds a job that waits or has ended (the last one stays named).
            self.row.claim_expires_at = None
            if state is JobState.QUEUED:
                self.row.claimed_by = None
        self.emit(EventKind.STATE, {"state": state.value, "message": message})


# The database's migrations (Alembic); a start refuses an older schema. The leases table
# (shared.leases) is the checkpoint collector's.
MIGRATIONS = Migrations(
    "training", Path(__file__).resolve().parent / "migrations", [Base.metadata, LEASES_METADATA]
)


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        MIGRATIONS.ensure_current(engine)

    def _change(
        self,
        job_id: str,
        apply: Callable[[_Change], None],
        claim: Claim | TrialClaim | None = None,
    ) -> JobRecord:
        """Apply one change to a locked job row; with `claim`, only while that worker still
        holds that attempt of the job, or of the trial while the job runs uncancelled
        (ClaimLost otherwise, and nothing is written)."""
        with Session(self.engine) as session, session.begin():
            row = session.scalars(
                select(JobRow).where(JobRow.job_id == job_id).with_for_update()
            ).one_or_none()
            if row is None:
                raise NotFound("training job", job_id, "name")
            if isinstance(claim, TrialClaim):
                self._check_trial_claim(session, row, claim)
            elif claim is not None and (
                row.claimed_by != claim.worker
                or row.attempt != claim.attempt
                or row.state != JobState.RUNNING.value
            ):
                raise ClaimLost(job_id)
            apply(_Change(session, row))
            session.flush()
            return _record(row)

    @staticmethod
    def _check_trial_claim(session: Session, job: JobRow, claim: TrialClaim) -> TrialRow:
        trial = session.scalars(
            select(TrialRow)
            .where(TrialRow.job_id == claim.job_id, TrialRow.number == claim.number)
            .with_for_update()
        ).one_or_none()
        if (
            trial is None
            or job.state != JobState.RUNNING.value
            or job.cancel_requested
            or trial.state != TrialState.RUNNING
            or trial.claimed_by != claim.worker
            or trial.attempt != claim.attempt
        ):
            raise ClaimLost(f"{claim.job_id} trial {claim.number}")
        return trial

    def create(self, job_id: str, spec: JobSpec) -> tuple[JobRecord, bool]:
        """Queue a job; with an id that exists already, return that job and False."""
        with Session(self.engine) as session, session.begin():
            existing = session.scalars(select(JobRow).where(JobRow.job_id == job_id)).one_or_none()
            if existing is not None:
                return _record(existing), False
            row = JobRow(
                job_id=job_id,
                spec=spec_to_dict(spec),
                state=JobState.QUEUED.value,
                created_at=_now(),
                last_sequence=0,
                metrics={},
                params={},
                trials=[],
                artifacts=[],
                epochs_completed=0,
                trials_completed=0,
                attempt=0,
                cancel_requested=False,
                phase="",
                error="",
            )
            session.add(row)
            session.flush()
            _Change(session, row).emit(EventKind.STATE, {"state": "QUEUED", "message": ""})
            session.flush()
            return _record(row), True

    def count_by_state(self) -> dict[JobState, int]:
        with Session(self.engine) as session:
            rows = session.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
            return {JobState(state): count for state, count in rows}

    def get(self, job_id: str) -> JobRecord:
        with Session(self.engine) as session:
            row = session.scalars(select(JobRow).where(JobRow.job_id == job_id)).one_or_none()
            if row is None:
                raise NotFound("training job", job_id, "name")
            return _record(row)

    def list_jobs(
        self, page_size: int, page_token: str, state: JobState | None
    ) -> tuple[list[JobRecord], str]:
        """Newest first; the token is the row id the next page starts below."""
        if page_size < 0:
            raise invalid("page_size", "must be >= 0")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        query = select(JobRow).order_by(JobRow.id.desc()).limit(size + 1)
        if page_token:
            if not page_token.isdigit():
                raise invalid("page_token", "not a token this service gave out")
            query = query.where(JobRow.id < int(page_token))
        if state is not None:
            query = query.where(JobRow.state == state.value)
        with Session(self.engine) as session:
            rows = list(session.scalars(query))
            token = str(rows[size - 1].id) if len(rows) > size else ""
            return [_record(row) for row in rows[:size]], token

    def claim_next(self, worker: str, lease_s: float) -> JobRecord | None:
        """Move the oldest queued job to RUNNING, claimed by `worker` for `lease_s` (renewed
        by its heartbeats), or None when none waits. Workers on PostgreSQL skip each
        other's locked rows, so many claim at once."""
        with Session(self.engine) as session, session.begin():
            row = session.scalars(
                select(JobRow)
                .where(JobRow.state == JobState.QUEUED.value)
                .order_by(JobRow.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).one_or_none()
            if row is None:
                return None
            row.attempt += 1
            row.claimed_by = worker
            row.claim_expires_at = _now() + timedelta(seconds=lease_s)
            change = _Change(session, row)
            change.set_state(JobState.RUNNING, f"attempt {row.attempt} on {worker}")
            session.flush()
            return _record(row)

    def renew_claims(
        self, worker: str, attempts: dict[str, int], lease_s: float
    ) -> tuple[set[str], set[str]]:
        """A worker's heartbeat: extend its claims on the jobs it runs; returns the jobs
        asked to cancel, and those it no longer holds (its claim lapsed, and they moved on)."""
        cancelled: set[str] = set()
        lost: set[str] = set()
        if not attempts:
            return cancelled, lost
        with Session(self.engine) as session, session.begin():
            rows = session.scalars(
                select(JobRow).where(JobRow.job_id.in_(sorted(attempts))).with_for_update()
            )
            held = set()
            for row in rows:
                if (
                    row.claimed_by != worker
                    or row.attempt != attempts[row.job_id]
                    or row.state != JobState.RUNNING.value
                ):
                    continue
                held.add(row.job_id)
                row.claim_expires_at = _now() + timedelta(seconds=lease_s)
                if row.cancel_requested:
                    cancelled.add(row.job_id)
            lost = set(attempts) - held
        return cancelled, lost

    def requeue_expired(self) -> list[str]:
        """Jobs whose worker stopped heartbeating (killed, or cut off) go back to the queue,
        or end CANCELLED when a cancel was asked for; safe to run in every worker."""
        now = _now()
        with Session(self.engine) as session, session.begin():
            rows = list(
                session.scalars(
                    select(JobRow)
                    .where(JobRow.state == JobState.RUNNING.value)
                    .with_for_update(skip_locked=True)
                )
            )
            expired = [r for r in rows if (_utc(r.claim_expires_at) or now) <= now]
            for row in expired:
                change = _Change(session, row)
                if row.cancel_requested:
                    change.set_state(JobState.CANCELLED, "cancelled while its worker was away")
                else:
                    change.set_state(JobState.QUEUED, "requeued: its worker stopped heartbeating")
            return [row.job_id for row in expired]

    def record_checkpoint(self, claim: Claim, job_id: str, epoch: int, sha256: str) -> None:
        def apply(change: _Change) -> None:
            change.row.checkpoint_sha256 = sha256
            change.row.checkpoint_epoch = epoch

        self._change(job_id, apply, claim)

    def checkpoints_in_use(self, digests: set[str]) -> set[str]:
        """Which of `digests` are the latest checkpoint of a job still queued or running."""
        waiting = [JobState.QUEUED.value, JobState.RUNNING.value]
        found: set[str] = set()
        ordered = sorted(digests)
        with Session(self.engine) as session:
            for start in range(0, len(ordered), 500):
                found |= set(
                    session.scalars(
                        select(JobRow.checkpoint_sha256).where(
                            JobRow.state.in_(waiting),
                            JobRow.checkpoint_sha256.in_(ordered[start : start + 500]),
                        )
                    )
                )
        return {digest for digest in found if digest}

    def checkpoint_of(self, job_id: str) -> tuple[int, str] | None:
        """(epoch, sha256) of the job's latest checkpoint in the blob store, if any."""
        with Session(self.engine) as session:
            row = session.scalars(select(JobRow).where(JobRow.job_id == job_id)).one_or_none()
            if row is None:
                raise NotFound("training job", job_id, "name")
            if row.checkpoint_sha256 is None or row.checkpoint_epoch is None:
                return None
            return row.checkpoint_epoch, row.checkpoint_sha256

    def request_cancel(self, job_id: str) -> JobRecord:
        def apply(change: _Change) -> None:
            state = JobState(change.row.state)
            if state is JobState.QUEUED:
                change.row.cancel_requested = True
                change.set_state(JobState.CANCELLED, "cancelled before it started")
            elif state is JobState.RUNNING:
                change.row.cancel_requested = True
            elif state is not JobState.CANCELLED:
                raise FailedPrecondition(f"job {job_id} already ended {state.value}")

        return self._change(job_id, apply)

    def requeue(self, job_id: str, message: str, claim: Claim | None = None) -> JobRecord:
        def apply(change: _Change) -> None:
            change.set_state(JobState.QUEUED, message)

        return self._change(job_id, apply, claim)

    def finish(
        self, job_id: str, state: JobState, message: str = "", claim: Claim | None = None
    ) -> JobRecord:
        def apply(change: _Change) -> None:
            if state is JobState.FAILED:
                change.row.error = message
            change.set_state(state, message)

        return self._change(job_id, apply, claim)

    def set_phase(self, job_id: str, phase: str, claim: Claim | None = None) -> None:
        def apply(change: _Change) -> None:
            change.row.phase = phase

        self._change(job_id, apply, claim)

    def record_epoch(
        self,
        job_id: str,
        trial: int,
        epoch: int,
        epochs: int,
        metrics: dict[str, float],
        claim: Claim | TrialClaim | None = None,
    ) -> None:
        def apply(change: _Change) -> None:
            if trial == 0:
                change.row.epochs_completed = epoch
            change.emit(
                EventKind.EPOCH,
                {"trial": trial, "epoch": epoch, "epochs": epochs, "metrics": metrics},
            )

        self._change(job_id, apply, claim)

    def record_trial(
        self, claim: TrialClaim, params: dict[str, Any], objective: float, pruned: bool = False
    ) -> None:
        """A trial's end, by the worker holding it: its row completes, and the job records
        it and announces it."""
        trial = {
            "number": claim.number,
            "params": params,
            "objective": objective,
            "pruned": pruned,
        }

        def apply(change: _Change) -> None:
            row = self._check_trial_claim(change.session, change.row, claim)
            row.state = TrialState.PRUNED if pruned else TrialState.COMPLETE
            row.claim_expires_at = None
            change.row.trials = [*change.row.trials, trial]
            change.row.trials_completed = len(change.row.trials)
            change.emit(EventKind.TRIAL, trial)

        self._change(claim.job_id, apply, claim)

    def open_trials(self, job_id: str, count: int) -> None:
        """Queue trials 0..count-1 of the job's search (those not there yet)."""

        def apply(change: _Change) -> None:
            existing = set(
                change.session.scalars(select(TrialRow.number).where(TrialRow.job_id == job_id))
            )
            for number in range(count):
                if number not in existing:
                    change.session.add(
                        TrialRow(job_id=job_id, number=number, state=TrialState.QUEUED, attempt=0)
                    )

        self._change(job_id, apply)

    def claim_trial(
        self, worker: str, lease_s: float, job_id: str | None = None
    ) -> TrialTicket | None:
        """Claim the oldest queued trial of a running, uncancelled job (of `job_id` only,
        when given) for `lease_s`, renewed by `renew_trial_claims`; None when none waits."""
        query = (
            select(TrialRow)
            .join(JobRow, JobRow.job_id == TrialRow.job_id)
            .where(
                TrialRow.state == TrialState.QUEUED,
                JobRow.state == JobState.RUNNING.value,
                JobRow.cancel_requested.is_(False),
            )
            .order_by(TrialRow.id)
            .limit(1)
            .with_for_update(skip_locked=True, of=TrialRow)
        )
        if job_id is not None:
            query = query.where(TrialRow.job_id == job_id)
        with Session(self.engine) as session, session.begin():
            row = session.scalars(query).one_or_none()
            if row is None:
                return None
            row.state = TrialState.RUNNING
            row.attempt += 1
            row.claimed_by = worker
            row.claim_expires_at = _now() + timedelta(seconds=lease_s)
            job = session.scalars(select(JobRow).where(JobRow.job_id == row.job_id)).one()
            return TrialTicket(
                _record(job),
                TrialClaim(row.job_id, row.number, worker, row.attempt),
                row.study_trial_number,
            )

    def set_study_trial(self, claim: TrialClaim, study_trial_number: int) -> None:
        def apply(change: _Change) -> None:
            self._check_trial_claim(
                change.session, change.row, claim
            ).study_trial_number = study_trial_number

        self._change(claim.job_id, apply, claim)

    def release_trial(self, claim: TrialClaim) -> None:
        """Put a trial its worker stopped (shut down) back in the queue, if still held."""

        def apply(change: _Change) -> None:
            row = self._check_trial_claim(change.session, change.row, claim)
            row.state = TrialState.QUEUED
            row.claimed_by = None
            row.claim_expires_at = None

        with contextlib.suppress(ClaimLost):
            self._change(claim.job_id, apply, claim)

    def trials_left(self, job_id: str) -> int:
        """Trials of the job's search still queued or running."""
        with Session(self.engine) as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(TrialRow)
                    .where(
                        TrialRow.job_id == job_id,
                        TrialRow.state.in_([TrialState.QUEUED, TrialState.RUNNING]),
                    )
                )
                or 0
            )

    def renew_trial_claims(self, claims: list[TrialClaim], lease_s: float) -> None:
        """A worker's heartbeat for the trials it runs (those it still holds)."""
        if not claims:
            return
        with Session(self.engine) as session, session.begin():
            for claim in claims:
                session.execute(
                    update(TrialRow)
                    .where(
                        TrialRow.job_id == claim.job_id,
                        TrialRow.number == claim.number,
                        TrialRow.claimed_by == claim.worker,
                        TrialRow.attempt == claim.attempt,
                        TrialRow.state == TrialState.RUNNING,
                    )
                    .values(claim_expires_at=_now() + timedelta(seconds=lease_s))
                )

    def requeue_expired_trials(self) -> int:
        """Trials whose worker stopped heartbeating go back to the queue; safe anywhere."""
        now = _now()
        with Session(self.engine) as session, session.begin():
            rows = list(
                session.scalars(
                    select(TrialRow)
                    .where(TrialRow.state == TrialState.RUNNING)
                    .with_for_update(skip_locked=True)
                )
            )
            expired = [r for r in rows if (_utc(r.claim_expires_at) or now) <= now]
            for row in expired:
                row.state = TrialState.QUEUED
                row.claimed_by = None
                row.claim_expires_at = None
            return len(expired)

    def record_resume(self, job_id: str, epoch: int, claim: Claim | None = None) -> None:
        def apply(change: _Change) -> None:
            change.row.resumed_from_epoch = epoch
            change.row.epochs_completed = epoch
            change.emit(
                EventKind.STATE,
                {"state": change.row.state, "message": f"resumed from epoch {epoch}"},
            )

        self._change(job_id, apply, claim)

    def record_outcome(
        self,
        job_id: str,
        metrics: dict[str, float],
        params: dict[str, str],
        artifacts: list[str],
        claim: Claim | None = None,
    ) -> None:
        def apply(change: _Change) -> None:
            change.row.metrics = metrics
            change.row.params = params
            change.row.artifacts = artifacts

        self._change(job_id, apply, claim)

    def record_registration(
        self, job_id: str, registration: Registration, claim: Claim | None = None
    ) -> None:
        def apply(change: _Change) -> None:
            change.row.registration = {
                "model": registration.model,
                "version": registration.version,
                "created": registration.created,
                "promotion_requested": registration.promotion_requested,
                "promoted": registration.promoted,
                "promotion_message": registration.promotion_message,
            }

        self._change(job_id, apply, claim)

    def events_since(self, job_id: str, since: int) -> list[JobEvent]:
        with Session(self.engine) as session:
            row = session.scalars(select(JobRow).where(JobRow.job_id == job_id)).one_or_none()
            if row is None:
                raise NotFound("training job", job_id, "name")
            events = session.scalars(
                select(EventRow)
                .where(EventRow.job_row_id == row.id, EventRow.sequence > since)
                .order_by(EventRow.sequence)
                .limit(MAX_EVENTS_PER_READ)
            )
            return [
                JobEvent(
                    job_id,
                    event.sequence,
                    _utc(event.created_at) or _now(),
                    EventKind(event.kind),
                    dict(event.payload),
                )
                for event in events
            ]
