"""The training of one job, run on a worker thread: search, fit, checkpoint, evaluate, export.

`Trainer.run` does, in order: the search when the spec has a search space (its trials
are shared with other workers through a `SearchBoard`: this worker runs queued trials
until none is left, then waits for those others run; trials finished by an earlier
attempt are not run again), the final training with the best parameters (every epoch's
event, and a checkpoint every `checkpoint_interval_s` and after the last epoch, written
behind the training by services.training.epoch_writes; a restart loads the latest one
and continues at its epoch), evaluation on the test split and export.
`Trainer.run_trial` runs one claimed trial, for this job's worker or for a helping one.
Data always reaches Keras through `tf.data`. A stop request (cancel, shutdown) is
checked after every batch; it ends the run with `StopRequested`, a shutdown leaving the
last complete epoch's checkpoint for the next attempt. Progress goes to a `Reporter`
(the job store)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from services.training.checkpoints import (
    Checkpoint,
    CheckpointDir,
    CheckpointState,
    StoppingState,
)
from services.training.datasource import TrainingData
from services.training.epoch_writes import FinalEpochWrites
from services.training.evaluation import write_evaluation
from services.training.export import export_model
from services.training.jobs import ArtifactFile, ClaimLost, StopRequested
from services.training.models import build_model
from services.training.spec import JobSpec, TrialParams, base_params, params_with

if TYPE_CHECKING:
    from services.training.search import SearchBoard
    from services.training.trials import TrialTicket

log = logging.getLogger(__name__)

# Returns why the run must stop ("cancelled", "shutdown"), or None to go on.
StopCheck = Callable[[], str | None]

# How often a search's worker looks again at the trials other workers run.
TRIALS_POLL_S = 0.5


class Reporter(Protocol):
    """Progress of the job's own training (a search's trials report to the board)."""

    def phase_started(self, phase: str) -> None: ...

    def epoch_ended(
        self,
        trial: int,
        epoch: int,
        epochs: int,
        metrics: dict[str, float],
        seconds: float | None = None,
    ) -> None:
        """`trial` is 0: the final training; `seconds`, the epoch's wall time, when the
        caller timed it (on the training thread)."""

    def resumed(self, epoch: int) -> None: ...

    def checkpoint_saved(self, checkpoint: Checkpoint) -> None:
        """A checkpoint of the final training is on disk (to be sent where others see it)."""


@dataclass(frozen=True)
class TrainingOutcome:
    metrics: dict[str, float]
    params: dict[str, str]
    artifacts: list[ArtifactFile]
    epochs_completed: int


def make_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class _JobCallback(keras.callbacks.Callback):
    """Stops at the next batch boundary when asked; hands each complete epoch's logs on."""

    def __init__(self, should_stop: StopCheck, on_epoch: Callable[[int, dict[str, float]], None]):
        super().__init__()
        self._should_stop = should_stop
        self._on_epoch = on_epoch
        self.stop_reason: str | None = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        reason = self._should_stop()
        if reason is not None:
            self.stop_reason = reason
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # Keras still ends an epoch that a batch-level stop cut short: not a real epoch.
        if self.stop_reason is None:
            self._on_epoch(epoch + 1, {key: float(value) for key, value in (logs or {}).items()})


def _params_from_dict(data: dict[str, Any]) -> TrialParams:
    units = data["hidden_units"]
    return TrialParams(**{**data, "hidden_units": tuple(units) if units is not None else None})


class TrialModels:
    """The compiled models of one search's trials on this worker, by everything but the
    learning rate. A trial whose model is built like an earlier one's trains that compiled
    model, given the new model's initial weights, a zeroed optimizer (step 0, no moments)
    and its own learning rate: the same training as a fresh model's, without tracing the
    training and validation functions again (about 0.4 s a trial for the digits MLP, a
    third of a pruned search's time)."""

    # Distinct architectures kept (a search over layer sizes builds many).
    SIZE = 4

    def __init__(self, spec: JobSpec, data: TrainingData) -> None:
        self._spec = spec
        self._data = data
        self._models: OrderedDict[TrialParams, keras.Model] = OrderedDict()

    def model_for(self, params: TrialParams, seed: int) -> keras.Model:
        keras.utils.set_random_seed(seed)
        data = self._data
        fresh = build_model(self._spec.model, params, data.info, data.mean, data.std)
        key = replace(params, learning_rate=0.0)
        compiled = self._models.get(key)
        if compiled is None:
            self._models[key] = fresh
            if len(self._models) > self.SIZE:
                self._models.popitem(last=False)
            return fresh
        self._models.move_to_end(key)
        compiled.set_weights(fresh.get_weights())
        for variable in compiled.optimizer.variables:
            variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
        compiled.optimizer.learning_rate = params.learning_rate
        return compiled


