"""The training service's logic behind its RPCs: submit (validate, then queue durably), get,
list, cancel and watch jobs. No gRPC here: the servicer converts messages and calls this.

A spec is checked completely before a job exists: its own fields, the dataset version
(the data source must know it), and the model against the dataset's shapes (a template
that cannot take the features, Keras JSON with a Lambda layer or the wrong input or output
shape). Only then is the job written to the store and a worker woken."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from services.training.commit_bell import CommitBell
from services.training.datasource import DataSource, check_dataset_version
from services.training.jobs import JobEvent, JobRecord, JobState
from services.training.models import check_model_fits
from services.training.spec import JobSpec, base_params, spec_violations
from services.training.store import MAX_EVENTS_PER_READ, JobStore
from services.training.worker import WorkerPool
from shared.errors import FailedPrecondition, InvalidArgument, invalid
from shared.names import check_name


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


class TrainingCore:
    def __init__(
        self,
        store: JobStore,
        data_source: DataSource,
        pool: WorkerPool,
        watch_poll_s: float = 0.2,
    ) -> None:
        self._store = store
        self._data_source = data_source
        self._pool = pool
        self._watch_poll_s = watch_poll_s
        self._bell = CommitBell(store.engine)

    async def submit(self, spec: JobSpec, job_id: str = "") -> JobRecord:
        violations = spec_violations(spec)
        if job_id and (bad_id := check_name("job_id", job_id)):
            violations.append(bad_id)
        if violations:
            raise InvalidArgument(violations)
        check_dataset_version(spec.dataset_version)
        if spec.model_name and not self._pool.can_register:
            raise FailedPrecondition("this training service has no registry configured")
        info = await self._data_source.describe(spec.dataset_version)
        await asyncio.to_thread(check_model_fits, spec.model, base_params(spec), info)
        record, created = await asyncio.to_thread(self._store.create, job_id or new_job_id(), spec)
        if created:
            self._pool.notify()
        return record

    async def get(self, job_id: str) -> JobRecord:
        return await asyncio.to_thread(self._store.get, job_id)

    async def list_jobs(
        self, page_size: int, page_token: str, state: JobState | None
    ) -> tuple[list[JobRecord], str]:
        return await asyncio.to_thread(self._store.list_jobs, page_size, page_token, state)

    async def cancel(self, job_id: str) -> JobRecord:
        record = await asyncio.to_thread(self._store.request_cancel, job_id)
        if record.state is JobState.RUNNING:
            self._pool.cancel(job_id)
        return record

    async def watch(self, job_id: str, since_sequence: int) -> AsyncIterator[JobEvent]:
        """The job's events after `since_sequence`, then new ones until it has ended."""
        if since_sequence < 0:
            raise invalid("since_sequence", "must be >= 0")
        while True:
            seen = self._bell.generation
            # Read the state before the events: if it was terminal then, the events read
            # next include the last one, and the stream can end after them.
            job = await asyncio.to_thread(self._store.get, job_id)
            events = await asyncio.to_thread(self._store.events_since, job_id, since_sequence)
            for event in events:
                yield event
                since_sequence = event.sequence
            if len(events) == MAX_EVENTS_PER_READ:
                continue
            if job.state.is_terminal:
                return
            # This process's commits wake the watch at once; others' are polled for.
            await self._bell.wait(seen, self._watch_poll_s)
