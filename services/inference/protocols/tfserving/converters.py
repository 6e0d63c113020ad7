"""TF Serving messages (`TensorProto`, `ModelSpec`, `SignatureDef`) to and from numpy.

Decoding reads `tensor_content` with `numpy.frombuffer` when the client sent raw bytes
(what `tf.make_tensor_proto` does for arrays), or the typed `*_val` field otherwise, where
one value fills the whole shape as in TensorFlow. Importing this module imports
TensorFlow (the stubs' `tensor_pb2` lives in its package), so only the TF Serving
servicer imports it, and only when TensorFlow is installed."""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import model_pb2

from services.inference.pipeline import Prediction
from services.inference.runtimes import Signature, TensorSpec
from shared.errors import invalid
from shared.serving_names import SIGNATURE
from shared.tensors import array_from_bytes

DTYPES: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype("<f4"),
    types_pb2.DT_DOUBLE: np.dtype("<f8"),
    types_pb2.DT_HALF: np.dtype("<f2"),
    types_pb2.DT_INT8: np.dtype("i1"),
    types_pb2.DT_INT16: np.dtype("<i2"),
    types_pb2.DT_INT32: np.dtype("<i4"),
    types_pb2.DT_INT64: np.dtype("<i8"),
    types_pb2.DT_UINT8: np.dtype("u1"),
    types_pb2.DT_UINT16: np.dtype("<u2"),
    types_pb2.DT_UINT32: np.dtype("<u4"),
    types_pb2.DT_UINT64: np.dtype("<u8"),
    types_pb2.DT_BOOL: np.dtype("?"),
}
ENUMS = {dtype: enum for enum, dtype in DTYPES.items()}
# The typed value field of each dtype (TensorFlow keeps small ints in int_val, halves'
# bit patterns in half_val).
VALUE_FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
}
PREDICT_METHOD = "tensorflow/serving/predict"


def input_field(name: str) -> str:
    return f"inputs[{name}]"


def ndarray_from_proto(tensor: tensor_pb2.TensorProto, field: str) -> np.ndarray:
    dtype = DTYPES.get(tensor.dtype)
    if dtype is None:
        known = tensor.dtype in types_pb2.DataType.values()
        name = types_pb2.DataType.Name(tensor.dtype) if known else str(tensor.dtype)
        raise invalid(f"{field}.dtype", f"unsupported dtype {name}")
    if tensor.tensor_shape.unknown_rank:
        raise invalid(f"{field}.tensor_shape", "the shape must be fully known")
    shape = tuple(dim.size for dim in tensor.tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise invalid(f"{field}.tensor_shape", f"dimensions must be >= 0, got {list(shape)}")
    count = math.prod(shape)
    if tensor.tensor_content:
        content_field = f"{field}.tensor_content"
        return array_from_bytes(tensor.tensor_content, dtype, shape, content_field)
    field_name = VALUE_FIELD[tensor.dtype]
    values = getattr(tensor, field_name)
    if tensor.dtype == types_pb2.DT_HALF:
        array = np.asarray(values, dtype=np.uint16).view(np.float16)
    else:
        array = np.asarray(values, dtype=dtype)
    if len(array) == count:
        return array.reshape(shape)
    if len(array) == 1:
        return np.full(shape, array[0], dtype=dtype)
    raise invalid(
        f"{field}.{field_name}", f"shape {list(shape)} needs {count} values, got {len(array)}"
    )


def ndarray_to_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    dtype = value.dtype.newbyteorder("<") if value.dtype.byteorder == ">" else value.dtype
    return tensor_pb2.TensorProto(
        dtype=ENUMS[np.dtype(dtype)],
        tensor_shape=_shape(value.shape),
        tensor_content=np.ascontiguousarray(value, dtype=dtype).tobytes(),
    )


def _shape(dims) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=-1 if d is None else d) for d in dims]
    )


def model_spec(name: str, version: int) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name, signature_name=SIGNATURE)
    spec.version.value = version
    return spec


def version_pin(spec: model_pb2.ModelSpec) -> tuple[int, str]:
    if spec.signature_name not in ("", SIGNATURE):
        raise invalid(
            "model_spec.signature_name",
            f"unknown signature {spec.signature_name!r}; the model serves {SIGNATURE!r}",
        )
    which = spec.WhichOneof("version_choice")
    if which == "version":
        if spec.version.value < 1:
            raise invalid("model_spec.version", "versions start at 1")
        return spec.version.value, ""
    if which == "version_label":
        return 0, spec.version_label
    return 0, ""


def outputs_to_proto(prediction: Prediction) -> dict[str, tensor_pb2.TensorProto]:
    return {name: ndarray_to_proto(value) for name, value in prediction.outputs.items()}


def _tensor_info(spec: TensorSpec) -> meta_graph_pb2.TensorInfo:
    return meta_graph_pb2.TensorInfo(
        name=f"{SIGNATURE}_{spec.name}:0",
        dtype=ENUMS.get(spec.dtype, types_pb2.DT_INVALID),
        tensor_shape=_shape(spec.shape),
    )


def signature_def_map(signature: Signature) -> meta_graph_pb2.SignatureDef:
    return meta_graph_pb2.SignatureDef(
        inputs={s.name: _tensor_info(s) for s in signature.inputs},
        outputs={s.name: _tensor_info(s) for s in signature.outputs},
        method_name=PREDICT_METHOD,
    )
