"""A job with `workers: 2` on its own (no service): two real processes of one
MultiWorkerMirroredStrategy training on loopback. The chief's epochs reach the reporter
and its export becomes the outcome; a stop or a failing process leaves no process behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from services.training.jobs import StopRequested
from services.training.multiworker import MultiWorkerFailed, MultiWorkerTraining
from services.training.spec import Hyperparameters, JobSpec, KerasJsonModel, MlpTemplate
from tests.training.conftest import DIGITS
from tests.training.test_trainer import Recorder, never_stop


def two_workers(epochs: int, model: MlpTemplate | KerasJsonModel | None = None) -> JobSpec:
    return JobSpec(
        DIGITS,
        model or MlpTemplate((32,)),
        Hyperparameters(epochs=epochs, batch_size=64, learning_rate=0.005),
        workers=2,
    )


def distributed_processes_under(folder: Path) -> list[int]:
    """Live processes of `services.training.distributed` working in `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(") ")[1].split()[0]
        except OSError:
            continue
        mine = "services.training.distributed" in command and str(folder) in command
        if mine and state != "Z":
            found.append(int(entry.name))
    return found


def test_two_processes_train_one_model_that_is_exported_and_reported(digits, tmp_path):
    recorder = Recorder()
    outcome = MultiWorkerTraining(two_workers(4), digits, tmp_path, recorder, never_stop).run()
    assert [(trial, epoch) for trial, epoch, _ in recorder.epochs] == [(0, e) for e in (1, 2, 3, 4)]
    assert all(np.isfinite(metrics["loss"]) for _, _, metrics in recorder.epochs)
    assert outcome.metrics["accuracy"] > 0.8, "the two workers trained one model together"
    assert set(outcome.metrics) == {"accuracy", "loss", "val_accuracy", "val_loss", "epochs"}
    assert outcome.params["workers"] == "2" and outcome.epochs_completed == 4
    assert [a.name for a in outcome.artifacts] == [
        "saved_model.tar",
        "model.keras",
        "evaluation.json",
    ]
    assert all(a.path.is_file() and a.path.stat().st_size > 0 for a in outcome.artifacts)
    assert distributed_processes_under(tmp_path) == []


def test_a_stop_kills_every_process(digits, tmp_path):
    progress = tmp_path / "multiworker" / "progress.jsonl"

    def cancel_after_an_epoch() -> str | None:
        return "cancelled" if progress.exists() else None

    with pytest.raises(StopRequested) as stopped:
        MultiWorkerTraining(
            two_workers(200), digits, tmp_path, Recorder(), cancel_after_an_epoch
        ).run()
    assert stopped.value.reason == "cancelled"
    assert distributed_processes_under(tmp_path) == []
    assert not (tmp_path / "export" / "metrics.json").exists()


def test_a_failing_process_fails_the_training_with_its_log(digits, tmp_path):
    spec = two_workers(2, KerasJsonModel('{"not": "a model"}'))
    with pytest.raises(MultiWorkerFailed) as failed:
        MultiWorkerTraining(spec, digits, tmp_path, Recorder(), never_stop).run()
    assert "exited with" in str(failed.value) and "Traceback" in str(failed.value)
    assert distributed_processes_under(tmp_path) == []
    assert os.listdir(tmp_path / "multiworker")
