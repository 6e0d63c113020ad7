"""A job's hyperparameter search, shared by every worker that helps with it.

The job's own worker opens the search: it queues the trials (rows of `training_trials`,
claimed like jobs) and creates the job's Optuna study in the training database itself
(Optuna's RDB storage, whose tables sit beside the service's), then runs trials and
waits for those that other workers claimed. A worker with no job to run claims a queued
trial of any running search. Each trial asks the study for its parameters (TPE seeded
by the trial's number, sampling from every trial told so far, on any worker), reports
its validation accuracy each epoch, and is pruned against all other trials' reports. A
worker that dies loses its claim: the trial goes back to the queue, its Optuna trial is
marked failed, and it runs again from its start. The best trial is the recorded one
with the highest objective."""

from __future__ import annotations

import functools
from typing import Any

import optuna
from sqlalchemy import Engine

from services.training.jobs import TrialClaim
from services.training.spec import SearchParameter, SearchSpace
from services.training.store import JobStore
from services.training.trials import TrialTicket

STUDY_PREFIX = "tfmesh-training-"


def study_name(job_id: str) -> str:
    return STUDY_PREFIX + job_id


@functools.cache
def _storage(url: str) -> optuna.storages.RDBStorage:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    engine_kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    )
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def study_storage(engine: Engine) -> optuna.storages.RDBStorage:
    """Optuna's storage in the database of `engine` (one per process and database)."""
    return _storage(engine.url.render_as_string(hide_password=False))


def distribution(parameter: SearchParameter) -> optuna.distributions.BaseDistribution:
    if parameter.kind == "float":
        return optuna.distributions.FloatDistribution(
            parameter.low, parameter.high, log=parameter.log
        )
    if parameter.kind == "int":
        return optuna.distributions.IntDistribution(
            int(parameter.low), int(parameter.high), log=parameter.log
        )
    return optuna.distributions.CategoricalDistribution(list(parameter.choices))


def pruner(search: SearchSpace) -> optuna.pruners.BasePruner:
    """Optuna's pruner for a search: trials report validation accuracy each epoch."""
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=search.epochs_per_trial)
    return optuna.pruners.NopPruner()


class SearchBoard:
    """One worker's hand in the searches of the training database: opening a job's
    search, claiming its trials (or any search's), and their Optuna studies."""

    def __init__(self, store: JobStore, worker: str, claim_s: float) -> None:
        self.store = store
        self.worker = worker
        self._claim_s = claim_s
        # The trials this worker runs now, whose claims its heartbeat renews.
        self._held: set[TrialClaim] = set()

    def held(self) -> list[TrialClaim]:
        return list(self._held)

    @property
    def _storage(self) -> optuna.storages.RDBStorage:
        return study_storage(self.store.engine)

    def open(self, job_id: str, search: SearchSpace) -> None:
        """Create the job's study and queue its trials (again after a restart: a no-op)."""
        optuna.create_study(
            storage=self._storage,
            study_name=study_name(job_id),
            direction="maximize",
            load_if_exists=True,
        )
        self.store.trials.open(job_id, search.max_trials)

    def take(self, job_id: str | None = None) -> TrialTicket | None:
        """Claim a queued trial of `job_id`'s search, or of any running search; the
        claim is renewed until `done`."""
        ticket = self.store.trials.claim(self.worker, self._claim_s, job_id)
        if ticket is not None:
            self._held.add(ticket.claim)
        return ticket

    def done(self, ticket: TrialTicket) -> None:
        """This worker no longer runs the trial (finished, stopped or lost)."""
        self._held.discard(ticket.claim)

    def left(self, job_id: str) -> int:
        return self.store.trials.left(job_id)

    def best_params(self, job_id: str) -> dict[str, Any]:
        """The parameters of the recorded trial with the highest objective, preferring
        trials that ran to the end over pruned ones."""
        trials = self.store.get(job_id).trials
        best = max(trials, key=lambda t: (not t.get("pruned", False), t["objective"]))
        return dict(best["params"])

    def ask(self, ticket: TrialTicket) -> tuple[optuna.Study, optuna.Trial]:
        """The trial's parameters from the study, after failing the Optuna trial a dead
        attempt left running."""
        job = ticket.job
        search = job.spec.search
        assert search is not None, "only jobs with a search have trials"
        number = ticket.claim.number
        study = optuna.load_study(
            study_name=study_name(job.job_id),
            storage=self._storage,
            sampler=optuna.samplers.TPESampler(seed=job.spec.seed + number),
            pruner=pruner(search),
        )
        if ticket.abandoned_study_trial is not None:
            self._fail(job.job_id, ticket.abandoned_study_trial)
        trial = study.ask({p.name: distribution(p) for p in search.parameters})
        self.store.trials.set_study_trial(ticket.claim, trial.number)
        return study, trial

    def _fail(self, job_id: str, number: int) -> None:
        storage = self._storage
        study_id = storage.get_study_id_from_name(study_name(job_id))
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        if storage.get_trial(trial_id).state is optuna.trial.TrialState.RUNNING:
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)

    def finish(
        self,
        ticket: TrialTicket,
        study: optuna.Study,
        trial: optuna.Trial,
        objective: float,
        pruned: bool,
    ) -> None:
        """Tell the study, then record the trial (ClaimLost when another worker has it)."""
        state = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
        study.tell(trial, None if pruned else objective, state=state)
        self.store.trials.record(ticket.claim, dict(trial.params), objective, pruned)

    def epoch_ended(
        self, ticket: TrialTicket, epoch: int, epochs: int, metrics: dict[str, float]
    ) -> None:
        claim = ticket.claim
        self.store.record_epoch(claim.job_id, claim.number + 1, epoch, epochs, metrics, claim)

    def release(self, ticket: TrialTicket) -> None:
        self.store.trials.release(ticket.claim)
