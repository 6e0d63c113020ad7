"""JSON tensor values to numpy arrays of a model's dtype, and the names dtypes go by.

REST clients send tensors as (nested) JSON arrays; `array_from_json` turns one into an
array of the dtype the model takes, refusing what would change a value silently: text,
nulls, objects, ragged nesting, fractions for integer inputs, integers out of the dtype's
range. Every refusal is an InvalidArgument naming the request field. Answers go back as
numpy arrays, which orjson encodes without a Python-list detour. Used by the gateway's
platform API and by the inference service's REST front ends."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.errors import invalid
from shared.tensors import numpy_dtype
from tfmesh.common.v1 import common_pb2

# The platform API's dtype names: numpy's, e.g. "float32" (tfmesh.common.v1.DType).
DTYPE_NAMES: dict[str, common_pb2.DType.ValueType] = {
    common_pb2.DType.Name(value).removeprefix("DTYPE_").lower(): value
    for value in common_pb2.DType.values()
    if value not in (common_pb2.DTYPE_UNSPECIFIED, common_pb2.DTYPE_STRING)
}


def dtype_named(name: str, field: str) -> np.dtype:
    if name not in DTYPE_NAMES:
        raise invalid(field, f"unsupported dtype {name!r}; one of {sorted(DTYPE_NAMES)}")
    return numpy_dtype(DTYPE_NAMES[name])


def _parsed(values: Any, field: str) -> np.ndarray:
    try:
        parsed = np.asarray(values)
    except (ValueError, TypeError, RecursionError) as error:
        raise invalid(field, f"not a rectangular array of numbers: {error}") from None
    if parsed.dtype.kind not in "biuf":
        raise invalid(field, "values must be numbers (or booleans): no text, null or objects")
    return parsed


def _converted(parsed: np.ndarray, dtype: np.dtype, field: str) -> np.ndarray:
    if dtype.kind == "b":
        if parsed.dtype.kind != "b" and parsed.size:
            raise invalid(field, "values must be true or false for a bool tensor")
        return parsed.astype(dtype)
    if parsed.dtype.kind == "b" and parsed.size:
        raise invalid(field, f"values must be numbers for a {dtype.name} tensor, not booleans")
    if dtype.kind in "iu" and parsed.size:
        fractional = parsed.dtype.kind == "f" and (
            not np.all(np.isfinite(parsed)) or bool(np.any(np.mod(parsed, 1) != 0))
        )
        if fractional:
            raise invalid(field, f"values must be integers for a {dtype.name} tensor")
        limits = np.iinfo(dtype)
        if parsed.min() < limits.min or parsed.max() > limits.max:
            raise invalid(
                field, f"values must lie in [{limits.min}, {limits.max}] for {dtype.name}"
            )
    with np.errstate(over="ignore"):
        return parsed.astype(dtype)


def array_from_json(
    values: Any, dtype: np.dtype, field: str, shape: Sequence[int] | None = None
) -> np.ndarray:
    """`values` (nested lists, or flat with `shape`) as a C-ordered array of `dtype`."""
    array = _converted(_parsed(values, field), dtype, field)
    if shape is None:
        return array
    count = math.prod(shape)
    if array.size != count:
        raise invalid(field, f"shape {list(shape)} needs {count} values, got {array.size}")
    return array.reshape(tuple(shape))
