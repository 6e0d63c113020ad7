"""`/api/v1/...`: predictions and serving status from the inference service, over REST.

A prediction's tensors travel as JSON: `{"dtype": "float32", "shape": [rows, ...],
"data": [...]}` with `data` nested or flat (in row-major order, `shape` then required),
converted to the raw tensors of `tfmesh.inference.v1` and back. Left unpinned, a request
follows `production` (or the canary, by its weight); `version` or `label` pin it. Every
prediction carries a request id, by which feedback reports its true outcome later."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from gateway.backends import Backends
from gateway.jsonio import OrjsonResponse, message_response
from gateway.schemas import proto_response
from shared.errors import invalid
from shared.json_tensors import DTYPE_NAMES, array_from_json, dtype_named
from shared.serving_names import VERSION_HEADER
from shared.tensors import from_tensor, to_tensor
from tfmesh.common.v1 import common_pb2
from tfmesh.inference.v1 import inference_pb2 as pb

router = APIRouter(prefix="/api/v1", tags=["inference"])

ModelName = Annotated[str, Path(min_length=1, max_length=128, description="Model name")]
DTypeName = Annotated[str, Field(json_schema_extra={"enum": sorted(DTYPE_NAMES)})]


class TensorValue(BaseModel):
    dtype: DTypeName = "float32"
    shape: list[Annotated[int, Field(ge=0, le=2**31)]] | None = Field(
        default=None, max_length=32, description="Required when `data` is flat"
    )
    data: list[Any] = Field(description="Values in row-major order, nested or flat")


class PredictBody(BaseModel):
    inputs: dict[str, TensorValue] = Field(min_length=1, description="Tensors by input name")
    version: int = Field(default=0, ge=0, le=2**62, description="Pin a version")
    label: str = Field(default="", max_length=128, description="Pin an alias, e.g. canary")
    output_filter: list[str] = Field(default_factory=list, description="Outputs to return")
    request_id: str = Field(
        default="", max_length=128, description="Made up by the service when empty"
    )


class Prediction(BaseModel):
    model: str
    version: int = Field(description="The version that computed the outputs")
    outputs: dict[str, TensorValue]
    request_id: str


def _backends(request: Request) -> Backends:
    return request.app.state.backends


def _input_tensors(body: PredictBody) -> dict[str, common_pb2.Tensor]:
    tensors = {}
    for name, value in body.inputs.items():
        field = f"inputs.{name}"
        dtype = dtype_named(value.dtype, f"{field}.dtype")
        tensors[name] = to_tensor(array_from_json(value.data, dtype, f"{field}.data", value.shape))
    return tensors


def tensor_value(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": array.dtype.name, "shape": list(array.shape), "data": array}


@router.post(
    "/models/{model}/predict",
    summary="Predict with a served model",
    response_model=None,
    responses={200: {"model": Prediction}},
)
async def predict(request: Request, model: ModelName, body: PredictBody) -> OrjsonResponse:
    if body.version and body.label:
        raise invalid("label", "pin a version or a label, not both")
    message = pb.PredictRequest(
        model=model,
        inputs=_input_tensors(body),
        output_filter=body.output_filter,
        request_id=body.request_id,
    )
    if body.version:
        message.version = body.version
    elif body.label:
        message.label = body.label
    b = _backends(request)
    reply = await b.call(b.inference.Predict, message)
    outputs = {
        name: tensor_value(from_tensor(tensor, f"outputs.{name}"))
        for name, tensor in reply.outputs.items()
    }
    return OrjsonResponse(
        {
            "model": reply.model,
            "version": reply.version,
            "outputs": outputs,
            "request_id": reply.request_id,
        },
        headers={VERSION_HEADER: str(reply.version)},
    )


@router.get(
    "/serving",
    summary="Models the inference service serves, with their versions' states",
    response_model=None,
    responses={200: proto_response(pb.ListModelsResponse)},
)
async def serving(
    request: Request,
    page_size: Annotated[int, Query(ge=0, le=1000)] = 0,
    page_token: Annotated[str, Query(max_length=1024)] = "",
) -> OrjsonResponse:
    b = _backends(request)
    message = pb.ListModelsRequest(page_size=page_size, page_token=page_token)
    return message_response(await b.call(b.inference.ListModels, message))


@router.get(
    "/serving/{model}",
    summary="A served model: versions, labels, signatures, batching, canary weight",
    response_model=None,
    responses={200: proto_response(pb.GetModelStatusResponse)},
)
async def serving_model(request: Request, model: ModelName) -> OrjsonResponse:
    b = _backends(request)
    message = pb.GetModelStatusRequest(model=model)
    return message_response(await b.call(b.inference.GetModelStatus, message))


@router.get(
    "/serving/{model}/drift",
    summary="Drift of a served model's live inputs from its training data, per version",
    response_model=None,
    responses={200: proto_response(pb.GetDriftResponse)},
)
async def serving_drift(
    request: Request,
    model: ModelName,
    version: Annotated[int, Query(ge=0, description="0: every loaded version")] = 0,
) -> OrjsonResponse:
    b = _backends(request)
    message = pb.GetDriftRequest(model=model, version=version)
    return message_response(await b.call(b.inference.GetDrift, message))


class FeedbackItemBody(BaseModel):
    request_id: str = Field(min_length=1, max_length=128, description="The prediction's id")
    labels: list[float] = Field(
        min_length=1, max_length=65536, description="The true value of each row, in order"
    )
    version: int = Field(default=0, ge=0, le=2**62, description="Check the serving version")


class FeedbackBody(BaseModel):
    items: list[FeedbackItemBody] = Field(min_length=1, max_length=10_000)


@router.post(
    "/serving/{model}/feedback",
    summary="Report the true outcomes of earlier predictions, by request id",
    response_model=None,
    responses={200: proto_response(pb.ReportFeedbackResponse)},
)
async def serving_feedback(
    request: Request, model: ModelName, body: FeedbackBody
) -> OrjsonResponse:
    b = _backends(request)
    message = pb.ReportFeedbackRequest(
        model=model,
        items=[
            pb.FeedbackItem(request_id=i.request_id, labels=i.labels, version=i.version)
            for i in body.items
        ],
    )
    return message_response(await b.call(b.inference.ReportFeedback, message))


@router.get(
    "/serving/{model}/stats",
    summary="Per loaded version: requests, model errors, latencies and live accuracy",
    response_model=None,
    responses={200: proto_response(pb.GetVersionStatsResponse)},
)
async def serving_stats(request: Request, model: ModelName) -> OrjsonResponse:
    b = _backends(request)
    message = pb.GetVersionStatsRequest(model=model)
    return message_response(await b.call(b.inference.GetVersionStats, message))


@router.get(
    "/serving/{model}/queue",
    summary="Per loaded version: requests and rows waiting, capacity, oldest wait",
    response_model=None,
    responses={200: proto_response(pb.GetQueueResponse)},
)
async def serving_queue(request: Request, model: ModelName) -> OrjsonResponse:
    b = _backends(request)
    return message_response(await b.call(b.inference.GetQueue, pb.GetQueueRequest(model=model)))
