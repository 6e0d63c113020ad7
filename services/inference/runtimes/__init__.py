"""Pluggable model runtimes: what the inference core needs from a framework, and no more.

A runtime loads one model version from a local path, describes its signature (input and
output names, dtypes, shapes with None for the row dimension), runs `predict` on a batch
of numpy arrays from a worker thread, and says where its weights live. Each runtime
imports its framework inside its own module, which `load_runtime` imports only when that
runtime is asked for: a machine with JAX and no TensorFlow serves the `keras_jax` runtime.
A model may name `auto` instead of a runtime: each of its versions is then loaded by the
first runtime of `PREFERENCE` whose artifact it has, so a float SavedModel version and
its compressed `.tflite` one serve side by side."""

from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    # The full shape, the row dimension first; None where any size is accepted.
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)


class Runtime(Protocol):
    name: str
    signature: Signature
    # Where the weights live, e.g. `/job:localhost/replica:0/task:0/device:GPU:0`, or `gpu:0`
    # for JAX.
    device: str

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def unload(self) -> None: ...


@dataclass(frozen=True)
class RuntimeKind:
    module: str
    # The registry artifact this runtime loads.
    artifact: str


RUNTIMES: dict[str, RuntimeKind] = {
    "tensorflow": RuntimeKind("services.inference.runtimes.tensorflow_runtime", "saved_model.tar"),
    "keras_jax": RuntimeKind("services.inference.runtimes.keras_jax_runtime", "model.keras"),
    "litert": RuntimeKind("services.inference.runtimes.litert_runtime", "model.tflite"),
    "noop": RuntimeKind("services.inference.runtimes.noop_runtime", ""),
}


# A model whose runtime is chosen per version, from the artifact the version has.
AUTO = "auto"
# `auto`'s order: the first runtime whose artifact a version has loads it.
PREFERENCE = ("tensorflow", "litert", "keras_jax")


def known_runtime(kind: str) -> str:
    """`kind` if it names a runtime or `auto`; else ValueError naming them."""
    if kind != AUTO and kind not in RUNTIMES:
        raise ValueError(f"unknown runtime {kind!r}; one of {sorted([*RUNTIMES, AUTO])}")
    return kind


def runtime_for(artifacts: Collection[str]) -> str:
    """The runtime `auto` picks for a registry version with these artifacts."""
    for kind in PREFERENCE:
        if RUNTIMES[kind].artifact in artifacts:
            return kind
    wanted = ", ".join(RUNTIMES[kind].artifact for kind in PREFERENCE)
    raise ValueError(f"no artifact a runtime loads among {sorted(artifacts)} (one of {wanted})")


def static_runtime(kind: str, path: Path | None) -> str:
    """`kind`, or with `auto` the runtime for a static version's file: a SavedModel folder
    or `.tar`, a `.tflite` or a `.keras` file."""
    if kind != AUTO:
        return kind
    if path is None:
        raise ValueError("an auto version needs a file")
    if path.is_dir():
        return "tensorflow"
    for runtime in PREFERENCE:
        if path.suffix == Path(RUNTIMES[runtime].artifact).suffix:
            return runtime
    raise ValueError(f"{path.name}: not a SavedModel folder nor a .tar, .tflite or .keras file")


def load_runtime(kind: str, path: Path | None, options: Mapping[str, Any]) -> Runtime:
    """Import runtime `kind`'s module (and so its framework) and load `path` with it."""
    try:
        module = importlib.import_module(RUNTIMES[kind].module)
    except KeyError:
        raise ValueError(f"unknown runtime {kind!r}; one of {sorted(RUNTIMES)}") from None
    runtime: Runtime = module.load(path, options)
    return runtime


def zero_inputs(signature: Signature, rows: int) -> dict[str, np.ndarray]:
    """A batch of `rows` zero rows for every input (free dimensions of size 1), for warmup."""
    return {
        spec.name: np.zeros(
            (rows, *(1 if dim is None else dim for dim in spec.shape[1:])), dtype=spec.dtype
        )
        for spec in signature.inputs
    }
