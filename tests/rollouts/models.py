"""The model versions the rollout process tests roll out, trained here on scikit-learn's
digits (64 pixel features scaled to 0-1, 10 classes) and exported as the SavedModel tars
the inference service loads (signature `serving_default`: float32 `x` -> `output_0`):

- v1, a small network, and v2, a larger one that predicts better;
- v3: v2 that fails (an assertion in its graph) on rows whose pixel `FAILING_PIXEL` is
  brighter than `FAILING_ABOVE`, about a fifth of the digits;
- v4: v2's architecture trained on shuffled labels: it answers fast and without errors,
  and is right about one time in ten;
- v5: v2 that also waits `SLOW_MICROS` per batch (TensorFlow's SleepDataset op, so the
  wait is in the SavedModel itself and takes no CPU from the other versions), so it
  answers several times slower, with v2's predictions."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES = 64
FAILING_PIXEL = 19
FAILING_ABOVE = 0.85
SLOW_MICROS = 20_000


@dataclass(frozen=True)
class Digits:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def digits() -> Digits:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return Digits(x[:1200], y[:1200], x[1200:], y[1200:])


def _network(hidden: int, seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FEATURES,), name="x")
    hidden_layer = keras.layers.Dense(hidden, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(hidden_layer)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def trained(hidden: int, epochs: int, data: Digits, *, shuffle_labels: bool = False):
    model = _network(hidden, seed=hidden)
    labels = data.train_y
    if shuffle_labels:
        labels = np.random.default_rng(1).permutation(labels)
    model.fit(data.train_x, labels, epochs=epochs, batch_size=32, verbose=0)
    return model


def _tar(folder: Path) -> Path:
    tar_path = folder.with_suffix(".tar")
    with tarfile.open(tar_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return tar_path


def export(model, folder: Path, variant: str = "") -> Path:
    """`saved_model.tar` of `model`, wrapped as `variant` says ("", "failing", "slow")."""
    import tensorflow as tf

    signature = tf.TensorSpec((None, FEATURES), tf.float32, name="x")
    if not variant:
        model.export(
            str(folder), format="tf_saved_model", input_signature=[signature], verbose=False
        )
        return _tar(folder)

    class Wrapped(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[signature])
        def serve(self, x):
            probabilities = self.model(x)
            if variant == "failing":
                tf.debugging.assert_less_equal(
                    x[:, FAILING_PIXEL],
                    tf.constant(FAILING_ABOVE),
                    message="a pixel too bright for this version",
                )
            if variant == "slow":
                probabilities = _after_sleeping(probabilities)
            return {"output_0": probabilities}

    wrapped = Wrapped()
    tf.saved_model.save(wrapped, str(folder), signatures={"serving_default": wrapped.serve})
    return _tar(folder)


def _after_sleeping(tensor):
    """`tensor`, handed through a one-element dataset that sleeps before yielding it."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors(tensor)
    slept = tf.raw_ops.SleepDataset(
        input_dataset=dataset._variant_tensor,
        sleep_microseconds=tf.constant(SLOW_MICROS, tf.int64),
        output_types=[tensor.dtype],
        output_shapes=[tensor.shape],
    )
    return tf.data.experimental.from_variant(slept, dataset.element_spec).get_single_element()
