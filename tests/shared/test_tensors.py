"""`shared.tensors`: numpy arrays to `tfmesh.common.v1.Tensor` and back, and malformed
tensors rejected as InvalidArgument naming the offending field."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import InvalidArgument
from shared.tensors import dtype_enum, from_tensor, numpy_dtype, to_tensor
from tfmesh.common.v1 import common_pb2

NUMERIC_DTYPES = ["<f4", "<f8", "<f2", "i1", "<i2", "<i4", "<i8", "u1", "<u2", "?"]


def sample(dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    values = np.arange(int(np.prod(shape)), dtype=np.int64) % 100 - 20
    if dtype.kind == "u":
        values = np.abs(values)
    if dtype.kind == "b":
        return (values % 3 == 0).reshape(shape)
    return values.astype(dtype).reshape(shape)


@pytest.mark.parametrize("dtype_str", NUMERIC_DTYPES)
@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (2, 0, 4)])
def test_numeric_round_trip(dtype_str: str, shape: tuple[int, ...]) -> None:
    array = sample(np.dtype(dtype_str), shape)
    tensor = to_tensor(array)
    assert tensor.dtype == dtype_enum(array.dtype)
    assert list(tensor.shape) == list(shape)
    assert len(tensor.content) == array.size * array.dtype.itemsize
    decoded = from_tensor(common_pb2.Tensor.FromString(tensor.SerializeToString()))
    assert decoded.dtype == numpy_dtype(tensor.dtype)
    assert decoded.shape == shape
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("dtype_str", [">f4", ">f8", ">f2", ">i2", ">i4", ">i8", ">u2"])
def test_big_endian_input_travels_little_endian(dtype_str: str) -> None:
    big = sample(np.dtype(dtype_str), (3, 2))
    tensor = to_tensor(big)
    little = big.astype(np.dtype(dtype_str).newbyteorder("<"))
    assert tensor.content == little.tobytes()
    decoded = from_tensor(tensor)
    assert decoded.dtype.byteorder in "<="
    np.testing.assert_array_equal(decoded, big)


def test_non_contiguous_input_round_trips() -> None:
    array = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2].T
    np.testing.assert_array_equal(from_tensor(to_tensor(array)), array)


def test_decoding_is_zero_copy() -> None:
    tensor = to_tensor(np.ones((4, 4), dtype=np.float32))
    decoded = from_tensor(tensor)
    # A view on the message's bytes, hence read-only.
    assert not decoded.flags.writeable
    assert not decoded.flags.owndata


def test_strings_round_trip_as_utf8_bytes() -> None:
    array = np.array([["setosa", "versicolor"], ["virginica", "\N{SNOWMAN}"]])
    tensor = to_tensor(array)
    assert tensor.dtype == common_pb2.DTYPE_STRING
    assert tensor.content == b""
    decoded = from_tensor(tensor)
    assert decoded.shape == (2, 2)
    assert decoded.tolist() == [[b"setosa", b"versicolor"], [b"virginica", "\N{SNOWMAN}".encode()]]


def test_bytes_and_empty_strings_round_trip() -> None:
    array = np.array([b"\x00\xff", b""], dtype=object)
    np.testing.assert_array_equal(from_tensor(to_tensor(array)), array)
    empty = from_tensor(to_tensor(np.array([], dtype=str).reshape(0, 3)))
    assert empty.shape == (0, 3)


def test_unsupported_dtype_is_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match="unsupported dtype"):
        to_tensor(np.zeros(2, dtype=np.complex64))


def violation_fields(tensor: common_pb2.Tensor, field: str = "inputs[0]") -> list[str]:
    with pytest.raises(InvalidArgument) as raised:
        from_tensor(tensor, field)
    return [violation.field for violation in raised.value.violations]


def test_wrong_byte_length_names_the_content_field() -> None:
    tensor = to_tensor(np.zeros((2, 3), dtype=np.float32))
    tensor.content = tensor.content[:-1]
    assert violation_fields(tensor) == ["inputs[0].content"]
    tensor.content = b"\x00" * 28
    assert violation_fields(tensor) == ["inputs[0].content"]


def test_negative_dimensions_are_rejected() -> None:
    tensor = common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=[2, -1], content=b"")
    assert violation_fields(tensor) == ["inputs[0].shape"]


def test_huge_dimensions_are_rejected_not_crashing() -> None:
    # 2**32 * 2**32 elements wraps to 0 in int64 arithmetic; the check must not be fooled.
    tensor = common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=[2**32, 2**32], content=b"")
    assert violation_fields(tensor) == ["inputs[0].content"]


def test_unknown_dtype_is_rejected() -> None:
    tensor = common_pb2.Tensor(dtype=common_pb2.DTYPE_UNSPECIFIED, shape=[1], content=b"\x00")
    assert violation_fields(tensor) == ["inputs[0].dtype"]
    tensor = common_pb2.Tensor(dtype=999, shape=[1], content=b"\x00")  # type: ignore[arg-type]
    assert violation_fields(tensor) == ["inputs[0].dtype"]


def test_string_count_must_match_shape() -> None:
    tensor = common_pb2.Tensor(dtype=common_pb2.DTYPE_STRING, shape=[3], string_val=[b"a", b"b"])
    assert violation_fields(tensor, "instances") == ["instances.string_val"]


def test_default_field_name_is_tensor() -> None:
    with pytest.raises(InvalidArgument) as raised:
        from_tensor(common_pb2.Tensor(dtype=common_pb2.DTYPE_INT32, shape=[2], content=b"\x00"))
    assert raised.value.violations[0].field == "tensor.content"
