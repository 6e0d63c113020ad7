"""TF Serving's REST API (`/v1/models/...`), as the gateway's OpenAPI document describes it.

Status, metadata and `:predict` for a model, a pinned version, or a label, with TF
Serving's request formats: row (`instances`, one entry per example, an object of named
inputs when there are several) and columnar (`inputs`, one batch per input), answered as
`predictions` and `outputs` respectively; failures as `{"error": "<message>"}`. The
inference service serves it itself and the gateway forwards these paths unparsed
(`gateway.forward`), so this router is not mounted: its routes are declarations read only
to write the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

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
async def model_status(model: ModelName) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.get(
    "/{model}/versions/{version}",
    summary="TF Serving: status of a version",
    response_model=ModelStatus,
)
async def version_status(model: ModelName, version: VersionNumber) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.get(
    "/{model}/labels/{label}",
    summary="TF Serving: status of the version a label names",
    response_model=ModelStatus,
)
async def label_status(model: ModelName, label: LabelName) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.get("/{model}/metadata", summary="TF Serving: the serving signature")
async def metadata(model: ModelName) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.get(
    "/{model}/versions/{version}/metadata", summary="TF Serving: a version's serving signature"
)
async def version_metadata(model: ModelName, version: VersionNumber) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.get(
    "/{model}/labels/{label}/metadata",
    summary="TF Serving: the serving signature of a label's version",
)
async def label_metadata(model: ModelName, label: LabelName) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.post("/{model}:predict", summary="TF Serving: predict (row or columnar format)", **PREDICT)
async def predict(model: ModelName) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.post(
    "/{model}/versions/{version}:predict", summary="TF Serving: predict with a version", **PREDICT
)
async def version_predict(model: ModelName, version: VersionNumber) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.post(
    "/{model}/labels/{label}:predict",
    summary="TF Serving: predict with the version a label names",
    **PREDICT,
)
async def label_predict(model: ModelName, label: LabelName) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""
