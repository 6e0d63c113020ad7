"""KServe v2's REST API (Open Inference Protocol, `/v2/...`), as the gateway's OpenAPI
document describes it. The inference service serves it itself and the gateway forwards
these paths unparsed (`gateway.forward`), so this router is not mounted: its routes are
declarations of the paths, bodies and answers, read only to write the document.

Health answers 200 for true and 400 for false, as the protocol says; failures are
`{"error": "<message>"}`. A body may also be Triton's binary form (JSON, then raw tensors,
with the `Inference-Header-Content-Length` header), which the document does not describe."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, StrictBool

from gateway.schemas import model_body

router = APIRouter(prefix="/v2", tags=["kserve"])

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
INFER: dict[int | str, dict[str, Any]] = {200: {"model": InferResponse}}


@router.get("", summary="KServe v2: server metadata", response_model=ServerMetadata)
async def server_metadata() -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.get(
    "/health/live",
    summary="KServe v2: the inference server is live",
    response_model=Live,
    responses=NOT_READY,
)
async def server_live() -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.get(
    "/health/ready",
    summary="KServe v2: every model is ready",
    response_model=Ready,
    responses=NOT_READY,
)
async def server_ready() -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.get(
    "/models/{model}/ready",
    summary="KServe v2: the model is ready",
    response_model=ModelReady,
    responses=NOT_READY,
)
async def model_ready(model: ModelName) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.get(
    "/models/{model}/versions/{version}/ready",
    summary="KServe v2: the model version is ready",
    response_model=ModelReady,
    responses=NOT_READY,
)
async def version_ready(model: ModelName, version: ModelVersion) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.get("/models/{model}", summary="KServe v2: model metadata", response_model=ModelMetadata)
async def model_metadata(model: ModelName) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.get(
    "/models/{model}/versions/{version}",
    summary="KServe v2: model version metadata",
    response_model=ModelMetadata,
)
async def version_metadata(model: ModelName, version: ModelVersion) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.post(
    "/models/{model}/infer",
    summary="KServe v2: inference",
    response_model=None,
    responses=INFER,
    openapi_extra=model_body(InferBody),
)
async def infer(model: ModelName) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""


@router.post(
    "/models/{model}/versions/{version}/infer",
    summary="KServe v2: inference with a version (a number or a label)",
    response_model=None,
    responses=INFER,
    openapi_extra=model_body(InferBody),
)
async def version_infer(model: ModelName, version: ModelVersion) -> None:
    """Answered by the inference service's front ends (gateway.forward)."""
