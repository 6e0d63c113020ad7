"""KServe v2 REST inference bodies to numpy arrays and back, with Triton's binary tensors.

A request is JSON, or JSON followed by raw tensor bytes when the `Inference-Header-Content-
Length` header says how long the JSON part is; an input then carries
`parameters.binary_data_size` instead of `data`, its bytes taking that many from the binary
part in input order. JSON `data` (nested or flat, row-major) is decoded by simdjson
straight into a numpy buffer: no Python object per element. Outputs go back as JSON
`data`, or as raw bytes after the JSON when the request asked for them with
`parameters.binary_data` (per output) or `binary_data_output` (for all). Every problem is
an InvalidArgument naming the field, for the KServe error body."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
import simdjson

from services.inference.pipeline import Prediction
from services.inference.protocols.kserve.converters import datatype_of, input_field
from shared import oip
from shared.errors import FieldViolation, InvalidArgument, invalid

HEADER_LENGTH = "inference-header-content-length"
# simdjson's flat buffer types: double, signed and unsigned 64-bit integers.
BUFFER_TYPES: dict[str, tuple[Literal["d", "i", "u"], type[np.generic]]] = {
    "f": ("d", np.float64),
    "i": ("i", np.int64),
    "u": ("u", np.uint64),
}


@dataclass
class InferRequest:
    id: str
    inputs: dict[str, np.ndarray]
    # Each input's position in `inputs[]`, for field paths.
    indexes: dict[str, int]
    # The outputs asked for, in order ([] for all), and which of them go back binary.
    outputs: list[str] = field(default_factory=list)
    binary_outputs: set[str] = field(default_factory=set)
    all_binary: bool = False


def _object(value: Any, name: str) -> simdjson.Object:
    if not isinstance(value, simdjson.Object):
        raise invalid(name, "must be a JSON object")
    return value


def _field(owner: simdjson.Object, key: str) -> Any:
    """`owner[key]`, or None when absent: simdjson's own `get` (and `in`) raise and catch
    inside on a miss, which costs more than the rest of a small request's parsing."""
    return owner[key] if key in owner.keys() else None  # noqa: SIM118 - see above


def _parameters(owner: simdjson.Object, name: str) -> dict[str, Any]:
    parameters = _field(owner, "parameters")
    if parameters is None:
        return {}
    return dict(_object(parameters, f"{name}.parameters").as_dict())


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, simdjson.Array) or len(value) > 32:
        raise invalid(name, "must be an array of at most 32 dimensions")
    dims = value.as_list()
    shape = tuple(d for d in dims if isinstance(d, int) and not isinstance(d, bool) and d >= 0)
    if len(shape) != len(dims) or any(d >= 2**62 for d in shape):
        raise invalid(name, f"dimensions must be integers >= 0, got {dims}")
    return shape


def _from_json(values: Any, dtype: np.dtype, name: str) -> np.ndarray:
    """JSON numbers (nested or flat) as a flat array of `dtype`."""
    if not isinstance(values, simdjson.Array):
        raise invalid(name, "must be an array of values")
    if dtype.kind == "b":
        flat = np.asarray(values.as_list(), dtype=object).reshape(-1)
        if not all(isinstance(v, bool) for v in flat):
            raise invalid(name, "values must be true or false for a BOOL tensor")
        return flat.astype(bool)
    buffer_type, buffer_dtype = BUFFER_TYPES[dtype.kind]
    try:
        flat = np.frombuffer(values.as_buffer(of_type=buffer_type), buffer_dtype)
    except (TypeError, ValueError):
        kind = "numbers" if dtype.kind == "f" else "integers"
        raise invalid(name, f"values must be {kind} for a {dtype.name} tensor") from None
    if dtype.kind in "iu" and flat.size:
        limits = np.iinfo(dtype)
        if flat.min() < limits.min or flat.max() > limits.max:
            raise invalid(name, f"values must lie in [{limits.min}, {limits.max}]")
    with np.errstate(over="ignore"):
        return flat.astype(dtype)


