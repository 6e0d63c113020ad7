"""The trials of a job's search as rows of their own (`training_trials`): queued when the
job's worker opens the search, claimed one at a time by any worker (the job's own and
idle ones; `FOR UPDATE SKIP LOCKED` on PostgreSQL) under a lease its heartbeats renew,
then complete or pruned; a trial whose worker stopped heartbeating goes back to the
queue. So one search runs on many workers at once."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from services.training.job_changes import JobChange, change_job, locked_trial
from services.training.jobs import ClaimLost, EventKind, JobRecord, JobState, TrialClaim
from services.training.tables import JobRow, TrialRow, TrialState, job_record, now, utc


@dataclass(frozen=True)
class TrialTicket:
    """A claimed trial: the job it belongs to, the claim that fences its writes, and the
    Optuna trial an earlier attempt left behind, if any."""

    job: JobRecord
    claim: TrialClaim
    abandoned_study_trial: int | None


class TrialBook:
    """The trial rows of every job's search, in the training database of `engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def open(self, job_id: str, count: int) -> None:
        """Queue trials 0..count-1 of the job's search (those not there yet)."""

        def apply(change: JobChange) -> None:
            existing = set(
                change.session.scalars(select(TrialRow.number).where(TrialRow.job_id == job_id))
            )
            for number in range(count):
                if number not in existing:
                    change.session.add(
                        TrialRow(job_id=job_id, number=number, state=TrialState.QUEUED, attempt=0)
                    )

        change_job(self.engine, job_id, apply)

    def claim(self, worker: str, lease_s: float, job_id: str | None = None) -> TrialTicket | None:
        """Claim the oldest queued trial of a running, uncancelled job (of `job_id` only,
        when given) for `lease_s`, renewed by `renew_claims`; None when none waits."""
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
            row.claim_expires_at = now() + timedelta(seconds=lease_s)
            job = session.scalars(select(JobRow).where(JobRow.job_id == row.job_id)).one()
            return TrialTicket(
                job_record(job),
                TrialClaim(row.job_id, row.number, worker, row.attempt),
                row.study_trial_number,
            )

    def set_study_trial(self, claim: TrialClaim, study_trial_number: int) -> None:
        def apply(change: JobChange) -> None:
            locked_trial(change.session, change.row, claim).study_trial_number = study_trial_number

        change_job(self.engine, claim.job_id, apply, claim)

    def record(
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

        def apply(change: JobChange) -> None:
            row = locked_trial(change.session, change.row, claim)
            row.state = TrialState.PRUNED if pruned else TrialState.COMPLETE
            row.claim_expires_at = None
            change.row.trials = [*change.row.trials, trial]
            change.row.trials_completed = len(change.row.trials)
            change.emit(EventKind.TRIAL, trial)

        change_job(self.engine, claim.job_id, apply, claim)

    def release(self, claim: TrialClaim) -> None:
        """Put a trial its worker stopped (shut down) back in the queue, if still held."""

        def apply(change: JobChange) -> None:
            row = locked_trial(change.session, change.row, claim)
            row.state = TrialState.QUEUED
            row.claimed_by = None
            row.claim_expires_at = None

        with contextlib.suppress(ClaimLost):
            change_job(self.engine, claim.job_id, apply, claim)

    def left(self, job_id: str) -> int:
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

    def renew_claims(self, claims: list[TrialClaim], lease_s: float) -> None:
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
                    .values(claim_expires_at=now() + timedelta(seconds=lease_s))
                )

    def requeue_expired(self) -> int:
        """Trials whose worker stopped heartbeating go back to the queue; safe anywhere."""
        moment = now()
        with Session(self.engine) as session, session.begin():
            rows = list(
                session.scalars(
                    select(TrialRow)
                    .where(TrialRow.state == TrialState.RUNNING)
                    .with_for_update(skip_locked=True)
                )
            )
            expired = [r for r in rows if (utc(r.claim_expires_at) or moment) <= moment]
            for row in expired:
                row.state = TrialState.QUEUED
                row.claimed_by = None
                row.claim_expires_at = None
            return len(expired)
