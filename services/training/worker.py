"""The worker pool: `concurrency` asyncio workers, each claiming queued jobs from the store
and running them one at a time, beside a heartbeat. A worker with no job to run helps a
running search instead: it claims one of its queued trials and trains it
(services.training.search).

A job runs as: load its dataset (async, from the data source), train on a thread
(`services.training.trainer`, which imports TensorFlow, so only here and lazily; a job
with `workers: N` in N processes, `services.training.multiworker`), record
the outcome, register the artifacts (async, retried and idempotent by job id), ask for
promotion when the spec says so, and finish. Every write is conditional on this worker
still holding the job (its claim, renewed by the heartbeat): a worker cut off long enough
for another to take the job over stops at its next write and leaves the job alone. The
heartbeat also requeues the jobs of workers that stopped heartbeating (killed, on any
machine), which then resume from their last checkpoint (in the blob store when it is
shared, services.training.checkpoint_store). CancelJob reaches a running job through its
`StopSignal` (in this process at once, in another at its next heartbeat), checked after
every batch; a shutdown stops running jobs the same way but puts them back in the queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from services.training.datasource import DataSource, TrainingData
from services.training.jobs import (
    CANCELLED,
    LOST,
    SHUTDOWN,
    Claim,
    ClaimLost,
    JobRecord,
    JobState,
    Registrar,
    Registration,
    StopRequested,
    VersionUpload,
)
from services.training.metrics import EPOCH_SECONDS, UNREGISTERED
from services.training.search import SearchBoard
from services.training.store import JobStore
from shared.errors import DomainError
from shared.leases import replica_name

if TYPE_CHECKING:
    from services.training.checkpoint_store import CheckpointMirror
    from services.training.checkpoints import Checkpoint
    from services.training.trainer import TrainingOutcome, TrialModels
    from services.training.trials import TrialTicket

log = logging.getLogger(__name__)


class StopSignal:
    """Why a running job must stop, or None; set from the event loop, read by the trainer."""

    def __init__(self) -> None:
        self._reason: str | None = None

    def request(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason

    def __call__(self) -> str | None:
        return self._reason


class JobReporter:
    """The trainer's progress, written to the store (called on the training thread, or for
    the final training's epochs on the thread that writes behind it) while this worker
    still holds the job (ClaimLost otherwise, which stops the training)."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        model: str,
        claim: Claim,
        mirror: CheckpointMirror | None,
    ) -> None:
        self._store = store
        self._job_id = job_id
        self._claim = claim
        self._mirror = mirror
        self._epoch_seconds = EPOCH_SECONDS.labels(model or UNREGISTERED)
        self._epoch_started = time.monotonic()

    def phase_started(self, phase: str) -> None:
        self._store.set_phase(self._job_id, phase, self._claim)
        self._epoch_started = time.monotonic()

    def epoch_ended(
        self,
        trial: int,
        epoch: int,
        epochs: int,
        metrics: dict[str, float],
        seconds: float | None = None,
    ) -> None:
        now = time.monotonic()
        # Untimed (a multi-worker training's relayed epochs): the time since the last.
        self._epoch_seconds.observe(seconds if seconds is not None else now - self._epoch_started)
        self._epoch_started = now
        self._store.record_epoch(self._job_id, trial, epoch, epochs, metrics, self._claim)

    def resumed(self, epoch: int) -> None:
        self._store.record_resume(self._job_id, epoch, self._claim)
        self._epoch_started = time.monotonic()

    def checkpoint_saved(self, checkpoint: Checkpoint) -> None:
        if self._mirror is not None:
            self._mirror.publish(self._claim, self._job_id, checkpoint)


