"""Tiny models for the inference tests, in the artifact forms the training service
registers: `saved_model.tar` (a Keras-3 `model.export()` SavedModel, signature
`serving_default` taking float32 `x` of 64 features) and `model.keras`."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

FEATURES = 64
CLASSES = 10


def build_digits_model(seed: int):
    """64 floats -> 10 class probabilities; the seed makes versions answer differently."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FEATURES,), name="x")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(hidden)
    return keras.Model(inputs, outputs)


def export_artifacts(model, folder: Path) -> dict[str, Path]:
    """Write `saved_model.tar` and `model.keras` of `model` under `folder`."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    saved_model = folder / "saved_model"
    signature = [tf.TensorSpec((None, FEATURES), tf.float32, name="x")]
    model.export(
        str(saved_model), format="tf_saved_model", input_signature=signature, verbose=False
    )
    tar_path = folder / "saved_model.tar"
    with tarfile.open(tar_path, "w") as archive:
        for path in sorted(saved_model.rglob("*")):
            archive.add(path, arcname=str(path.relative_to(saved_model)), recursive=False)
    keras_path = folder / "model.keras"
    model.save(keras_path)
    return {"saved_model.tar": tar_path, "model.keras": keras_path}


def digits_rows(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, FEATURES), dtype=np.float32)
