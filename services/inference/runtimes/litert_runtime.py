"""The LiteRT runtime: a `.tflite` model (the registry artifact `model.tflite`, which a
training job attaches when asked) run on the CPU by LiteRT's interpreter (PyPI
`ai-edge-litert`, with XNNPACK).

The model's `serving_default` signature names its inputs and outputs, so a version served
by this runtime answers under the same names, shapes and dtypes as its SavedModel does
(a model converted from a SavedModel or a Keras model has that signature; one without it
fails its load). The row dimension is free: a batch of another size resizes the inputs
(the batcher's padded sizes keep such changes few). An input or output quantized to int8,
uint8 or int16 with one scale (full-integer quantization with integer I/O) is served as
float32: quantized with its scale and zero point on the way in, dequantized on the way
out; per-channel quantized I/O and string tensors fail the load. An interpreter is not
thread-safe, so each batch takes one from a pool that grows to as many batches as run at
once (the batcher's threads, and its event loop's thread for the fastest batch sizes), so
no batch ever waits for another's interpreter; each runs on `threads` threads (the runtime
option; by default the compute threads the service sized to the cores its front ends
leave, as TensorFlow's)."""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from services.inference.runtimes import Signature, TensorSpec
from shared.serving_names import SIGNATURE

_INTEGERS = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16))


class _Tensor:
    """One input or output of the signature: its served spec and its quantization."""

    def __init__(self, name: str, detail: Mapping[str, Any]) -> None:
        dtype = np.dtype(detail["dtype"])
        if dtype.kind in "SUO":
            raise ValueError(f"tensor {name!r} holds strings, which this runtime does not serve")
        scales = detail.get("quantization_parameters", {}).get("scales", ())
        if len(scales) > 1:
            raise ValueError(f"tensor {name!r} is quantized per channel; only one scale is served")
        scale, zero_point = detail.get("quantization", (0.0, 0))
        self.quantized = dtype in _INTEGERS and scale != 0.0
        self.dtype = dtype
        self.scale, self.zero_point = float(scale), int(zero_point)
        shape = [None if dim < 0 else int(dim) for dim in detail["shape_signature"]]
        if shape:
            shape[0] = None
        served = np.dtype(np.float32) if self.quantized else dtype
        self.spec = TensorSpec(name, served, tuple(shape))

    def to_model(self, value: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.ascontiguousarray(value, dtype=self.dtype)
        info = np.iinfo(self.dtype)
        scaled = np.round(np.asarray(value, np.float32) / self.scale) + self.zero_point
        return np.clip(scaled, info.min, info.max).astype(self.dtype)

    def from_model(self, value: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return value
        return ((value.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


class LiteRtRuntime:
    name = "litert"
    device = "cpu"

    def __init__(self, make_interpreter: Callable[[], Any]) -> None:
        self._make_interpreter = make_interpreter
        first = self._runner()
        self._inputs = {
            name: _Tensor(name, detail)
            for name, detail in sorted(first.get_input_details().items())
        }
        self._outputs = {
            name: _Tensor(name, detail)
            for name, detail in sorted(first.get_output_details().items())
        }
        self.signature = Signature(
            tuple(tensor.spec for tensor in self._inputs.values()),
            tuple(tensor.spec for tensor in self._outputs.values()),
        )
        # Signature runners not running a batch now (each holds its own interpreter).
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._idle.put(first)

    def _runner(self) -> Any:
        interpreter = self._make_interpreter()
        if SIGNATURE not in interpreter.get_signature_list():
            raise ValueError(f"the .tflite model has no {SIGNATURE!r} signature")
        return interpreter.get_signature_runner(SIGNATURE)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: self._inputs[name].to_model(value) for name, value in inputs.items()}
        try:
            runner = self._idle.get_nowait()
        except queue.Empty:
            runner = self._runner()
        try:
            # The runner resizes the inputs when the batch's shape changed.
            outputs = runner(**feed)
        finally:
            self._idle.put(runner)
        return {name: self._outputs[name].from_model(value) for name, value in outputs.items()}

    def unload(self) -> None:
        self._idle = queue.SimpleQueue()


def load(path: Path | None, options: Mapping[str, Any]) -> LiteRtRuntime:
    if path is None:
        raise ValueError("the litert runtime needs a .tflite path")
    from ai_edge_litert.interpreter import Interpreter

    from services.inference.settings import usable_cores

    # By default the compute threads the service sized to the cores its front ends leave
    # (services.inference.server.configure_threads), else the cores this process may use.
    default = os.environ.get("TF_NUM_INTRAOP_THREADS") or usable_cores()
    threads = int(options.get("threads") or default)
    model = path.read_bytes()
    return LiteRtRuntime(lambda: Interpreter(model_content=model, num_threads=threads))