class WorkerPool:
    def __init__(
        self,
        store: JobStore,
        data_source: DataSource,
        registrar: Registrar | None,
        jobs_root: Path,
        code_version: str,
        concurrency: int = 1,
        idle_poll_s: float = 1.0,
        worker: str = "",
        claim_s: float = 15.0,
        mirror: CheckpointMirror | None = None,
        checkpoint_interval_s: float = 0.0,
    ) -> None:
        # This process as a claimant of jobs; its claims lapse `claim_s` after its last
        # heartbeat (one every third of that), and then any worker requeues its jobs.
        self.worker = worker or replica_name()
        self._claim_s = claim_s
        # Where checkpoints go so that another worker can resume the job (None: this
        # host's disk only, as with one worker).
        self._mirror = mirror
        self._checkpoint_interval_s = checkpoint_interval_s
        self._store = store
        self._data_source = data_source
        self._registrar = registrar
        self._jobs_root = jobs_root
        self._code_version = code_version
        self._concurrency = concurrency
        self._idle_poll_s = idle_poll_s
        self._wakeup = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._running: dict[str, tuple[StopSignal, int]] = {}
        # Trials of other workers' searches this process runs, by "job/number".
        self._helping: dict[str, StopSignal] = {}
        self._board = SearchBoard(store, self.worker, claim_s)
        # The dataset the last helped trial trained on, and the compiled models of that
        # job's trials (the next trial is often of the same job).
        self._helped_data: tuple[str, TrainingData] | None = None
        self._helped_models: tuple[str, TrialModels] | None = None
        self._workers: list[asyncio.Task[None]] = []

    @property
    def can_register(self) -> bool:
        return self._registrar is not None

    async def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"training-worker-{index}")
            for index in range(self._concurrency)
        ]
        self._workers.append(asyncio.create_task(self._heartbeat(), name="training-heartbeat"))

    async def _heartbeat(self) -> None:
        """Renew this worker's claims, pass cancels on, and requeue the jobs of workers that
        stopped heartbeating (any worker may: the update is conditional on the expiry)."""
        while not self._stopping:
            try:
                attempts = {job: attempt for job, (_, attempt) in self._running.items()}
                cancelled, lost = await asyncio.to_thread(
                    self._store.renew_claims, self.worker, attempts, self._claim_s
                )
                for job_id in cancelled:
                    self.cancel(job_id)
                for job_id in lost:
                    if job_id in self._running:
                        self._running[job_id][0].request(LOST)
                await asyncio.to_thread(
                    self._store.trials.renew_claims, self._board.held(), self._claim_s
                )
                requeued = await asyncio.to_thread(self._store.requeue_expired)
                trials = await asyncio.to_thread(self._store.trials.requeue_expired)
                if requeued or trials:
                    log.info(
                        "requeued the work of a silent worker",
                        extra={"jobs": requeued, "trials": trials},
                    )
                    self._wakeup.set()
            except Exception:  # noqa: BLE001 - the database away: try again next beat
                log.exception("training heartbeat failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._claim_s / 3)

    def notify(self) -> None:
        """A job was queued: wake an idle worker now instead of at its next poll."""
        self._wakeup.set()

    def cancel(self, job_id: str) -> None:
        if job_id in self._running:
            self._running[job_id][0].request(CANCELLED)

    async def stop(self) -> None:
        """Stop running jobs at their next batch (they go back to the queue) and wait."""
        self._stopping = True
        for signal, _ in self._running.values():
            signal.request(SHUTDOWN)
        for signal in self._helping.values():
            signal.request(SHUTDOWN)
        self._wakeup.set()
        self._stopped.set()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def _work(self) -> None:
        while not self._stopping:
            job: JobRecord | None = None
            ticket: TrialTicket | None = None
            try:
                job = await asyncio.to_thread(self._store.claim_next, self.worker, self._claim_s)
                if job is None:
                    ticket = await asyncio.to_thread(self._board.take)
            except Exception:  # noqa: BLE001 - the database away: try again after a poll
                log.exception("claiming work failed")
            if job is not None:
                await self._run(job)
            elif ticket is not None:
                await self._help(ticket)
            else:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._idle_poll_s)

    async def _help(self, ticket: TrialTicket) -> None:
        """Run one trial of another worker's search; a failure puts it back in the queue
        (the job's own worker fails the job if the trial cannot run anywhere)."""
        claim = ticket.claim
        key = f"{claim.job_id}/{claim.number}"
        signal = StopSignal()
        self._helping[key] = signal
        if self._stopping:
            signal.request(SHUTDOWN)
        log.info("trial started", extra={"job": claim.job_id, "trial": claim.number})
        try:
            data = await self._helper_data(ticket.job.spec.dataset_version)
            await asyncio.to_thread(self._train_trial, ticket, data, signal)
        except ClaimLost:
            log.warning("trial taken over, or its job ended", extra={"job": claim.job_id})
        except StopRequested:
            log.info("trial stopped", extra={"job": claim.job_id, "trial": claim.number})
        except Exception:  # noqa: BLE001 - the worker goes on to other work
            log.exception("trial failed", extra={"job": claim.job_id, "trial": claim.number})
            await asyncio.to_thread(self._board.release, ticket)
        finally:
            self._board.done(ticket)
            del self._helping[key]

    async def _helper_data(self, version: str) -> TrainingData:
        if self._helped_data is None or self._helped_data[0] != version:
            self._helped_data = (version, await self._data_source.load(version))
        return self._helped_data[1]

    def _train_trial(self, ticket: TrialTicket, data: TrainingData, signal: StopSignal) -> None:
        from services.training.trainer import TrialModels, TrialRunner

        job = ticket.job
        if self._helped_models is None or self._helped_models[0] != job.job_id:
            self._helped_models = (job.job_id, TrialModels(job.spec, data))
        models = self._helped_models[1]
        TrialRunner(job.spec, data, signal, models).run_trial(ticket, self._board)

    async def _run(self, job: JobRecord) -> None:
        signal = StopSignal()
        claim = Claim(self.worker, job.attempt)
        self._running[job.job_id] = (signal, job.attempt)
        if self._stopping:
            signal.request(SHUTDOWN)
        log.info("job started", extra={"job": job.job_id, "attempt": job.attempt})
        try:
            await self._execute(job, signal, claim)
            await self._write_unless_lost(
                self._store.finish, job.job_id, JobState.SUCCEEDED, "", claim
            )
            log.info("job succeeded", extra={"job": job.job_id})
        except StopRequested as stopped:
            if isinstance(stopped, ClaimLost) or stopped.reason == LOST:
                log.warning("job taken over by another worker", extra={"job": job.job_id})
            elif stopped.reason == CANCELLED:
                await self._write_unless_lost(
                    self._store.finish,
                    job.job_id,
                    JobState.CANCELLED,
                    "cancelled while running",
                    claim,
                )
            else:
                await self._write_unless_lost(
                    self._store.requeue, job.job_id, "worker shut down; resumes on another", claim
                )
        except DomainError as error:
            log.warning("job failed", extra={"job": job.job_id, "error": error.message})
            await self._write_unless_lost(
                self._store.finish, job.job_id, JobState.FAILED, error.message, claim
            )
        except Exception as error:  # noqa: BLE001 - recorded on the job; the worker goes on
            log.exception("job failed", extra={"job": job.job_id})
            message = f"{type(error).__name__}: {error}"
            await self._write_unless_lost(
                self._store.finish, job.job_id, JobState.FAILED, message, claim
            )
        finally:
            del self._running[job.job_id]

    async def _write_unless_lost(self, write: Callable[..., object], *args: object) -> None:
        """A job's ending, written only while this worker still holds it; when the
        database is away the claim lapses and another attempt runs the job again."""
        try:
            await asyncio.to_thread(write, *args)
        except ClaimLost:
            log.warning("job taken over by another worker", extra={"job": args[0]})
        except Exception:  # noqa: BLE001 - the worker goes on to the next job
            log.exception("a job's end could not be recorded", extra={"job": args[0]})

    async def _execute(self, job: JobRecord, signal: StopSignal, claim: Claim) -> None:
        data = await self._data_source.load(job.spec.dataset_version)
        if (reason := signal()) is not None:
            raise StopRequested(reason)
        outcome = await asyncio.to_thread(self._train, job, data, signal, claim)
        artifact_names = [artifact.name for artifact in outcome.artifacts]
        await asyncio.to_thread(
            self._store.record_outcome,
            job.job_id,
            outcome.metrics,
            outcome.params,
            artifact_names,
            claim,
        )
        if job.spec.model_name and self._registrar is not None:
            await asyncio.to_thread(self._store.set_phase, job.job_id, "register", claim)
            registration = await self._register(job, outcome, self._registrar)
            await asyncio.to_thread(
                self._store.record_registration, job.job_id, registration, claim
            )

    def _train(
        self, job: JobRecord, data: TrainingData, signal: StopSignal, claim: Claim
    ) -> TrainingOutcome:
        from services.training.multiworker import MultiWorkerTraining
        from services.training.trainer import Trainer

        workdir = self._jobs_root / job.job_id
        reporter = JobReporter(self._store, job.job_id, job.spec.model_name, claim, self._mirror)
        if job.spec.workers > 1:
            return MultiWorkerTraining(job.spec, data, workdir, reporter, signal).run()
        if self._mirror is not None:
            self._mirror.restore(job.job_id, workdir / "checkpoints")
        trainer = Trainer(job.spec, data, workdir, reporter, signal, self._checkpoint_interval_s)
        return trainer.run(self._board, job.job_id)

    async def _register(
        self, job: JobRecord, outcome: TrainingOutcome, registrar: Registrar
    ) -> Registration:
        spec = job.spec
        uploaded = await registrar.upload(
            VersionUpload(
                model=spec.model_name,
                artifacts=outcome.artifacts,
                metrics=outcome.metrics,
                params={**outcome.params, "model": spec.model_kind, "seed": str(spec.seed)},
                dataset_version=spec.dataset_version,
                job_id=job.job_id,
                code_version=self._code_version,
            )
        )
        log.info(
            "registered",
            extra={"job": job.job_id, "version": uploaded.version, "new_version": uploaded.created},
        )
        if not spec.request_promotion:
            return Registration(spec.model_name, uploaded.version, uploaded.created)
        accuracy = outcome.metrics["accuracy"]
        promotion = await registrar.promote(
            spec.model_name,
            uploaded.version,
            job.job_id,
            f"training job {job.job_id}: test accuracy {accuracy:.4f}",
        )
        return Registration(
            spec.model_name,
            uploaded.version,
            uploaded.created,
            promotion_requested=True,
            promoted=promotion.promoted,
            promotion_message=promotion.message,
        )
