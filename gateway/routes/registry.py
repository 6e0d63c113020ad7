"""`/api/v1/models/...`: the registry's models, versions (and their artifacts' bytes),
aliases and audit log over REST."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from gateway.backends import Backends
from gateway.jsonio import to_json
from gateway.schemas import proto_response
from shared.errors import Unavailable
from tfmesh.registry.v1 import registry_pb2 as pb

router = APIRouter(prefix="/api/v1/models", tags=["registry"])

ModelName = Annotated[str, Path(min_length=1, max_length=128, description="Model name")]
VersionNumber = Annotated[int, Path(ge=1, le=2**62, description="Version number")]
AliasName = Annotated[str, Path(min_length=1, max_length=128)]
PageSize = Annotated[int, Query(ge=0, le=1000)]
PageToken = Annotated[str, Query(max_length=1024)]


class PromotionRuleBody(BaseModel):
    metric: str = Field(min_length=1, max_length=128)
    min_improvement: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    higher_is_better: bool = True


class CreateModelBody(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    description: str = Field(default="", max_length=4096)
    promotion_rule: PromotionRuleBody | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class SetAliasBody(BaseModel):
    version: int = Field(ge=1, le=2**62)
    traffic_weight: int = Field(default=0, ge=0, le=100)
    actor: str = Field(default="", max_length=256)
    reason: str = Field(default="", max_length=4096)
    override_gate: bool = False


def _backends(request: Request) -> Backends:
    return request.app.state.backends


@router.get(
    "",
    summary="List models",
    response_model=None,
    responses={200: proto_response(pb.ListModelsResponse)},
)
async def list_models(
    request: Request, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    b = _backends(request)
    reply = await b.call(
        b.registry.ListModels, pb.ListModelsRequest(page_size=page_size, page_token=page_token)
    )
    return to_json(reply)


@router.post(
    "",
    summary="Create a model",
    status_code=201,
    response_model=None,
    responses={201: proto_response(pb.CreateModelResponse)},
)
async def create_model(request: Request, body: CreateModelBody) -> dict[str, Any]:
    b = _backends(request)
    message = pb.CreateModelRequest(name=body.name, description=body.description, tags=body.tags)
    if body.promotion_rule is not None:
        message.promotion_rule.CopyFrom(pb.PromotionRule(**body.promotion_rule.model_dump()))
    return to_json(await b.call(b.registry.CreateModel, message))


@router.get(
    "/{model}",
    summary="Get a model",
    response_model=None,
    responses={200: proto_response(pb.GetModelResponse)},
)
async def get_model(request: Request, model: ModelName) -> dict[str, Any]:
    b = _backends(request)
    return to_json(await b.call(b.registry.GetModel, pb.GetModelRequest(name=model)))


@router.get(
    "/{model}/versions",
    summary="List a model's versions",
    response_model=None,
    responses={200: proto_response(pb.ListVersionsResponse)},
)
async def list_versions(
    request: Request, model: ModelName, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    b = _backends(request)
    message = pb.ListVersionsRequest(model=model, page_size=page_size, page_token=page_token)
    return to_json(await b.call(b.registry.ListVersions, message))


@router.get(
    "/{model}/versions/{version}",
    summary="Get a version",
    response_model=None,
    responses={200: proto_response(pb.GetVersionResponse)},
)
async def get_version(request: Request, model: ModelName, version: VersionNumber):
    b = _backends(request)
    message = pb.GetVersionRequest(model=model, version=version)
    return to_json(await b.call(b.registry.GetVersion, message))


@router.get(
    "/{model}/versions/{version}/artifacts/{artifact}",
    summary="Download one of a version's artifacts (its bytes, checked against its sha256)",
    response_class=StreamingResponse,
    responses={200: {"description": "The artifact's bytes, in its media type"}},
)
async def download_artifact(
    request: Request, model: ModelName, version: VersionNumber, artifact: AliasName
) -> StreamingResponse:
    b = _backends(request)
    message = pb.DownloadArtifactRequest(model=model, version=version, artifact=artifact)
    call = b.registry.DownloadArtifact(message, timeout=b.watch_deadline_s)
    try:
        # The artifact's description (or the failure of an unknown one) before the status line.
        first = await call.read()
    except BaseException:
        call.cancel()
        raise
    if not isinstance(first, pb.DownloadArtifactResponse) or not first.HasField("info"):
        call.cancel()
        raise Unavailable("the registry ended the download before describing the artifact")
    info = first.info
    headers = {
        "content-length": str(info.size_bytes),
        "x-sha256": info.sha256,
        # The bytes are whatever was uploaded: never rendered as a page of this origin.
        "content-disposition": f'attachment; filename="{info.name}"',
        "x-content-type-options": "nosniff",
        "content-security-policy": "sandbox",
    }
    return StreamingResponse(
        _chunks(call), media_type=info.media_type or "application/octet-stream", headers=headers
    )


async def _chunks(call: grpc.aio.UnaryStreamCall) -> AsyncIterator[bytes]:
    """The artifact's chunks, each held back until the next one (or the stream's clean end)
    arrives: the registry checks the digest at the end, so a failure then leaves the body
    short of its content-length instead of looking complete."""
    held: bytes | None = None
    try:
        while isinstance(part := await call.read(), pb.DownloadArtifactResponse):
            if held is not None:
                yield held
            held = part.chunk
        if held is not None:
            yield held
    finally:
        call.cancel()


@router.delete("/{model}/versions/{version}", summary="Delete a version", status_code=204)
async def delete_version(request: Request, model: ModelName, version: VersionNumber) -> None:
    b = _backends(request)
    await b.call(b.registry.DeleteVersion, pb.DeleteVersionRequest(model=model, version=version))


@router.get(
    "/{model}/aliases",
    summary="List a model's aliases",
    response_model=None,
    responses={200: proto_response(pb.ListAliasesResponse)},
)
async def list_aliases(request: Request, model: ModelName) -> dict[str, Any]:
    b = _backends(request)
    return to_json(await b.call(b.registry.ListAliases, pb.ListAliasesRequest(model=model)))


@router.put(
    "/{model}/aliases/{alias}",
    summary="Point an alias at a version",
    response_model=None,
    responses={200: proto_response(pb.SetAliasResponse)},
)
async def set_alias(
    request: Request, model: ModelName, alias: AliasName, body: SetAliasBody
) -> dict[str, Any]:
    b = _backends(request)
    message = pb.SetAliasRequest(model=model, alias=alias, **body.model_dump())
    return to_json(await b.call(b.registry.SetAlias, message))


@router.delete("/{model}/aliases/{alias}", summary="Delete an alias", status_code=204)
async def delete_alias(
    request: Request,
    model: ModelName,
    alias: AliasName,
    actor: Annotated[str, Query(max_length=256)] = "",
    reason: Annotated[str, Query(max_length=4096)] = "",
) -> None:
    b = _backends(request)
    message = pb.DeleteAliasRequest(model=model, alias=alias, actor=actor, reason=reason)
    await b.call(b.registry.DeleteAlias, message)


@router.get(
    "/{model}/alias-history",
    summary="The audit log of a model's alias changes",
    response_model=None,
    responses={200: proto_response(pb.ListAliasHistoryResponse)},
)
async def alias_history(
    request: Request, model: ModelName, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    b = _backends(request)
    message = pb.ListAliasHistoryRequest(model=model, page_size=page_size, page_token=page_token)
    return to_json(await b.call(b.registry.ListAliasHistory, message))
