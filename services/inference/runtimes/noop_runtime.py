"""A runtime with no model: it returns its input as `output_0`, after an optional delay.

Served through the same batcher and protocols as a real model, it measures what the RPC
and batching path alone cost (the benchmark's "no-op" ceiling), and with `delay_ms` it
stands in for a model of known cost. Options: `inputs` (a list of {name, dtype, shape}
without the row dimension; default one float32 input `x` of 64 features) and `delay_ms`
(per batch)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from services.inference.runtimes import Signature, TensorSpec

DEFAULT_INPUTS = ({"name": "x", "dtype": "float32", "shape": [64]},)


class NoOpRuntime:
    name = "noop"
    device = "none"

    def __init__(self, signature: Signature, delay_s: float) -> None:
        self.signature = signature
        self._delay_s = delay_s

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._delay_s:
            time.sleep(self._delay_s)
        first = self.signature.inputs[0].name
        return {"output_0": inputs[first]}

    def unload(self) -> None:
        return None


def load(path: Path | None, options: Mapping[str, Any]) -> NoOpRuntime:
    specs = tuple(
        TensorSpec(item["name"], np.dtype(item["dtype"]), (None, *item["shape"]))
        for item in options.get("inputs", DEFAULT_INPUTS)
    )
    if not specs:
        raise ValueError("the noop runtime needs at least one input")
    output = TensorSpec("output_0", specs[0].dtype, specs[0].shape)
    return NoOpRuntime(Signature(specs, (output,)), float(options.get("delay_ms", 0)) / 1000)
