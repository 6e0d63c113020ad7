"""The trainer on its own (no sockets): accuracy, checkpoints and resume, cancel, export."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
import tensorflow as tf

from services.training.checkpoints import (
    ARRAYS_FILE,
    BEST_WEIGHTS_FILE,
    LATEST_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointDir,
    CheckpointState,
    StoppingState,
)
from services.training.evaluation import confusion_matrix
from services.training.jobs import EventKind, StopRequested
from services.training.models import build_model
from services.training.search import SearchBoard, study_name, study_storage
from services.training.spec import (
    EarlyStopping,
    Hyperparameters,
    JobSpec,
    MlpTemplate,
    base_params,
)
from services.training.store import JobStore
from services.training.trainer import Trainer
from shared.db import make_engine, sqlite_url
from tests.training.conftest import DIGITS

REPO = Path(__file__).resolve().parents[2]


class Recorder:
    """Collects what the trainer reports (the job store's role in the service)."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, int, dict[str, float]]] = []
        self.phases: list[str] = []
        self.resumed_at: list[int] = []
        self.checkpoints: list[int] = []
        self.seconds: list[float | None] = []

    def phase_started(self, phase: str) -> None:
        self.phases.append(phase)

    def epoch_ended(
        self,
        trial: int,
        epoch: int,
        epochs: int,
        metrics: dict[str, float],
        seconds: float | None = None,
    ) -> None:
        self.epochs.append((trial, epoch, metrics))
        self.seconds.append(seconds)

    def resumed(self, epoch: int) -> None:
        self.resumed_at.append(epoch)

    def checkpoint_saved(self, checkpoint) -> None:
        self.checkpoints.append(checkpoint.state.epochs_completed)


def never_stop() -> None:
    return None


def stop_after_batches(count: int, reason: str = "shutdown"):
    seen = [0]

    def check() -> str | None:
        seen[0] += 1
        return reason if seen[0] > count else None

    return check


def digits_spec(epochs: int, **hyperparameters) -> JobSpec:
    return JobSpec(
        dataset_version=DIGITS,
        model=MlpTemplate(hidden_units=(128, 64)),
        hyperparameters=Hyperparameters(epochs=epochs, **hyperparameters),
    )


def builder(spec: JobSpec, digits) -> Callable[[], keras.Model]:  # type: ignore[no-untyped-def]
    """What the trainer builds for `spec` (compiled, untrained): a checkpoint's restore."""
    return lambda: build_model(spec.model, base_params(spec), digits.info, digits.mean, digits.std)


def trained(build: Callable[[], keras.Model], digits, epochs: int) -> keras.Model:  # type: ignore[no-untyped-def]
    model = build()
    model.fit(digits.x_train, digits.y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


def test_digits_mlp_reaches_95_percent_test_accuracy(digits, tmp_path):
    started = time.perf_counter()
    recorder = Recorder()
    outcome = Trainer(digits_spec(20), digits, tmp_path, recorder, never_stop).run()
    elapsed = time.perf_counter() - started
    print(f"digits mlp: test accuracy {outcome.metrics['accuracy']:.4f} in {elapsed:.1f} s")
    assert outcome.metrics["accuracy"] >= 0.95
    assert outcome.epochs_completed == 20
    assert len(recorder.seconds) == 20 and all(s and s > 0 for s in recorder.seconds), (
        "each epoch timed on the training thread"
    )


def ticks(step: float = 1.0):
    """A clock that moves `step` seconds each time it is read (one read an epoch)."""
    now = [0.0]

    def clock() -> float:
        now[0] += step
        return now[0] - step

    return clock


def test_a_checkpoint_interval_checkpoints_the_first_epoch_past_it_and_the_last(digits, tmp_path):
    spec = digits_spec(6, batch_size=128)
    recorder = Recorder()
    trainer = Trainer(
        spec, digits, tmp_path, recorder, never_stop, checkpoint_interval_s=2.5, clock=ticks()
    )
    outcome = trainer.run()
    # Epochs end at 1, 2, 3 (2.5 s past the start: checkpoint), 4, 5, and 6 (the last).
    assert [epoch for _, epoch, _ in recorder.epochs] == [1, 2, 3, 4, 5, 6]
    assert recorder.checkpoints == [3, 6] and outcome.epochs_completed == 6
    assert CheckpointDir(tmp_path / "checkpoints").latest().state.epochs_completed == 6

    every = Recorder()
    Trainer(spec, digits, tmp_path / "every", every, never_stop, checkpoint_interval_s=0.0).run()
    assert every.checkpoints == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(("reason", "kept"), [("shutdown", [2]), ("cancelled", [])])
def test_a_shutdown_within_the_interval_checkpoints_the_last_complete_epoch(
    digits, tmp_path, reason, kept
):
    spec = digits_spec(4, batch_size=128)
    batches_per_epoch = int(np.ceil(len(digits.x_train) / 128))
    stopped = Recorder()
    stop = stop_after_batches(2 * batches_per_epoch + 1, reason)
    with pytest.raises(StopRequested):
        # Stopped in epoch 3, an hour's interval from any checkpoint.
        Trainer(spec, digits, tmp_path, stopped, stop, checkpoint_interval_s=3600.0).run()
    assert [epoch for _, epoch, _ in stopped.epochs] == [1, 2] and stopped.checkpoints == kept
    latest = CheckpointDir(tmp_path / "checkpoints").latest()
    assert (latest.state.epochs_completed if latest else None) == (kept[-1] if kept else None)
    if kept:
        resumed = Recorder()
        Trainer(spec, digits, tmp_path, resumed, never_stop, checkpoint_interval_s=3600.0).run()
        assert resumed.resumed_at == [2] and [e for _, e, _ in resumed.epochs] == [3, 4]


def test_resume_continues_from_the_checkpointed_epoch_with_optimizer_state(digits, tmp_path):
    spec = digits_spec(6, batch_size=64)
    batches_per_epoch = int(np.ceil(len(digits.x_train) / 64))
    build = builder(spec, digits)

    first = Recorder()
    with pytest.raises(StopRequested):
        # Stops in the middle of epoch 3: epochs 1 and 2 are checkpointed, 3 is not.
        Trainer(spec, digits, tmp_path, first, stop_after_batches(2 * batches_per_epoch + 3)).run()
    assert [epoch for _, epoch, _ in first.epochs] == [1, 2]
    checkpoint = CheckpointDir(tmp_path / "checkpoints").latest()
    assert checkpoint is not None and checkpoint.state.epochs_completed == 2
    restored = checkpoint.load_model(build)
    assert int(restored.optimizer.iterations.numpy()) == 2 * batches_per_epoch

    second = Recorder()
    outcome = Trainer(spec, digits, tmp_path, second, never_stop).run()
    assert second.resumed_at == [2]
    assert [epoch for _, epoch, _ in second.epochs] == [3, 4, 5, 6]
    assert outcome.epochs_completed == 6
    final = CheckpointDir(tmp_path / "checkpoints").latest()
    assert int(final.load_model(build).optimizer.iterations.numpy()) == 6 * batches_per_epoch


def test_a_checkpoint_restores_weights_optimizer_moments_and_best_weights(digits, tmp_path):
    spec = digits_spec(3)
    build = builder(spec, digits)

    model = trained(build, digits, 1)
    best = model.get_weights()
    model.fit(digits.x_train, digits.y_train, epochs=1, batch_size=32, verbose=0)
    state = CheckpointState(2, asdict(base_params(spec)), StoppingState(0.5, 1, 1))
    checkpoints = CheckpointDir(tmp_path / "checkpoints")
    written = checkpoints.write(checkpoints.snapshot(model, best, state))
    restored = checkpoints.latest().load_model(build)
    for kept, read in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, read)
    variables = zip(model.optimizer.variables, restored.optimizer.variables, strict=True)
    for kept, read in variables:  # the step, the learning rate, Adam's two moments
        np.testing.assert_array_equal(kept.numpy(), read.numpy())
    for kept, read in zip(best, written.best_weights(restored), strict=True):
        np.testing.assert_array_equal(kept, read)


def test_a_checkpoint_written_before_weights_npz_still_resumes(digits, tmp_path):
    # Folders of the earlier format (the whole `.keras` model and the best weights' .h5).
    spec = digits_spec(3)
    build = builder(spec, digits)

    model = trained(build, digits, 1)
    best = model.get_weights()
    folder = tmp_path / "checkpoints" / "epoch-00001"
    folder.mkdir(parents=True)
    model.save_weights(folder / BEST_WEIGHTS_FILE)
    model.fit(digits.x_train, digits.y_train, epochs=1, batch_size=32, verbose=0)
    model.save(folder / MODEL_FILE)
    state = CheckpointState(1, asdict(base_params(spec)), StoppingState(0.5, 1, 0))
    (folder / STATE_FILE).write_text(state.to_json())
    (tmp_path / "checkpoints" / LATEST_FILE).write_text(folder.name)
    checkpoint = CheckpointDir(tmp_path / "checkpoints").latest()
    restored = checkpoint.load_model(build)
    for kept, read in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, read)
    assert int(restored.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    for kept, read in zip(best, checkpoint.best_weights(restored), strict=True):
        np.testing.assert_array_equal(kept, read)
    outcome = Trainer(spec, digits, tmp_path, Recorder(), never_stop).run()
    assert outcome.epochs_completed == 3
    assert (CheckpointDir(tmp_path / "checkpoints").latest().path / ARRAYS_FILE).is_file()


def test_finished_training_is_not_repeated_on_restart(digits, tmp_path):
    spec = digits_spec(2)
    Trainer(spec, digits, tmp_path, Recorder(), never_stop).run()
    again = Recorder()
    outcome = Trainer(spec, digits, tmp_path, again, never_stop).run()
    assert again.resumed_at == [2] and again.epochs == []
    assert outcome.epochs_completed == 2


def test_early_stopping_keeps_the_best_epoch(digits, tmp_path):
    # A learning rate this large makes validation loss worse after the first epochs.
    spec = digits_spec(30, learning_rate=0.05, early_stopping=EarlyStopping("val_loss", patience=2))
    recorder = Recorder()
    outcome = Trainer(spec, digits, tmp_path, recorder, never_stop).run()
    state = CheckpointDir(tmp_path / "checkpoints").latest().state
    assert state.finished and outcome.epochs_completed < 30
    assert state.stopping.wait >= 2
    best = min(metrics["val_loss"] for _, _, metrics in recorder.epochs)
    assert outcome.metrics["val_loss"] == pytest.approx(best, rel=1e-4)


def test_cancel_stops_at_the_next_batch(digits, tmp_path):
    with pytest.raises(StopRequested) as stopped:
        Trainer(
            digits_spec(5), digits, tmp_path, Recorder(), stop_after_batches(1, "cancelled")
        ).run()
    assert stopped.value.reason == "cancelled"
    assert CheckpointDir(tmp_path / "checkpoints").latest() is None


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("export")
    spec = JobSpec(
        dataset_version=DIGITS,
        model=MlpTemplate(hidden_units=(32,)),
        hyperparameters=Hyperparameters(epochs=2),
        export_tflite=True,
    )
    outcome = Trainer(spec, digits, workdir, Recorder(), never_stop).run()
    model = keras.models.load_model(workdir / "export" / "model.keras")
    return workdir, outcome, model


def test_artifacts_are_the_saved_model_tar_keras_tflite_and_the_evaluation(exported):
    _, outcome, _ = exported
    assert [a.name for a in outcome.artifacts] == [
        "saved_model.tar",
        "model.keras",
        "model.tflite",
        "evaluation.json",
    ]
    assert all(a.path.stat().st_size > 0 for a in outcome.artifacts)


def test_the_confusion_matrix_counts_true_classes_by_row():
    truth = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    assert confusion_matrix(truth, predicted, 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_saved_model_from_the_tar_equals_the_in_memory_model(exported, digits, tmp_path):
    workdir, outcome, model = exported
    with tarfile.open(workdir / "export" / "saved_model.tar") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    loaded = tf.saved_model.load(str(tmp_path / "unpacked"))
    serve = loaded.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["x"]
    raw = digits.x_test[:50]
    served = serve(x=tf.constant(raw))["output_0"].numpy()
    expected = np.asarray(model(raw, training=False))
    assert np.max(np.abs(served - expected)) < 1e-5
    # Raw pixels in, probabilities out: the normalization is inside the model.
    assert np.allclose(served.sum(axis=1), 1.0, atol=1e-5)
    assert model.get_layer("normalization") is not None


def test_keras_file_reloads_on_jax_and_agrees(exported, digits, tmp_path):
    workdir, _, model = exported
    raw = digits.x_test[:20]
    np.save(tmp_path / "x.npy", raw)
    script = (
        "import sys, numpy as np, keras\n"
        "assert keras.backend.backend() == 'jax'\n"
        "model = keras.models.load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], np.asarray(model.predict(np.load(sys.argv[2]), verbose=0)))\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(workdir / "export" / "model.keras"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"},
        cwd=REPO,
        check=True,
        timeout=120,
    )
    on_jax = np.load(tmp_path / "y.npy")
    assert np.max(np.abs(on_jax - np.asarray(model(raw, training=False)))) < 1e-5


def test_quantized_tflite_predicts_like_the_model(exported, digits):
    workdir, _, model = exported
    interpreter = tf.lite.Interpreter(model_path=str(workdir / "export" / "model.tflite"))
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    (target,) = interpreter.get_output_details()
    raw = digits.x_test[:100]
    predictions = []
    for row in raw:
        interpreter.set_tensor(source["index"], row[None, :].astype(np.float32))
        interpreter.invoke()
        predictions.append(interpreter.get_tensor(target["index"])[0])
    lite = np.argmax(np.array(predictions), axis=1)
    full = np.argmax(np.asarray(model(raw, training=False)), axis=1)
    assert np.mean(lite == full) >= 0.95


def search_on_board(spec: JobSpec, tmp_path: Path) -> tuple[JobStore, SearchBoard]:
    """A running job of `spec` in a job store on SQLite, and a worker's board on it."""
    store = JobStore(make_engine(sqlite_url(tmp_path / "jobs.db")))
    store.create("job-a", spec)
    store.claim_next("worker", 60)
    return store, SearchBoard(store, "worker", 60)


def test_a_stopped_search_resumes_without_running_finished_trials_again(digits, tmp_path):
    from services.training.spec import SearchParameter, SearchSpace

    spec = JobSpec(
        dataset_version=DIGITS,
        model=MlpTemplate(hidden_units=(16,)),
        hyperparameters=Hyperparameters(epochs=1),
        search=SearchSpace(
            (SearchParameter("learning_rate", "float", 1e-4, 1e-2, log=True),),
            max_trials=3,
            epochs_per_trial=1,
        ),
    )
    store, board = search_on_board(spec, tmp_path)

    def stop_after_first_trial() -> str | None:
        return "shutdown" if store.get("job-a").trials else None

    with pytest.raises(StopRequested):
        Trainer(spec, digits, tmp_path / "first", Recorder(), stop_after_first_trial).run(
            board, "job-a"
        )
    assert [t["number"] for t in store.get("job-a").trials] == [0]
    # The stopped trial went back to the queue, and runs again from its start.
    assert board.left("job-a") == 2 and not board.held()
    outcome = Trainer(spec, digits, tmp_path / "again", Recorder(), never_stop).run(board, "job-a")
    trials = store.get("job-a").trials
    assert sorted(t["number"] for t in trials) == [0, 1, 2]
    best = max(trials, key=lambda t: t["objective"])
    assert outcome.params["learning_rate"] == repr(best["params"]["learning_rate"])
    assert outcome.metrics["epochs"] == 1.0
    # Optuna's study, in the same database, knows the stopped attempt as failed.
    study = optuna.load_study(study_name=study_name("job-a"), storage=study_storage(store.engine))
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"]


def test_a_median_pruner_stops_trials_that_fall_behind(digits, tmp_path):
    from services.training.spec import SearchParameter, SearchSpace

    spec = JobSpec(
        dataset_version=DIGITS,
        model=MlpTemplate(hidden_units=(16,)),
        hyperparameters=Hyperparameters(epochs=1),
        search=SearchSpace(
            # From hopeless to good learning rates: the slow ones fall behind at once.
            (SearchParameter("learning_rate", "float", 1e-6, 3e-2, log=True),),
            max_trials=8,
            epochs_per_trial=4,
            pruner="median",
        ),
    )
    store, board = search_on_board(spec, tmp_path)
    outcome = Trainer(spec, digits, tmp_path, Recorder(), never_stop).run(board, "job-a")
    trials = store.get("job-a").trials
    pruned = [t for t in trials if t["pruned"]]
    assert len(trials) == 8 and pruned
    epochs = [e.payload for e in store.events_since("job-a", 0) if e.kind is EventKind.EPOCH]
    epochs_of = {n: sum(1 for e in epochs if e["trial"] == n + 1) for n in range(8)}
    # A pruned trial ran fewer than its four epochs; the first two (the pruner's start-up
    # trials) ran all of them.
    assert all(epochs_of[t["number"]] < 4 for t in pruned)
    assert epochs_of[0] == epochs_of[1] == 4
    best = max(trials, key=lambda t: t["objective"] if not t["pruned"] else -1)
    assert outcome.params["learning_rate"] == repr(best["params"]["learning_rate"])


def test_a_reused_trial_model_trains_exactly_as_a_fresh_one(digits):
    from dataclasses import replace

    from services.training.spec import base_params
    from services.training.trainer import TrialModels, make_dataset

    spec = JobSpec(DIGITS, MlpTemplate((16,)), Hyperparameters(epochs=1, batch_size=64))
    params = base_params(spec)

    def train(model: keras.Model) -> list[np.ndarray]:
        keras.utils.set_random_seed(7)
        data = make_dataset(digits.x_train, digits.y_train, 64, 7)
        model.fit(data, epochs=1, shuffle=False, verbose=0)
        return model.get_weights()

    reused = TrialModels(spec, digits)
    first = reused.model_for(replace(params, learning_rate=0.01), seed=1)
    train(first)
    second = reused.model_for(replace(params, learning_rate=0.002), seed=2)
    assert second is first, "same architecture and optimizer: the compiled model again"
    fresh = TrialModels(spec, digits).model_for(replace(params, learning_rate=0.002), seed=2)
    assert fresh is not first
    for got, want in zip(train(second), train(fresh), strict=True):
        np.testing.assert_array_equal(got, want)
    assert float(second.optimizer.learning_rate) == pytest.approx(0.002)
    other = reused.model_for(replace(params, hidden_units=(8,)), seed=3)
    assert other is not first
