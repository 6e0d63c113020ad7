"""KServe v2 (Open Inference Protocol) messages to and from numpy arrays and core types.

Inputs arrive either typed (`contents`, the repeated field that matches the datatype) or
raw (`raw_input_contents`, one little-endian byte string per input in order); every
mismatch of datatype, shape, element count or byte length is a field violation. Answers
go back raw when the request came raw, typed otherwise."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from inference import grpc_predict_v2_pb2 as pb
from services.inference.pipeline import Prediction
from services.inference.runtimes import TensorSpec
from services.inference.validation import OUTPUT_FILTER_FIELD
from shared import oip
from shared.errors import FieldViolation, InvalidArgument, invalid

DATATYPES = {dtype.str.lstrip("<|="): name for name, dtype in oip.NUMPY_DTYPES.items()}
# The InferTensorContents field that carries each datatype when sent typed.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def datatype_of(dtype: np.dtype) -> str:
    if dtype.kind in "USO":
        return "BYTES"
    return DATATYPES.get(dtype.newbyteorder("<").str.lstrip("<|="), "BYTES")


def input_field(index: int) -> str:
    return f"inputs[{index}]"


def field_renamer(indexes: Mapping[str, int]) -> Callable[[str], str]:
    """The core's field paths (services.inference.validation) as KServe's: an input by its
    place in the request (`inputs` for one the request lacks), the output filter as
    `outputs`."""

    def rename(field: str) -> str:
        if field == OUTPUT_FILTER_FIELD:
            return "outputs"
        if field.startswith("inputs[") and field.endswith("]"):
            index = indexes.get(field[len("inputs[") : -1])
            return "inputs" if index is None else input_field(index)
        return field

    return rename


def _header(index: int, tensor: pb.ModelInferRequest.InferInputTensor) -> tuple[np.dtype, tuple]:
    field = input_field(index)
    dtype = oip.NUMPY_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise invalid(
            f"{field}.datatype",
            f"unsupported datatype {tensor.datatype!r}; one of {sorted(oip.NUMPY_DTYPES)}",
        )
    shape = tuple(tensor.shape)
    if any(dim < 0 for dim in shape):
        raise invalid(f"{field}.shape", f"dimensions must be >= 0, got {list(shape)}")
    return dtype, shape


def _raw(index: int, tensor, raw: bytes) -> np.ndarray:
    dtype, shape = _header(index, tensor)
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise invalid(
            f"raw_input_contents[{index}]",
            f"input {tensor.name!r} of shape {list(shape)} {tensor.datatype} needs "
            f"{expected} bytes, got {len(raw)}",
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _typed(index: int, tensor) -> np.ndarray:
    dtype, shape = _header(index, tensor)
    field_name = CONTENTS_FIELD.get(tensor.datatype)
    if field_name is None:
        raise invalid(
            f"{input_field(index)}.contents",
            f"{tensor.datatype} travels only in raw_input_contents",
        )
    values = getattr(tensor.contents, field_name)
    count = math.prod(shape)
    if len(values) != count:
        raise invalid(
            f"{input_field(index)}.contents.{field_name}",
            f"shape {list(shape)} needs {count} values, got {len(values)}",
        )
    return np.asarray(values, dtype=dtype).reshape(shape)


def inputs_from_proto(request: pb.ModelInferRequest) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays by input name, and each name's index (for field paths)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid(
            "raw_input_contents",
            f"{len(raw)} entries for {len(request.inputs)} inputs; give one per input",
        )
    arrays: dict[str, np.ndarray] = {}
    indexes: dict[str, int] = {}
    violations: list[FieldViolation] = []
    for index, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            violations.append(
                FieldViolation(f"{input_field(index)}.name", f"input {tensor.name!r} given twice")
            )
            continue
        try:
            if raw:
                if tensor.HasField("contents"):
                    raise invalid(
                        f"{input_field(index)}.contents",
                        "give contents or raw_input_contents, not both",
                    )
                arrays[tensor.name] = _raw(index, tensor, raw[index])
            else:
                arrays[tensor.name] = _typed(index, tensor)
        except InvalidArgument as error:
            violations += error.violations
        indexes[tensor.name] = index
    if violations:
        raise InvalidArgument(violations)
    return arrays, indexes


def version_pin(version: str, field: str) -> tuple[int, str]:
    """A v2 `model_version`: digits pin a version number, anything else names a label."""
    if not version:
        return 0, ""
    if version.isdigit():
        number = int(version)
        if number < 1:
            raise invalid(field, "versions start at 1")
        return number, ""
    return 0, version


def _typed_contents(value: np.ndarray, datatype: str) -> pb.InferTensorContents:
    contents = pb.InferTensorContents()
    getattr(contents, CONTENTS_FIELD[datatype]).extend(value.reshape(-1).tolist())
    return contents


def response_to_proto(
    prediction: Prediction, request: pb.ModelInferRequest
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=prediction.model, model_version=str(prediction.version), id=prediction.request_id
    )
    raw = bool(request.raw_input_contents)
    for name, value in prediction.outputs.items():
        datatype = datatype_of(value.dtype)
        output = response.outputs.add(name=name, datatype=datatype, shape=value.shape)
        if raw or datatype not in CONTENTS_FIELD:
            response.raw_output_contents.append(
                np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
            )
        else:
            output.contents.CopyFrom(_typed_contents(value, datatype))
    return response


def tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name,
        datatype=datatype_of(spec.dtype),
        shape=[-1 if d is None else d for d in spec.shape],
    )
