"""TF Serving's REST bodies to numpy arrays and back, as TF Serving reads and writes them.

`:predict` takes the row format (`instances`: one entry per example, an object of named
inputs when the model has several) or the columnar format (`inputs`: one batch per input,
or an object of them), answered as `predictions` and `outputs` respectively. JSON numbers
take the dtype of the model's signature; ragged nesting, text for numbers, fractions for
integers and integers out of range are refused (`shared.json_tensors`). String tensors
travel as JSON strings, or as `{"b64": "..."}` for binary values; a string output whose
name ends in `_bytes` goes back base64-encoded, as TF Serving does. Status and metadata
answers follow TF Serving's JSON."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import orjson

from services.inference.catalog import VersionState, VersionView
from services.inference.pipeline import Prediction
from services.inference.runtimes import TensorSpec
from shared.errors import invalid
from shared.json_tensors import array_from_json
from shared.serving_names import SIGNATURE

PREDICT_METHOD = "tensorflow/serving/predict"
STATES = {
    VersionState.LOADING: "LOADING",
    VersionState.AVAILABLE: "AVAILABLE",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.FAILED: "END",
    VersionState.END: "END",
}
TF_DTYPES = {
    "f2": "DT_HALF",
    "f4": "DT_FLOAT",
    "f8": "DT_DOUBLE",
    "i1": "DT_INT8",
    "i2": "DT_INT16",
    "i4": "DT_INT32",
    "i8": "DT_INT64",
    "u1": "DT_UINT8",
    "u2": "DT_UINT16",
    "u4": "DT_UINT32",
    "u8": "DT_UINT64",
    "?": "DT_BOOL",
}


def _tf_dtype(dtype: np.dtype) -> str:
    if dtype.kind in "USO":
        return "DT_STRING"
    return TF_DTYPES.get(dtype.newbyteorder("<").str.lstrip("<|="), "DT_INVALID")


def model_status(views: list[VersionView]) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(view.version),
                "state": STATES[view.state],
                "status": {
                    "error_code": "UNKNOWN" if view.state is VersionState.FAILED else "OK",
                    "error_message": view.reason if view.state is VersionState.FAILED else "",
                },
            }
            for view in views
        ]
    }


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": _tf_dtype(spec.dtype),
        "tensor_shape": {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape],
            "unknown_rank": False,
        },
        "name": spec.name,
    }


def metadata(model: str, target: VersionView) -> dict[str, Any]:
    assert target.signature is not None
    signature = {
        "inputs": {spec.name: _tensor_info(spec) for spec in target.signature.inputs},
        "outputs": {spec.name: _tensor_info(spec) for spec in target.signature.outputs},
        "method_name": PREDICT_METHOD,
        "defaults": {},
    }
    return {
        "model_spec": {"name": model, "signature_name": "", "version": str(target.version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}},
    }


def _strings(values: Any, field: str) -> np.ndarray:
    """JSON strings, or `{"b64": ...}` objects, as an array of bytes objects."""

    def decoded(value: Any) -> Any:
        if isinstance(value, list):
            return [decoded(item) for item in value]
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except binascii.Error:
                raise invalid(field, "a b64 value is not valid base64") from None
        raise invalid(field, 'values must be strings or {"b64": "..."} for a string tensor')

    try:
        return np.array(decoded(values), dtype=object)
    except ValueError as error:
        raise invalid(field, f"not a rectangular array: {error}") from None


def _column(values: Any, spec: TensorSpec, field: str) -> np.ndarray:
    if spec.dtype.kind in "USO":
        return _strings(values, field)
    return array_from_json(values, spec.dtype, field)


def _named_columns(
    columns: dict[str, Any], specs: dict[str, TensorSpec], field: str
) -> dict[str, np.ndarray]:
    arrays = {}
    for name, values in columns.items():
        spec = specs.get(name)
        if spec is None:
            raise invalid(f"{field}.{name}", f"unknown input; the model takes {sorted(specs)}")
        arrays[name] = _column(values, spec, f"{field}.{name}")
    return arrays


def _single_input(specs: dict[str, TensorSpec], field: str) -> str:
    if len(specs) != 1:
        raise invalid(
            field, f"the model takes {len(specs)} inputs {sorted(specs)}: name them in an object"
        )
    return next(iter(specs))


def predict_inputs(body: bytes, target: VersionView) -> tuple[dict[str, np.ndarray], bool]:
    """The input arrays of a `:predict` body, and whether it used the row format."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise invalid("body", f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise invalid("body", "must be a JSON object")
    if document.get("signature_name", "") not in ("", SIGNATURE):
        raise invalid("signature_name", f"unknown signature; the model has {SIGNATURE!r}")
    instances, inputs = document.get("instances"), document.get("inputs")
    if (instances is None) == (inputs is None):
        raise invalid("instances", "give either `instances` (rows) or `inputs` (columns)")
    assert target.signature is not None
    specs = {spec.name: spec for spec in target.signature.inputs}
    if inputs is not None:
        if isinstance(inputs, dict):
            return _named_columns(inputs, specs, "inputs"), False
        return _named_columns({_single_input(specs, "inputs"): inputs}, specs, "inputs"), False
    if not isinstance(instances, list) or not instances:
        raise invalid("instances", "give a non-empty list of instances")
    named = [isinstance(instance, dict) and "b64" not in instance for instance in instances]
    if not any(named):
        column = {_single_input(specs, "instances"): instances}
        return _named_columns(column, specs, "instances"), True
    if not all(named) or any(set(i) != set(instances[0]) for i in instances):
        raise invalid("instances", "every instance must be an object naming the same inputs")
    columns = {name: [instance[name] for instance in instances] for name in instances[0]}
    return _named_columns(columns, specs, "instances"), True


def _json_ready(name: str, value: np.ndarray) -> Any:
    """An output as orjson can write it: numbers stay numpy, strings become text, or
    base64 objects for an output named `*_bytes`."""
    if value.dtype.kind not in "USO":
        return value.astype(np.float32) if value.dtype == np.float16 else value

    def encoded(item: Any) -> Any:
        if isinstance(item, list):
            return [encoded(i) for i in item]
        data = item if isinstance(item, bytes) else str(item).encode()
        if name.endswith("_bytes"):
            return {"b64": base64.b64encode(data).decode()}
        return data.decode(errors="replace")

    return encoded(value.tolist())


def predict_answer(prediction: Prediction, rows_format: bool) -> bytes:
    outputs = {name: _json_ready(name, value) for name, value in prediction.outputs.items()}
    if not rows_format:
        only = next(iter(outputs.values())) if len(outputs) == 1 else None
        answer: dict[str, Any] = {"outputs": outputs if only is None else only}
    elif len(outputs) == 1:
        answer = {"predictions": next(iter(outputs.values()))}
    else:
        rows = len(next(iter(prediction.outputs.values())))
        answer = {
            "predictions": [
                {name: value[i] for name, value in outputs.items()} for i in range(rows)
            ]
        }
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
