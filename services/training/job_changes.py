"""One change to one training job: a transaction on the job's locked row that appends the
job's next events; a worker's change is fenced by its claim (of the job, or of one trial
of its search), so it writes nothing once the claim has moved on. Every change to a job
and the event that announces it commit together, so a job's event sequence numbers
follow commit order and a watcher that resumes after sequence n misses nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from services.training.jobs import Claim, ClaimLost, EventKind, JobRecord, JobState, TrialClaim
from services.training.metrics import JOBS_FINISHED
from services.training.tables import EventRow, JobRow, TrialRow, TrialState, job_record, now
from shared.errors import NotFound


class JobChange:
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
                created_at=now(),
                kind=kind.value,
                payload=payload,
            )
        )

    def set_state(self, state: JobState, message: str = "") -> None:
        self.row.state = state.value
        if state is JobState.RUNNING and self.row.started_at is None:
            self.row.started_at = now()
        if state.is_terminal:
            self.row.ended_at = now()
            JOBS_FINISHED.labels(state.value).inc()
        if state is not JobState.RUNNING:
            # No worker holds a job that waits or has ended (the last one stays named).
            self.row.claim_expires_at = None
            if state is JobState.QUEUED:
                self.row.claimed_by = None
        self.emit(EventKind.STATE, {"state": state.value, "message": message})


def locked_trial(session: Session, job: JobRow, claim: TrialClaim) -> TrialRow:
    """The claimed trial's row, locked, while its worker still holds that attempt and the
    job runs uncancelled (ClaimLost otherwise)."""
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


def change_job(
    engine: Engine,
    job_id: str,
    apply: Callable[[JobChange], None],
    claim: Claim | TrialClaim | None = None,
) -> JobRecord:
    """Apply one change to a locked job row; with `claim`, only while that worker still
    holds that attempt of the job, or of the trial while the job runs uncancelled
    (ClaimLost otherwise, and nothing is written)."""
    with Session(engine) as session, session.begin():
        row = session.scalars(
            select(JobRow).where(JobRow.job_id == job_id).with_for_update()
        ).one_or_none()
        if row is None:
            raise NotFound("training job", job_id, "name")
        if isinstance(claim, TrialClaim):
            locked_trial(session, row, claim)
        elif claim is not None and (
            row.claimed_by != claim.worker
            or row.attempt != claim.attempt
            or row.state != JobState.RUNNING.value
        ):
            raise ClaimLost(job_id)
        apply(JobChange(session, row))
        session.flush()
        return job_record(row)
