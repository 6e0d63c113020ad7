"""The Keras-on-JAX runtime: a `.keras` archive run through XLA with `jax.jit`.

Keras picks its backend once per process from `KERAS_BACKEND`, so this runtime sets it to
`jax` before importing Keras and refuses to run in a process whose Keras uses another
backend. The weights are JAX arrays on JAX's default device (the GPU when JAX sees one);
`predict` calls one jitted stateless forward pass with them, compiled once per batch size
(the batcher pads to allowed sizes, and warmup compiles each). Loading keeps Keras's
safe mode, so an archive cannot smuggle in Python code."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from services.inference.runtimes import Signature, TensorSpec


def _import_keras_on_jax() -> Any:
    backend = os.environ.setdefault("KERAS_BACKEND", "jax")
    if backend != "jax":
        raise RuntimeError(f"the keras_jax runtime needs KERAS_BACKEND=jax, not {backend!r}")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"Keras was imported with the {keras.backend.backend()!r} backend in this process"
        )
    return keras


def _spec(name: str, tensor: Any) -> TensorSpec:
    return TensorSpec(name, np.dtype(tensor.dtype), tuple(tensor.shape))


class KerasJaxRuntime:
    name = "keras_jax"

    def __init__(self, model: Any) -> None:
        import jax

        self._model = model
        self._trainable = [v.value for v in model.trainable_variables]
        self._non_trainable = [v.value for v in model.non_trainable_variables]
        self._input_names = [tensor.name for tensor in model.inputs]
        self.signature = Signature(
            tuple(_spec(t.name, t) for t in model.inputs),
            tuple(_spec(f"output_{i}", t) for i, t in enumerate(model.outputs)),
        )
        weights = self._trainable + self._non_trainable
        if weights:
            device = next(iter(weights[0].devices()))
            self.device = f"{device.platform}:{device.id}"
        else:
            self.device = "none"

        def forward(trainable, non_trainable, inputs):
            outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
            return outputs

        self._forward = jax.jit(forward)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arguments = [inputs[name] for name in self._input_names]
        outputs = self._forward(
            self._trainable,
            self._non_trainable,
            arguments[0] if len(arguments) == 1 else arguments,
        )
        if not isinstance(outputs, list | tuple):
            outputs = [outputs]
        return {f"output_{i}": np.asarray(value) for i, value in enumerate(outputs)}

    def unload(self) -> None:
        self._trainable = []
        self._non_trainable = []
        self._model = None


def load(path: Path | None, options: Mapping[str, Any]) -> KerasJaxRuntime:
    if path is None:
        raise ValueError("the keras_jax runtime needs a .keras path")
    keras = _import_keras_on_jax()
    model = keras.saving.load_model(str(path), compile=False)
    return KerasJaxRuntime(model)