def _input(
    index: int, tensor: Any, binary: memoryview | None, offset: int
) -> tuple[str, np.ndarray, int]:
    """One input: its name, its array, and where the binary part's next tensor starts."""
    name = input_field(index)
    tensor = _object(tensor, name)
    tensor_name = _field(tensor, "name")
    if not isinstance(tensor_name, str) or not tensor_name:
        raise invalid(f"{name}.name", "must be a non-empty string")
    datatype = _field(tensor, "datatype")
    dtype = oip.NUMPY_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise invalid(
            f"{name}.datatype",
            f"unsupported datatype {datatype!r}; one of {sorted(oip.NUMPY_DTYPES)}",
        )
    shape = _shape(_field(tensor, "shape"), f"{name}.shape")
    count = math.prod(shape)
    size = _parameters(tensor, name).get("binary_data_size")
    if size is not None:
        if binary is None:
            raise invalid(
                f"{name}.parameters.binary_data_size",
                f"binary data needs the {HEADER_LENGTH} header",
            )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise invalid(f"{name}.parameters.binary_data_size", "must be an integer >= 0")
        if offset + size > len(binary):
            raise invalid(
                f"{name}.parameters.binary_data_size",
                f"{size} bytes from byte {offset} run past the end of the binary data "
                f"({len(binary)} bytes)",
            )
        if size != count * dtype.itemsize:
            raise invalid(
                f"{name}.parameters.binary_data_size",
                f"shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, "
                f"got {size}",
            )
        array = np.frombuffer(binary[offset : offset + size], dtype)
        return tensor_name, array.reshape(shape), offset + size
    if "data" not in tensor:
        raise invalid(f"{name}.data", "missing: give data, or parameters.binary_data_size")
    flat = _from_json(tensor["data"], dtype, f"{name}.data")
    if flat.size != count:
        raise invalid(f"{name}.data", f"shape {list(shape)} needs {count} values, got {flat.size}")
    return tensor_name, flat.reshape(shape), offset


def parse_infer(header: bytes, binary: memoryview | None) -> InferRequest:
    """The request whose JSON is `header` (and binary tensors `binary`, if any)."""
    try:
        document = simdjson.Parser().parse(header)
    except (ValueError, RuntimeError) as error:
        # RuntimeError: valid JSON simdjson cannot hold, e.g. an integer past 64 bits.
        raise invalid("body", f"not JSON this server reads: {error}") from None
    body = _object(document, "body")
    request_id = _field(body, "id")
    if request_id is None:
        request_id = ""
    if not isinstance(request_id, str):
        raise invalid("id", "must be a string")
    inputs = _field(body, "inputs")
    if not isinstance(inputs, simdjson.Array) or not len(inputs):
        raise invalid("inputs", "must be a non-empty array of tensors")
    arrays: dict[str, np.ndarray] = {}
    indexes: dict[str, int] = {}
    violations: list[FieldViolation] = []
    offset = 0
    for index, tensor in enumerate(inputs):
        try:
            name, array, offset = _input(index, tensor, binary, offset)
        except InvalidArgument as error:
            violations += error.violations
            continue
        if name in arrays:
            violations.append(
                FieldViolation(f"{input_field(index)}.name", f"input {name!r} given twice")
            )
        arrays[name], indexes[name] = array, index
    if violations:
        raise InvalidArgument(violations)
    if binary is not None and offset != len(binary):
        raise invalid("body", f"{len(binary) - offset} bytes of binary data that no input claims")
    request = InferRequest(request_id, arrays, indexes)
    request.all_binary = bool(_parameters(body, "body").get("binary_data_output", False))
    outputs = _field(body, "outputs")
    if outputs is not None:
        if not isinstance(outputs, simdjson.Array):
            raise invalid("outputs", "must be an array")
        for index, output in enumerate(outputs):
            output = _object(output, f"outputs[{index}]")
            output_name = _field(output, "name")
            if not isinstance(output_name, str):
                raise invalid(f"outputs[{index}].name", "must be a string")
            request.outputs.append(output_name)
            if _parameters(output, f"outputs[{index}]").get("binary_data"):
                request.binary_outputs.add(output_name)
    return request


def _little_endian(value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))


def infer_response(prediction: Prediction, request: InferRequest) -> tuple[bytes, int]:
    """The answer's body and the length of its JSON part (the whole body when no output
    goes back binary)."""
    outputs = []
    binary: list[bytes] = []
    for name, value in prediction.outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(value.dtype),
            "shape": list(value.shape),
        }
        if request.all_binary or name in request.binary_outputs:
            data = _little_endian(value).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            binary.append(data)
        else:
            # orjson writes numpy arrays itself, except half floats.
            flat = value.reshape(-1)
            entry["data"] = flat.astype(np.float32) if flat.dtype == np.float16 else flat
        outputs.append(entry)
    header = orjson.dumps(
        {
            "model_name": prediction.model,
            "model_version": str(prediction.version),
            "id": prediction.request_id,
            "outputs": outputs,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    return header + b"".join(binary), len(header)