class TrialRunner:
    """Fits models of one job on its data, stopping when asked: the job's final training
    and the trials of its search (here or on a helping worker)."""

    def __init__(
        self,
        spec: JobSpec,
        data: TrainingData,
        should_stop: StopCheck,
        models: TrialModels | None = None,
    ) -> None:
        self.spec = spec
        self.data = data
        self.should_stop = should_stop
        self.models = models or TrialModels(spec, data)

    def fit(
        self,
        model: keras.Model,
        params: TrialParams,
        epochs: int,
        initial_epoch: int,
        on_epoch: Callable[[int, dict[str, float]], None],
        seed: int,
        should_stop: StopCheck | None = None,
    ) -> None:
        """Fit `model` from `initial_epoch` to `epochs`, calling `on_epoch` after each;
        StopRequested when `should_stop` (the runner's own by default) says so."""
        callback = _JobCallback(should_stop or self.should_stop, on_epoch)
        data = self.data
        model.fit(
            make_dataset(data.x_train, data.y_train, params.batch_size, shuffle_seed=seed),
            validation_data=make_dataset(data.x_val, data.y_val, params.batch_size),
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=[callback],
            shuffle=False,  # tf.data shuffles, with a seed
            verbose=0,
        )
        if callback.stop_reason is not None:
            raise StopRequested(callback.stop_reason)

    def run_trial(self, ticket: TrialTicket, board: SearchBoard) -> None:
        """Train one claimed trial of this job's search and record it; a stop puts the
        trial back in the queue (ClaimLost: another worker has it, or the job ended)."""
        search = self.spec.search
        assert search is not None
        number = ticket.claim.number
        try:
            study, trial = board.ask(ticket)
        except BaseException:
            board.done(ticket)
            raise
        params = params_with(base_params(self.spec), trial.params)
        model = self.models.model_for(params, self.spec.seed + number + 1)
        accuracies: list[float] = []
        pruned = [False]

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            accuracies.append(metrics.get("val_accuracy", 0.0))
            board.epoch_ended(ticket, epoch, search.epochs_per_trial, metrics)
            trial.report(accuracies[-1], epoch)
            if epoch < search.epochs_per_trial and trial.should_prune():
                pruned[0] = True
                model.stop_training = True

        try:
            self.fit(model, params, search.epochs_per_trial, 0, on_epoch, self.spec.seed + number)
            board.finish(ticket, study, trial, max(accuracies), pruned[0])
        except ClaimLost:
            raise
        except StopRequested:
            board.release(ticket)
            raise
        finally:
            board.done(ticket)


