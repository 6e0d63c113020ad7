"""Where training data comes from: a small interface and an in-process implementation.

The trainer sees a dataset version as a `TrainingData`: train/validation/test arrays, the
feature shape, the class count and the train-split normalization statistics. A
`DataSource` answers `describe` (cheap: enough to validate a job before it is queued) and
`load` (the arrays). `ArrayDataSource` holds datasets in memory (tests, the bench, the
distributed worker's file input); the data service's implementation is in
`services.training.data_service_source`. The trainer always feeds Keras through `tf.data`
(`services.training.trainer`), whichever source the arrays came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from shared.errors import NotFound, invalid
from shared.names import name_problem

VALIDATION_SHARE = 0.1


@dataclass(frozen=True)
class DatasetInfo:
    """What validation needs to know about a dataset version without reading it."""

    version: str
    feature_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class TrainingData:
    info: DatasetInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    # Train-split statistics, shaped like one example (per element) or like its last
    # axis (per channel, as the data service gives them).
    mean: np.ndarray
    std: np.ndarray


class DataSource(Protocol):
    async def describe(self, dataset_version: str) -> DatasetInfo: ...

    async def load(self, dataset_version: str) -> TrainingData: ...


def check_dataset_version(dataset_version: str, field: str = "spec.dataset_version") -> None:
    """`name@digest` (or a plain name): the name part must follow the naming rule."""
    name = dataset_version.split("@", 1)[0]
    if problem := name_problem(name):
        raise invalid(field, f"dataset name {problem}")


def split_validation(
    x: np.ndarray, y: np.ndarray, share: float = VALIDATION_SHARE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The last `share` of the rows become the validation split (the data service has
    already shuffled deterministically), so every restart sees the same split."""
    cut = len(x) - max(1, int(round(len(x) * share)))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def training_data(
    version: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int | None = None,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
) -> TrainingData:
    """Carve validation out of train and fill in the statistics not given (from train)."""
    x_train = np.asarray(x_train, dtype=np.float32)
    x_test = np.asarray(x_test, dtype=np.float32)
    y_train = np.asarray(y_train, dtype=np.int64)
    y_test = np.asarray(y_test, dtype=np.int64)
    classes = num_classes if num_classes is not None else int(max(y_train.max(), y_test.max())) + 1
    mean = x_train.mean(axis=0) if mean is None else np.asarray(mean, np.float32)
    std = x_train.std(axis=0) if std is None else np.asarray(std, np.float32)
    x_fit, y_fit, x_val, y_val = split_validation(x_train, y_train)
    info = DatasetInfo(version, tuple(x_train.shape[1:]), classes)
    return TrainingData(
        info,
        x_fit,
        y_fit,
        x_val,
        y_val,
        x_test,
        y_test,
        mean.astype(np.float32),
        std.astype(np.float32),
    )


def digits_data(version: str = "digits@local", test_share: float = 0.2) -> TrainingData:
    """scikit-learn's 8x8 digits (1797 rows, 64 features, 10 classes), split by a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=test_share, random_state=0, stratify=digits.target
    )
    return training_data(version, x_train, y_train, x_test, y_test, num_classes=10)


class ArrayDataSource:
    """Datasets held in memory, by version; unknown versions are NOT_FOUND."""

    def __init__(self, datasets: dict[str, TrainingData]) -> None:
        self._datasets = datasets

    def _get(self, dataset_version: str) -> TrainingData:
        check_dataset_version(dataset_version)
        try:
            return self._datasets[dataset_version]
        except KeyError:
            raise NotFound("dataset version", dataset_version, "spec.dataset_version") from None

    async def describe(self, dataset_version: str) -> DatasetInfo:
        return self._get(dataset_version).info

    async def load(self, dataset_version: str) -> TrainingData:
        return self._get(dataset_version)


def save_npz(data: TrainingData, path: Path) -> None:
    """Write a dataset to one .npz file (the distributed worker's input in tests)."""
    np.savez(
        path,
        version=np.array(data.info.version),
        num_classes=np.array(data.info.num_classes),
        x_train=np.concatenate([data.x_train, data.x_val]),
        y_train=np.concatenate([data.y_train, data.y_val]),
        x_test=data.x_test,
        y_test=data.y_test,
        mean=data.mean,
        std=data.std,
    )


def load_npz(path: Path) -> TrainingData:
    with np.load(path) as arrays:
        return training_data(
            str(arrays["version"]),
            arrays["x_train"],
            arrays["y_train"],
            arrays["x_test"],
            arrays["y_test"],
            num_classes=int(arrays["num_classes"]),
            mean=arrays["mean"],
            std=arrays["std"],
        )
