"""Post-training quantization of a SavedModel into a `.tflite` model (LiteRT's format):

- `dynamic`: dynamic-range quantization, weights stored as int8 and activations computed
  in float (TensorFlow's `Optimize.DEFAULT` alone);
- `float16`: weights stored as float16, computed in float;
- `int8`: full-integer quantization, weights and activations int8, calibrated on a
  representative sample of training rows; its input and output are int8 too (the LiteRT
  runtime quantizes and dequantizes them, so callers still send and get float).

The model keeps its `serving_default` signature, so a `.tflite` version answers under the
names of the SavedModel it came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

METHODS = ("dynamic", "float16", "int8")
# Calibration rows an int8 quantization reads (fewer when the sample has fewer).
REPRESENTATIVE_ROWS = 200


def quantize(saved_model: Path, method: str, representative: np.ndarray | None = None) -> bytes:
    """The `.tflite` bytes of `saved_model` quantized by `method`; `int8` needs
    `representative` rows (a batch of model inputs, raw as the model takes them)."""
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; one of {list(METHODS)}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if method == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif method == "int8":
        if representative is None or len(representative) == 0:
            raise ValueError("int8 quantization needs representative rows to calibrate on")
        rows = np.asarray(representative[:REPRESENTATIVE_ROWS], dtype=np.float32)

        def samples():
            for row in rows:
                yield [row[None, ...]]

        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return bytes(converter.convert())