class Trainer:
    def __init__(
        self,
        spec: JobSpec,
        data: TrainingData,
        workdir: Path,
        reporter: Reporter,
        should_stop: StopCheck,
        checkpoint_interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.data = data
        self.workdir = workdir
        self.reporter = reporter
        self.should_stop = should_stop
        # The final training's checkpoints: at the end of the first epoch this long after
        # the last (0: every epoch), and at its end.
        self.checkpoint_interval_s = checkpoint_interval_s
        self.clock = clock
        self.runner = TrialRunner(spec, data, should_stop)
        self.checkpoints = CheckpointDir(workdir / "checkpoints")

    def run(self, board: SearchBoard | None = None, job_id: str = "") -> TrainingOutcome:
        """Train the job; a spec with a search needs the board and the job's id."""
        checkpoint = self.checkpoints.latest()
        if checkpoint is not None:
            params = _params_from_dict(checkpoint.state.params)
        elif self.spec.search is not None:
            assert board is not None and job_id, "a search runs on a board"
            self.reporter.phase_started("search")
            params = self.search(board, job_id)
        else:
            params = base_params(self.spec)
        self.reporter.phase_started("train")
        model, checkpoint = self._train_final(params, checkpoint)
        self.reporter.phase_started("evaluate")
        metrics = self._evaluate(model, checkpoint)
        self.reporter.phase_started("export")
        artifacts = export_model(model, self.workdir / "export", self.spec.export_tflite)
        probabilities = model.predict(self.data.x_test, batch_size=256, verbose=0)
        artifacts.append(
            write_evaluation(
                probabilities, self.data.y_test, self.data.info.num_classes, self.workdir / "export"
            )
        )
        return TrainingOutcome(
            metrics, params.as_strings(), artifacts, checkpoint.state.epochs_completed
        )

    def search(self, board: SearchBoard, job_id: str) -> TrialParams:
        """The search phase alone: open it, run its queued trials here while other
        workers run theirs, wait for all, and return the best trial's parameters."""
        search = self.spec.search
        assert search is not None
        board.open(job_id, search)
        while True:
            ticket = board.take(job_id)
            if ticket is not None:
                self.runner.run_trial(ticket, board)
            elif board.left(job_id) == 0:
                break
            else:
                self._wait(TRIALS_POLL_S)
        return params_with(base_params(self.spec), board.best_params(job_id))

    def _wait(self, seconds: float) -> None:
        """Sleep, checking for a stop request as often as a batch would."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if (reason := self.should_stop()) is not None:
                raise StopRequested(reason)
            time.sleep(0.05)

    def _train_final(
        self, params: TrialParams, checkpoint: Checkpoint | None
    ) -> tuple[keras.Model, Checkpoint]:
        hp = self.spec.hyperparameters
        stopping_rule = hp.early_stopping

        def build() -> keras.Model:
            data = self.data
            return build_model(self.spec.model, params, data.info, data.mean, data.std)

        if checkpoint is None:
            keras.utils.set_random_seed(self.spec.seed)
            model = build()
            state = CheckpointState(0, asdict(params), StoppingState())
        else:
            model = checkpoint.load_model(build)
            state = checkpoint.state
            self.reporter.resumed(state.epochs_completed)
            log.info("resuming from checkpoint", extra={"epoch": state.epochs_completed})
        best_weights: list[Any] | None = None
        if stopping_rule is not None and checkpoint is not None and state.stopping.best_epoch:
            best_weights = checkpoint.best_weights(model)
        final = checkpoint
        if not state.finished:
            final = self._fit_final(model, params, state, best_weights) or checkpoint
        assert final is not None, "a finished training has a checkpoint"
        if stopping_rule is not None and final.state.stopping.best_epoch:
            model.set_weights(final.best_weights(model))
        return model, final

    def _fit_final(
        self,
        model: keras.Model,
        params: TrialParams,
        state: CheckpointState,
        best_weights: list[Any] | None,
    ) -> Checkpoint | None:
        """Train the epochs left. Each epoch's arrays are copied on this thread; its
        event, and its checkpoint when one is due, are written behind the training
        (services.training.epoch_writes); a failed write (ClaimLost, say) stops the
        training at its next batch and is raised. The last checkpoint written."""
        hp = self.spec.hyperparameters
        rule = hp.early_stopping
        writes = FinalEpochWrites(
            self.checkpoints, self.reporter, hp.epochs, self.checkpoint_interval_s, self.clock
        )

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            nonlocal best_weights
            state.epochs_completed = epoch
            if rule is not None:
                higher = rule.monitor == "val_accuracy"
                if state.stopping.update(metrics[rule.monitor], epoch, higher, rule.min_delta):
                    best_weights = model.get_weights()
                if state.stopping.wait >= rule.patience:
                    model.stop_training = True
                    state.finished = True
            state.finished = state.finished or epoch >= hp.epochs
            writes.epoch_ended(self.checkpoints.snapshot(model, best_weights, state), metrics)

        stop = writes.stop_check(self.should_stop)
        try:
            self.runner.fit(
                model, params, hp.epochs, state.epochs_completed, on_epoch, self.spec.seed, stop
            )
        except BaseException as stopped:
            if (failure := writes.close(stopped)) is not None:
                raise failure from stopped
            raise
        if (failure := writes.close()) is not None:
            raise failure
        return writes.written[-1] if writes.written else None

    def _evaluate(self, model: keras.Model, checkpoint: Checkpoint) -> dict[str, float]:
        batch = 256
        data = self.data
        test = model.evaluate(
            make_dataset(data.x_test, data.y_test, batch), verbose=0, return_dict=True
        )
        val = model.evaluate(
            make_dataset(data.x_val, data.y_val, batch), verbose=0, return_dict=True
        )
        return {
            "accuracy": float(test["accuracy"]),
            "loss": float(test["loss"]),
            "val_accuracy": float(val["accuracy"]),
            "val_loss": float(val["loss"]),
            "epochs": float(checkpoint.state.epochs_completed),
        }
