"""numpy arrays to and from `tfmesh.common.v1.Tensor` (raw little-endian bytes + dtype + shape).

Decoding uses `numpy.frombuffer` on the message's bytes: no copy on the hot path. Shape and
byte length are checked against each other so a malformed tensor is an InvalidArgument,
never a crash."""

from __future__ import annotations

import math

import numpy as np

from shared.errors import invalid
from tfmesh.common.v1 import common_pb2

_BY_ENUM: dict[common_pb2.DType.ValueType, np.dtype] = {
    common_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    common_pb2.DTYPE_FLOAT64: np.dtype("<f8"),
    common_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
    common_pb2.DTYPE_INT8: np.dtype("i1"),
    common_pb2.DTYPE_INT16: np.dtype("<i2"),
    common_pb2.DTYPE_INT32: np.dtype("<i4"),
    common_pb2.DTYPE_INT64: np.dtype("<i8"),
    common_pb2.DTYPE_UINT8: np.dtype("u1"),
    common_pb2.DTYPE_UINT16: np.dtype("<u2"),
    common_pb2.DTYPE_BOOL: np.dtype("?"),
}
_BY_KIND = {dtype.str.lstrip("<|"): enum for enum, dtype in _BY_ENUM.items()}


def dtype_enum(dtype: np.dtype) -> common_pb2.DType.ValueType:
    if dtype.kind in "USO":
        return common_pb2.DTYPE_STRING
    key = dtype.newbyteorder("<").str.lstrip("<|")
    try:
        return _BY_KIND[key]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype}") from None


def numpy_dtype(enum: common_pb2.DType.ValueType) -> np.dtype:
    return _BY_ENUM[enum]


def to_tensor(array: np.ndarray) -> common_pb2.Tensor:
    array = np.asarray(array)
    enum = dtype_enum(array.dtype)
    if enum == common_pb2.DTYPE_STRING:
        values = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        return common_pb2.Tensor(dtype=enum, shape=array.shape, string_val=values)
    little = array.astype(_BY_ENUM[enum], copy=False)
    return common_pb2.Tensor(dtype=enum, shape=array.shape, content=little.tobytes(order="C"))


def from_tensor(tensor: common_pb2.Tensor, field: str = "tensor") -> np.ndarray:
    """Decode a Tensor; a bad dtype, shape or byte length raises InvalidArgument on `field`."""
    shape = tuple(tensor.shape)
    if any(dim < 0 for dim in shape):
        raise invalid(f"{field}.shape", f"dimensions must be >= 0, got {list(shape)}")
    # Python ints: an int64 product of huge dims would wrap around and pass the length check.
    count = math.prod(shape)
    if tensor.dtype == common_pb2.DTYPE_STRING:
        if len(tensor.string_val) != count:
            raise invalid(
                f"{field}.string_val",
                f"shape {list(shape)} needs {count} values, got {len(tensor.string_val)}",
            )
        return np.array(list(tensor.string_val), dtype=object).reshape(shape)
    if tensor.dtype not in _BY_ENUM:
        raise invalid(f"{field}.dtype", f"unsupported dtype enum {tensor.dtype}")
    return array_from_bytes(tensor.content, _BY_ENUM[tensor.dtype], shape, f"{field}.content")


def array_from_bytes(
    content: bytes, dtype: np.dtype, shape: tuple[int, ...], field: str
) -> np.ndarray:
    """`content` read as an array of `shape`; InvalidArgument on `field` when its length is
    not the shape's."""
    expected = math.prod(shape) * dtype.itemsize
    if len(content) != expected:
        raise invalid(
            field,
            f"shape {list(shape)} of {dtype.name} needs {expected} bytes, got {len(content)}",
        )
    return np.frombuffer(content, dtype=dtype).reshape(shape)
