"""TF Serving's REST API (`/v1/models/...`), forwarded to the inference service, which
serves it itself (`gateway.forward`).

Status, metadata and `:predict` for a model, a pinned version, or a label, with TF
Serving's request formats: row (`instances`, one entry per example, an object of named
inputs when there are several) and columnar (`inputs`, one batch per input), answered as
`predictions` and `outputs` respectively; failures as `{"error": "<message>"}`. The
routes here document the API; each one passes the request on unparsed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from gateway.forward import forward
from gateway.schemas import model_body

router = APIRouter(prefix="/v1/models", tags=["tfserving"])

ModelName = Annotated[str, Path(min_length=1, max_length=128, description="Model name")]
VersionNumber = Annotated[int, Path(ge=1, le=2**62, description="Version number")]
LabelName = Annotated[str, Path(min_length=1, max_length=128, description="Version label")]


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


PREDICT: dict[str, Any] = {
    "response_model": None,
    "responses": {200: {"model": RowPredictions}},
    "openapi_extra": model_body(PredictBody),
}


@router.get(
    "/{model}", summary="TF Serving: status of a model's versions", response_model=ModelStatus
)
async def model_status(request: Request, model: ModelName) -> Response:
    return await forward(request)


@router.get(
    "/{model}/versions/{version}",
    summary="TF Serving: status of a version",
    response_model=ModelStatus,
)
async def version_status(request: Request, model: ModelName, version: VersionNumber) -> Response:
    return await forward(request)


@router.get(
    "/{model}/labels/{label}",
    summary="TF Serving: status of the version a label names",
    response_model=ModelStatus,
)
async def label_status(request: Request, model: ModelName, label: LabelName) -> Response:
    return await forward(request)


@router.get("/{model}/metadata", summary="TF Serving: the serving signature")
async def metadata(request: Request, model: ModelName) -> Response:
    return await forward(request)


@router.get(
    "/{model}/versions/{version}/metadata", summary="TF Serving: a version's serving signature"
)
async def version_metadata(request: Request, model: ModelName, version: VersionNumber) -> Response:
    return await forward(request)


@router.get(
    "/{model}/labels/{label}/metadata",
    summary="TF Serving: the serving signature of a label's version",
)
async def label_metadata(request: Request, model: ModelName, label: LabelName) -> Response:
    return await forward(request)


@router.post("/{model}:predict", summary="TF Serving: predict (row or columnar format)", **PREDICT)
async def predict(request: Request, model: ModelName) -> Response:
    return await forward(request)


@router.post(
    "/{model}/versions/{version}:predict", summary="TF Serving: predict with a version", **PREDICT
)
async def version_predict(request: Request, model: ModelName, version: VersionNumber) -> Response:
    return await forward(request)


@router.post(
    "/{model}/labels/{label}:predict",
    summary="TF Serving: predict with the version a label names",
    **PREDICT,
)
async def label_predict(request: Request, model: ModelName, label: LabelName) -> Response:
    return await forward(request)


@router.api_route("/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
async def other(request: Request, rest: str) -> Response:
    """Everything else under /v1/models (`:classify`, unknown paths): the front ends answer."""
    return await forward(request)
