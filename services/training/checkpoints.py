"""Checkpoints of a job's final training (at epoch ends: services.training.epoch_writes
says which), written so that a SIGKILL never leaves a half-written one behind.

A checkpoint is a folder `epoch-<n>` under the job's checkpoint directory holding the
arrays of the training (`weights.npz`: the model's weights, its optimizer's variables
with the step count and moments, and the weights of the best epoch so far, for early
stopping) and `state.json` (epochs done, early-stopping counters, the hyperparameters in
use). The model itself is rebuilt from the job's spec and those hyperparameters, so a
checkpoint costs an array copy and one uncompressed write (about 1 ms for the digits MLP,
where saving the whole `.keras` model took 24 ms of the training thread every epoch).
Folders written before, holding `model.keras` and `best.weights.h5`, are still read.
It is written into a temp folder, fsynced and renamed into place; then the `LATEST`
pointer file is replaced atomically. A restart reads `LATEST`, so it sees the previous
checkpoint or the new one, never a mixture."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.blobstore import fsync_path

if TYPE_CHECKING:
    import keras

ARRAYS_FILE = "weights.npz"
# What checkpoints held before `weights.npz` (read, never written).
MODEL_FILE = "model.keras"
BEST_WEIGHTS_FILE = "best.weights.h5"
STATE_FILE = "state.json"
LATEST_FILE = "LATEST"


@dataclass
class StoppingState:
    """Early-stopping counters, kept across restarts."""

    best: float | None = None
    best_epoch: int = 0
    wait: int = 0

    def update(self, value: float, epoch: int, higher_is_better: bool, min_delta: float) -> bool:
        """Record the monitored value of `epoch`; True when it improved on the best."""
        if self.best is None:
            improved = True
        elif higher_is_better:
            improved = value > self.best + min_delta
        else:
            improved = value < self.best - min_delta
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
        return improved


@dataclass
class CheckpointState:
    epochs_completed: int
    # The hyperparameters the final model trains with (the best trial's, after a search).
    params: dict[str, Any]
    stopping: StoppingState
    # True once training is over (all epochs, or early stopping fired).
    finished: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CheckpointState:
        data = json.loads(text)
        return cls(
            epochs_completed=data["epochs_completed"],
            params=data["params"],
            stopping=StoppingState(**data["stopping"]),
            finished=data["finished"],
        )


@dataclass
class Checkpoint:
    path: Path
    state: CheckpointState

    def load_model(self, build: Callable[[], keras.Model]) -> keras.Model:
        """The model as it was: `build` makes it anew (compiled), then its weights and its
        optimizer's variables are put back."""
        if (self.path / MODEL_FILE).is_file():
            # Keras only here, on the training thread: the service's start imports none of it.
            import keras

            return keras.models.load_model(self.path / MODEL_FILE)
        model = build()
        with np.load(self.path / ARRAYS_FILE) as arrays:
            model.set_weights(_listed(arrays, "model"))
            optimizer = model.optimizer
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
            for variable, value in zip(
                optimizer.variables, _listed(arrays, "optimizer"), strict=True
            ):
                variable.assign(value)
        return model

    def best_weights(self, model: keras.Model) -> list[np.ndarray]:
        """The weights of the best epoch so far (early stopping), for `model`."""
        if (self.path / BEST_WEIGHTS_FILE).is_file():
            current = model.get_weights()
            model.load_weights(self.path / BEST_WEIGHTS_FILE)
            best = model.get_weights()
            model.set_weights(current)
            return best
        with np.load(self.path / ARRAYS_FILE) as arrays:
            return _listed(arrays, "best")


@dataclass(frozen=True)
class CheckpointArrays:
    """A checkpoint not yet written: the training's arrays and its state, copied."""

    # np.savez's keyword arguments: names to arrays.
    arrays: dict[str, Any]
    state: CheckpointState


def _listed(arrays: Any, prefix: str) -> list[np.ndarray]:
    count = sum(1 for name in arrays.files if name.startswith(f"{prefix}_"))
    return [arrays[f"{prefix}_{index}"] for index in range(count)]


class CheckpointDir:
    """The checkpoints of one job; only the latest is kept."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def latest(self) -> Checkpoint | None:
        pointer = self.root / LATEST_FILE
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        return Checkpoint(path, CheckpointState.from_json((path / STATE_FILE).read_text()))

    @staticmethod
    def snapshot(
        model: keras.Model, best_weights: list[Any] | None, state: CheckpointState
    ) -> CheckpointArrays:
        """The training as it is now, copied (on the training thread, between epochs)."""
        arrays = {f"model_{i}": w for i, w in enumerate(model.get_weights())}
        for i, variable in enumerate(model.optimizer.variables):
            arrays[f"optimizer_{i}"] = variable.numpy()
        for i, weight in enumerate(best_weights or []):
            arrays[f"best_{i}"] = weight
        return CheckpointArrays(arrays, CheckpointState.from_json(state.to_json()))

    def write(self, snapshot: CheckpointArrays) -> Checkpoint:
        """Write a snapshot as the latest checkpoint (on any thread, one at a time)."""
        state = snapshot.state
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        try:
            np.savez(staging / ARRAYS_FILE, **snapshot.arrays)
            (staging / STATE_FILE).write_text(state.to_json())
            for written in staging.iterdir():
                fsync_path(written)
            fsync_path(staging)
            final = self.root / f"epoch-{state.epochs_completed:05d}"
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._point_at(final.name)
        for stale in self.root.iterdir():
            if stale.is_dir() and stale.name != final.name:
                shutil.rmtree(stale, ignore_errors=True)
        return Checkpoint(final, state)

    def _point_at(self, name: str) -> None:
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=".latest-")
        with os.fdopen(fd, "w") as handle:
            handle.write(name)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.root / LATEST_FILE)
        fsync_path(self.root)
