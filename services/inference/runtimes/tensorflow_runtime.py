"""The TensorFlow runtime: a SavedModel's `serving_default` signature, on a GPU when visible.

The registry artifact is `saved_model.tar` (the SavedModel's own files); it is unpacked
beside itself once. When TensorFlow sees a GPU the model is placed on `/GPU:0`, with
memory growth, or with a memory cap when the `gpu_memory_limit_mb` option is set, so
several versions (and the process's other users) share the card. TensorFlow releases the
GIL inside kernels, so batches on several worker threads overlap."""

from __future__ import annotations

import functools
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from services.inference.runtimes import Signature, TensorSpec
from shared.serving_names import SIGNATURE


@functools.cache
def configure_gpus(memory_limit_mb: int) -> int:
    """Set memory growth or a cap on every GPU, once per process; returns the GPU count."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        if memory_limit_mb > 0:
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)]
            )
        else:
            tf.config.experimental.set_memory_growth(gpu, True)
    return len(gpus)


def saved_model_folder(path: Path) -> Path:
    """`path` itself when it is a SavedModel folder, else the folder its tar unpacks to."""
    if path.is_dir():
        return path
    folder = path.with_name(path.name.removesuffix(".tar") + ".d")
    if not (folder / "saved_model.pb").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path) as archive:
            archive.extractall(folder, filter="data")
    return folder


def _spec(name: str, spec: tf.TensorSpec) -> TensorSpec:
    return TensorSpec(name, np.dtype(spec.dtype.as_numpy_dtype), tuple(spec.shape.as_list()))


class TensorFlowRuntime:
    name = "tensorflow"

    def __init__(self, loaded: Any, device: str) -> None:
        self._loaded = loaded
        self._function = loaded.signatures[SIGNATURE]
        self._device = device
        _, inputs = self._function.structured_input_signature
        outputs = self._function.structured_outputs
        self.signature = Signature(
            tuple(_spec(name, spec) for name, spec in sorted(inputs.items())),
            tuple(_spec(name, spec) for name, spec in sorted(outputs.items())),
        )
        # Keras exports list their variables; a SavedModel of a plain tf.Module may not.
        variables = list(getattr(loaded, "variables", ()))
        self.device = variables[0].device if variables else device

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with tf.device(self._device):
            outputs = self._function(
                **{name: tf.convert_to_tensor(value) for name, value in inputs.items()}
            )
        return {name: value.numpy() for name, value in outputs.items()}

    def unload(self) -> None:
        self._function = None
        self._loaded = None


def load(path: Path | None, options: Mapping[str, Any]) -> TensorFlowRuntime:
    if path is None:
        raise ValueError("the tensorflow runtime needs a SavedModel path")
    gpus = configure_gpus(int(options.get("gpu_memory_limit_mb", 0)))
    device = "/GPU:0" if gpus else "/CPU:0"
    with tf.device(device):
        loaded = tf.saved_model.load(str(saved_model_folder(path)))
    if SIGNATURE not in loaded.signatures:
        raise ValueError(f"the SavedModel has no {SIGNATURE!r} signature")
    return TensorFlowRuntime(loaded, device)
