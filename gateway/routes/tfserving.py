"""TF Serving's REST API (`/v1/models/...`) over the inference service, for its clients.

Status, metadata and `:predict` for a model, a pinned version, or a label, with TF
Serving's request formats: row (`instances`, one entry per example, an object of named
inputs when there are several) and columnar (`inputs`, one batch per input), answered as
`predictions` and `outputs` respectively; failures as `{"error": "<message>"}`. As in TF
Serving, JSON numbers take the dtype of the model's signature, which comes from the
inference service's status of the version the request is for."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from gateway.backends import Backends
from gateway.errors import ServingApiRoute
from gateway.jsonio import OrjsonResponse
from shared.errors import FailedPrecondition, NotFound, Unavailable, invalid
from shared.json_tensors import TF_DTYPE_NAMES, array_from_json
from shared.tensors import from_tensor, numpy_dtype, to_tensor
from tfmesh.common.v1 import common_pb2
from tfmesh.inference.v1 import inference_pb2 as pb

router = APIRouter(prefix="/v1/models", tags=["tfserving"], route_class=ServingApiRoute)

ModelName = Annotated[str, Path(min_length=1, max_length=128, description="Model name")]
VersionNumber = Annotated[int, Path(ge=1, le=2**62, description="Version number")]
LabelName = Annotated[str, Path(min_length=1, max_length=128, description="Version label")]
SIGNATURE = "serving_default"
PRODUCTION = "production"
STATES = {
    pb.VersionStatus.STATE_LOADING: "LOADING",
    pb.VersionStatus.STATE_AVAILABLE: "AVAILABLE",
    pb.VersionStatus.STATE_UNLOADING: "UNLOADING",
    pb.VersionStatus.STATE_FAILED: "END",
    pb.VersionStatus.STATE_END: "END",
}


class VersionStatus(BaseModel):
    version: str
    state: str = Field(description="START, LOADING, AVAILABLE, UNLOADING or END")
    status: dict[str, str] = Field(description="error_code and error_message")


class ModelStatus(BaseModel):
    model_version_status: list[VersionStatus]


class PredictBody(BaseModel):
    signature_name: str = Field(default="", max_length=256)
    instances: list[Any] | None = Field(default=None, description="Row format")
    inputs: Any = Field(default=None, description="Columnar format")


class RowPredictions(BaseModel):
    predictions: list[Any] | None = Field(default=None, description="Answer to `instances`")
    outputs: Any = Field(default=None, description="Answer to `inputs`")


def _backends(request: Request) -> Backends:
    return request.app.state.backends


async def _status(request: Request, model: str) -> pb.ModelStatus:
    b = _backends(request)
    reply = await b.read(b.inference.GetModelStatus, pb.GetModelStatusRequest(model=model))
    return reply.status


def _target(status: pb.ModelStatus, version: int, label: str) -> pb.VersionStatus:
    """The version a request is for: pinned by number or label, else production."""
    wanted = label or PRODUCTION
    for candidate in status.versions:
        if (candidate.version == version) if version else (wanted in candidate.labels):
            return candidate
    if version:
        raise NotFound("model version", f"{status.name}/{version}", "version")
    if label:
        raise NotFound("model label", f"{status.name}@{label}", "label")
    raise Unavailable(f"model {status.name!r} has no {PRODUCTION} version loaded", 1.0)


def _version_status(version: pb.VersionStatus) -> dict[str, Any]:
    failed = version.state == pb.VersionStatus.STATE_FAILED
    return {
        "version": str(version.version),
        "state": STATES.get(version.state, "UNKNOWN"),
        "status": {
            "error_code": "UNKNOWN" if failed else "OK",
            "error_message": version.reason if failed else "",
        },
    }


async def _model_status(request: Request, model: str, version: int, label: str) -> dict[str, Any]:
    status = await _status(request, model)
    pinned = version or label
    versions = [_target(status, version, label)] if pinned else list(status.versions)
    return {"model_version_status": [_version_status(v) for v in versions]}


def _tensor_info(spec: pb.TensorSpec) -> dict[str, Any]:
    return {
        "dtype": TF_DTYPE_NAMES.get(spec.dtype, "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(size), "name": ""} for size in spec.shape],
            "unknown_rank": False,
        },
        "name": spec.name,
    }


async def _metadata(request: Request, model: str, version: int, label: str) -> dict[str, Any]:
    target = _target(await _status(request, model), version, label)
    signature = {
        "inputs": {spec.name: _tensor_info(spec) for spec in target.inputs},
        "outputs": {spec.name: _tensor_info(spec) for spec in target.outputs},
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    return {
        "model_spec": {"name": model, "signature_name": "", "version": str(target.version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}},
    }


def _named_columns(
    columns: dict[str, Any], specs: dict[str, pb.TensorSpec], field: str
) -> dict[str, np.ndarray]:
    arrays = {}
    for name, values in columns.items():
        spec = specs.get(name)
        if spec is None:
            raise invalid(f"{field}.{name}", f"unknown input; the model takes {sorted(specs)}")
        if spec.dtype not in TF_DTYPE_NAMES or spec.dtype == common_pb2.DTYPE_STRING:
            raise FailedPrecondition(f"input {name!r} has a dtype JSON numbers cannot carry")
        arrays[name] = array_from_json(values, numpy_dtype(spec.dtype), f"{field}.{name}")
    return arrays


def _single_input(specs: dict[str, pb.TensorSpec], field: str) -> str:
    if len(specs) != 1:
        raise invalid(
            field,
            f"the model takes {len(specs)} inputs {sorted(specs)}: name them in an object",
        )
    return next(iter(specs))


def _row_inputs(instances: list[Any], specs: dict[str, pb.TensorSpec]) -> dict[str, np.ndarray]:
    if not instances:
        raise invalid("instances", "give at least one instance")
    named = [isinstance(instance, dict) for instance in instances]
    if not any(named):
        return _named_columns({_single_input(specs, "instances"): instances}, specs, "instances")
    if not all(named) or any(set(i) != set(instances[0]) for i in instances):
        raise invalid("instances", "every instance must be an object naming the same inputs")
    columns = {name: [instance[name] for instance in instances] for name in instances[0]}
    return _named_columns(columns, specs, "instances")


def _columnar_inputs(inputs: Any, specs: dict[str, pb.TensorSpec]) -> dict[str, np.ndarray]:
    if isinstance(inputs, dict):
        return _named_columns(inputs, specs, "inputs")
    return _named_columns({_single_input(specs, "inputs"): inputs}, specs, "inputs")


async def _predict(
    request: Request, model: str, body: PredictBody, version: int, label: str
) -> OrjsonResponse:
    if body.signature_name not in ("", SIGNATURE):
        raise invalid("signature_name", f"unknown signature; the model has {SIGNATURE!r}")
    if (body.instances is None) == (body.inputs is None):
        raise invalid("instances", "give either `instances` (rows) or `inputs` (columns)")
    target = _target(await _status(request, model), version, label)
    specs = {spec.name: spec for spec in target.inputs}
    if body.instances is not None:
        arrays = _row_inputs(body.instances, specs)
    else:
        arrays = _columnar_inputs(body.inputs, specs)
    message = pb.PredictRequest(
        model=model, inputs={name: to_tensor(array) for name, array in arrays.items()}
    )
    if version:
        message.version = version
    elif label:
        message.label = label
    b = _backends(request)
    reply = await b.read(b.inference.Predict, message)
    outputs = {name: from_tensor(t, f"outputs.{name}") for name, t in reply.outputs.items()}
    if body.inputs is not None:
        only = next(iter(outputs.values())) if len(outputs) == 1 else None
        return OrjsonResponse({"outputs": outputs if only is None else only})
    if len(outputs) == 1:
        return OrjsonResponse({"predictions": next(iter(outputs.values()))})
    rows = len(next(iter(outputs.values())))
    return OrjsonResponse(
        {"predictions": [{name: value[i] for name, value in outputs.items()} for i in range(rows)]}
    )


@router.get(
    "/{model}",
    summary="TF Serving: status of a model's versions",
    response_model=ModelStatus,
)
async def model_status(request: Request, model: ModelName) -> dict[str, Any]:
    return await _model_status(request, model, 0, "")


@router.get(
    "/{model}/versions/{version}",
    summary="TF Serving: status of a version",
    response_model=ModelStatus,
)
async def version_status(
    request: Request, model: ModelName, version: VersionNumber
) -> dict[str, Any]:
    return await _model_status(request, model, version, "")


@router.get(
    "/{model}/labels/{label}",
    summary="TF Serving: status of the version a label names",
    response_model=ModelStatus,
)
async def label_status(request: Request, model: ModelName, label: LabelName) -> dict[str, Any]:
    return await _model_status(request, model, 0, label)


@router.get("/{model}/metadata", summary="TF Serving: the serving signature")
async def metadata(request: Request, model: ModelName) -> dict[str, Any]:
    return await _metadata(request, model, 0, "")


@router.get(
    "/{model}/versions/{version}/metadata",
    summary="TF Serving: a version's serving signature",
)
async def version_metadata(
    request: Request, model: ModelName, version: VersionNumber
) -> dict[str, Any]:
    return await _metadata(request, model, version, "")


@router.get(
    "/{model}/labels/{label}/metadata",
    summary="TF Serving: the serving signature of a label's version",
)
async def label_metadata(request: Request, model: ModelName, label: LabelName) -> dict[str, Any]:
    return await _metadata(request, model, 0, label)


@router.post(
    "/{model}:predict",
    summary="TF Serving: predict (row or columnar format)",
    response_model=None,
    responses={200: {"model": RowPredictions}},
)
async def predict(request: Request, model: ModelName, body: PredictBody) -> OrjsonResponse:
    return await _predict(request, model, body, 0, "")


@router.post(
    "/{model}/versions/{version}:predict",
    summary="TF Serving: predict with a version",
    response_model=None,
    responses={200: {"model": RowPredictions}},
)
async def version_predict(
    request: Request, model: ModelName, version: VersionNumber, body: PredictBody
) -> OrjsonResponse:
    return await _predict(request, model, body, version, "")


@router.post(
    "/{model}/labels/{label}:predict",
    summary="TF Serving: predict with the version a label names",
    response_model=None,
    responses={200: {"model": RowPredictions}},
)
async def label_predict(
    request: Request, model: ModelName, label: LabelName, body: PredictBody
) -> OrjsonResponse:
    return await _predict(request, model, body, 0, label)
