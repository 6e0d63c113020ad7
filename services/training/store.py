"""Durable training jobs: queued, claimed by one worker at a time under a lease its
heartbeats renew; a worker's changes to a job it runs are fenced by its claim, and every
change (a worker's, a cancel, a requeue) is announced by the job's next event
(services.training.job_changes); read back by page or by events since a sequence
number. SQLite (WAL, full fsync) by default, PostgreSQL by URL, through `shared.db`.
Queued jobs are claimed one at a time (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's
write lock serializes claims); the trials of a job's search are claimed the same way
(services.training.trials)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from services.training.job_changes import JobChange, change_job
from services.training.jobs import (
    Claim,
    EventKind,
    JobEvent,
    JobRecord,
    JobState,
    Registration,
    TrialClaim,
)
from services.training.spec import JobSpec, spec_to_dict
from services.training.tables import MIGRATIONS, EventRow, JobRow, job_record, now, utc
from services.training.trials import TrialBook
from shared.errors import FailedPrecondition, NotFound, invalid

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_EVENTS_PER_READ = 500


class JobStore:
    """The training jobs of the database of `engine`, their events, and (`trials`) the
    trials of their searches."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        MIGRATIONS.ensure_current(engine)
        self.trials = TrialBook(engine)

    def create(self, job_id: str, spec: JobSpec) -> tuple[JobRecord, bool]:
        """Queue a job; with an id that exists already, return that job and False."""
        with Session(self.engine) as session, session.begin():
            existing = session.scalars(select(JobRow).where(JobRow.job_id == job_id)).one_or_none()
            if existing is not None:
                return job_record(existing), False
            row = JobRow(
                job_id=job_id,
                spec=spec_to_dict(spec),
                state=JobState.QUEUED.value,
                created_at=now(),
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
            JobChange(session, row).emit(EventKind.STATE, {"state": "QUEUED", "message": ""})
            session.flush()
            return job_record(row), True

    def count_by_state(self) -> dict[JobState, int]:
        with Session(self.engine) as session:
            rows = session.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
            return {JobState(state): count for state, count in rows}

    def get(self, job_id: str) -> JobRecord:
        with Session(self.engine) as session:
            row = session.scalars(select(JobRow).where(JobRow.job_id == job_id)).one_or_none()
            if row is None:
                raise NotFound("training job", job_id, "name")
            return job_record(row)

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
            return [job_record(row) for row in rows[:size]], token

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
            row.claim_expires_at = now() + timedelta(seconds=lease_s)
            change = JobChange(session, row)
            change.set_state(JobState.RUNNING, f"attempt {row.attempt} on {worker}")
            session.flush()
            return job_record(row)

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
                row.claim_expires_at = now() + timedelta(seconds=lease_s)
                if row.cancel_requested:
                    cancelled.add(row.job_id)
            lost = set(attempts) - held
        return cancelled, lost

    def requeue_expired(self) -> list[str]:
        """Jobs whose worker stopped heartbeating (killed, or cut off) go back to the queue,
        or end CANCELLED when a cancel was asked for; safe to run in every worker."""
        moment = now()
        with Session(self.engine) as session, session.begin():
            rows = list(
                session.scalars(
                    select(JobRow)
                    .where(JobRow.state == JobState.RUNNING.value)
                    .with_for_update(skip_locked=True)
                )
            )
            expired = [r for r in rows if (utc(r.claim_expires_at) or moment) <= moment]
            for row in expired:
                change = JobChange(session, row)
                if row.cancel_requested:
                    change.set_state(JobState.CANCELLED, "cancelled while its worker was away")
                else:
                    change.set_state(JobState.QUEUED, "requeued: its worker stopped heartbeating")
            return [row.job_id for row in expired]

    def record_checkpoint(self, claim: Claim, job_id: str, epoch: int, sha256: str) -> None:
        def apply(change: JobChange) -> None:
            change.row.checkpoint_sha256 = sha256
            change.row.checkpoint_epoch = epoch

        change_job(self.engine, job_id, apply, claim)

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
        def apply(change: JobChange) -> None:
            state = JobState(change.row.state)
            if state is JobState.QUEUED:
                change.row.cancel_requested = True
                change.set_state(JobState.CANCELLED, "cancelled before it started")
            elif state is JobState.RUNNING:
                change.row.cancel_requested = True
            elif state is not JobState.CANCELLED:
                raise FailedPrecondition(f"job {job_id} already ended {state.value}")

        return change_job(self.engine, job_id, apply)

    def requeue(self, job_id: str, message: str, claim: Claim | None = None) -> JobRecord:
        def apply(change: JobChange) -> None:
            change.set_state(JobState.QUEUED, message)

        return change_job(self.engine, job_id, apply, claim)

    def finish(
        self, job_id: str, state: JobState, message: str = "", claim: Claim | None = None
    ) -> JobRecord:
        def apply(change: JobChange) -> None:
            if state is JobState.FAILED:
                change.row.error = message
            change.set_state(state, message)

        return change_job(self.engine, job_id, apply, claim)

    def set_phase(self, job_id: str, phase: str, claim: Claim | None = None) -> None:
        def apply(change: JobChange) -> None:
            change.row.phase = phase

        change_job(self.engine, job_id, apply, claim)

    def record_epoch(
        self,
        job_id: str,
        trial: int,
        epoch: int,
        epochs: int,
        metrics: dict[str, float],
        claim: Claim | TrialClaim | None = None,
    ) -> None:
        def apply(change: JobChange) -> None:
            if trial == 0:
                change.row.epochs_completed = epoch
            change.emit(
                EventKind.EPOCH,
                {"trial": trial, "epoch": epoch, "epochs": epochs, "metrics": metrics},
            )

        change_job(self.engine, job_id, apply, claim)

    def record_resume(self, job_id: str, epoch: int, claim: Claim | None = None) -> None:
        def apply(change: JobChange) -> None:
            change.row.resumed_from_epoch = epoch
            change.row.epochs_completed = epoch
            change.emit(
                EventKind.STATE,
                {"state": change.row.state, "message": f"resumed from epoch {epoch}"},
            )

        change_job(self.engine, job_id, apply, claim)

    def record_outcome(
        self,
        job_id: str,
        metrics: dict[str, float],
        params: dict[str, str],
        artifacts: list[str],
        claim: Claim | None = None,
    ) -> None:
        def apply(change: JobChange) -> None:
            change.row.metrics = metrics
            change.row.params = params
            change.row.artifacts = artifacts

        change_job(self.engine, job_id, apply, claim)

    def record_registration(
        self, job_id: str, registration: Registration, claim: Claim | None = None
    ) -> None:
        def apply(change: JobChange) -> None:
            change.row.registration = {
                "model": registration.model,
                "version": registration.version,
                "created": registration.created,
                "promotion_requested": registration.promotion_requested,
                "promoted": registration.promoted,
                "promotion_message": registration.promotion_message,
            }

        change_job(self.engine, job_id, apply, claim)

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
                    utc(event.created_at) or now(),
                    EventKind(event.kind),
                    dict(event.payload),
                )
                for event in events
            ]
