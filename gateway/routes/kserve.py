"""KServe v2's REST API (Open Inference Protocol, `/v2/...`) over its gRPC twin.

Each route calls the same-named RPC of `inference.GRPCInferenceService` on the inference
service. Inference inputs arrive as typed JSON (`datatype`, `shape`, `data` nested or
flat) and travel as `raw_input_contents`; outputs come back raw and leave as flat `data`.
Health answers 200 for true and 400 for false, as the protocol says; failures are
`{"error": "<message>"}`."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field, StrictBool

from gateway.backends import Backends
from gateway.errors import ServingApiRoute
from gateway.jsonio import OrjsonResponse
from inference import grpc_predict_v2_pb2 as pb
from shared.json_tensors import array_from_json, kserve_dtype

router = APIRouter(prefix="/v2", tags=["kserve"], route_class=ServingApiRoute)

ModelName = Annotated[str, Path(min_length=1, max_length=128, description="Model name")]
ModelVersion = Annotated[
    str, Path(min_length=1, max_length=128, description="A version number, or a label")
]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Parameters = dict[str, StrictBool | Int64 | float | str]
Shape = list[Annotated[int, Field(ge=0, le=2**62)]]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class InferInput(BaseModel):
    name: str = Field(min_length=1, max_length=256)
    shape: Shape = Field(max_length=32)
    datatype: str = Field(max_length=16)
    parameters: Parameters = Field(default_factory=dict)
    data: list[Any] = Field(description="Row-major values, nested or flat")


class RequestedOutput(BaseModel):
    name: str = Field(min_length=1, max_length=256)
    parameters: Parameters = Field(default_factory=dict)


class InferBody(BaseModel):
    id: str = Field(default="", max_length=256)
    parameters: Parameters = Field(default_factory=dict)
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[RequestedOutput] = Field(default_factory=list)


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters = Field(default_factory=dict)
    data: list[Any] = Field(description="Row-major values, flat")


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    parameters: Parameters = Field(default_factory=dict)
    outputs: list[InferOutput]


NOT_READY: dict[int | str, dict[str, Any]] = {400: {"description": "Not ready"}}


def _backends(request: Request) -> Backends:
    return request.app.state.backends


def _set_parameters(target: Any, values: Parameters) -> None:
    """Fill a `map<string, InferParameter>` from JSON values."""
    for key, value in values.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            target[key].int64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        else:
            target[key].string_param = value


def _parameters(source: Any) -> dict[str, Any]:
    """A `map<string, InferParameter>` as JSON values (unset parameters left out)."""
    values = {}
    for key, parameter in source.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(parameter, choice)
    return values


def _health(key: str, value: bool) -> OrjsonResponse:
    return OrjsonResponse({key: value}, 200 if value else 400)


@router.get("", summary="KServe v2: server metadata", response_model=ServerMetadata)
async def server_metadata(request: Request) -> dict[str, Any]:
    b = _backends(request)
    reply = await b.read(b.kserve.ServerMetadata, pb.ServerMetadataRequest())
    return {"name": reply.name, "version": reply.version, "extensions": list(reply.extensions)}


@router.get(
    "/health/live",
    summary="KServe v2: the inference server is live",
    response_model=Live,
    responses=NOT_READY,
)
async def server_live(request: Request) -> OrjsonResponse:
    b = _backends(request)
    return _health("live", (await b.read(b.kserve.ServerLive, pb.ServerLiveRequest())).live)


@router.get(
    "/health/ready",
    summary="KServe v2: every model is ready",
    response_model=Ready,
    responses=NOT_READY,
)
async def server_ready(request: Request) -> OrjsonResponse:
    b = _backends(request)
    return _health("ready", (await b.read(b.kserve.ServerReady, pb.ServerReadyRequest())).ready)


async def _model_ready(request: Request, model: str, version: str) -> OrjsonResponse:
    b = _backends(request)
    reply = await b.read(b.kserve.ModelReady, pb.ModelReadyRequest(name=model, version=version))
    return OrjsonResponse({"name": model, "ready": reply.ready}, 200 if reply.ready else 400)


@router.get(
    "/models/{model}/ready",
    summary="KServe v2: the model is ready",
    response_model=ModelReady,
    responses=NOT_READY,
)
async def model_ready(request: Request, model: ModelName) -> OrjsonResponse:
    return await _model_ready(request, model, "")


@router.get(
    "/models/{model}/versions/{version}/ready",
    summary="KServe v2: the model version is ready",
    response_model=ModelReady,
    responses=NOT_READY,
)
async def version_ready(
    request: Request, model: ModelName, version: ModelVersion
) -> OrjsonResponse:
    return await _model_ready(request, model, version)


def _tensor_metadata(tensor: pb.ModelMetadataResponse.TensorMetadata) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


async def _model_metadata(request: Request, model: str, version: str) -> dict[str, Any]:
    b = _backends(request)
    message = pb.ModelMetadataRequest(name=model, version=version)
    reply = await b.read(b.kserve.ModelMetadata, message)
    return {
        "name": reply.name,
        "versions": list(reply.versions),
        "platform": reply.platform,
        "inputs": [_tensor_metadata(t) for t in reply.inputs],
        "outputs": [_tensor_metadata(t) for t in reply.outputs],
    }


@router.get(
    "/models/{model}",
    summary="KServe v2: model metadata",
    response_model=ModelMetadata,
)
async def model_metadata(request: Request, model: ModelName) -> dict[str, Any]:
    return await _model_metadata(request, model, "")


@router.get(
    "/models/{model}/versions/{version}",
    summary="KServe v2: model version metadata",
    response_model=ModelMetadata,
)
async def version_metadata(
    request: Request, model: ModelName, version: ModelVersion
) -> dict[str, Any]:
    return await _model_metadata(request, model, version)


def infer_request(model: str, version: str, body: InferBody) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=model, model_version=version, id=body.id)
    _set_parameters(message.parameters, body.parameters)
    for index, tensor in enumerate(body.inputs):
        field = f"inputs[{index}]"
        dtype = kserve_dtype(tensor.datatype, f"{field}.datatype")
        array = array_from_json(tensor.data, dtype, f"{field}.data", tensor.shape)
        entry = message.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        _set_parameters(entry.parameters, tensor.parameters)
        message.raw_input_contents.append(array.tobytes())
    for output in body.outputs:
        _set_parameters(message.outputs.add(name=output.name).parameters, output.parameters)
    return message


def infer_answer(reply: pb.ModelInferResponse) -> dict[str, Any]:
    outputs = []
    for index, output in enumerate(reply.outputs):
        dtype = kserve_dtype(output.datatype, f"outputs[{index}].datatype")
        data = np.frombuffer(reply.raw_output_contents[index], dtype=dtype)
        outputs.append(
            {
                "name": output.name,
                "shape": list(output.shape),
                "datatype": output.datatype,
                "parameters": _parameters(output.parameters),
                "data": data,
            }
        )
    return {
        "model_name": reply.model_name,
        "model_version": reply.model_version,
        "id": reply.id,
        "parameters": _parameters(reply.parameters),
        "outputs": outputs,
    }


async def _infer(request: Request, model: str, version: str, body: InferBody) -> OrjsonResponse:
    b = _backends(request)
    reply = await b.read(b.kserve.ModelInfer, infer_request(model, version, body))
    return OrjsonResponse(infer_answer(reply))


@router.post(
    "/models/{model}/infer",
    summary="KServe v2: inference",
    response_model=None,
    responses={200: {"model": InferResponse}},
)
async def infer(request: Request, model: ModelName, body: InferBody) -> OrjsonResponse:
    return await _infer(request, model, "", body)


@router.post(
    "/models/{model}/versions/{version}/infer",
    summary="KServe v2: inference with a version (a number or a label)",
    response_model=None,
    responses={200: {"model": InferResponse}},
)
async def version_infer(
    request: Request, model: ModelName, version: ModelVersion, body: InferBody
) -> OrjsonResponse:
    return await _infer(request, model, version, body)
