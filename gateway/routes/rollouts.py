"""`/api/v1/models/{model}/rollout...`: a model's rollout policy and its rollout over REST,
as `tfmesh rollout` offers them (status, pause, resume, abort)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from gateway.backends import Backends
from gateway.jsonio import to_json
from gateway.schemas import proto_response
from shared.rollout_metrics import BY_NAME
from tfmesh.registry.v1 import registry_pb2 as pb

router = APIRouter(prefix="/api/v1/models", tags=["rollouts"])

ModelName = Annotated[str, Path(min_length=1, max_length=128, description="Model name")]


class CheckBody(BaseModel):
    metric: Literal["error_ratio", "latency_p99", "live_accuracy"]
    max_degradation: float = Field(
        allow_inf_nan=False, description="Ratios: absolute points; latency: relative"
    )
    min_samples: int = Field(ge=0, le=10**9)


class PolicyBody(BaseModel):
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        max_length=100, description="Canary weights in percent, increasing to 100"
    )
    step_seconds: float = Field(allow_inf_nan=False)
    step_min_requests: int = Field(ge=0, le=10**9)
    step_timeout_seconds: float = Field(allow_inf_nan=False)
    checks: list[CheckBody] = Field(default_factory=list, max_length=16)
    confidence: float = Field(default=0.0, allow_inf_nan=False, description="0 means 0.95")


class ChangeBody(BaseModel):
    reason: str = Field(default="", max_length=4096)
    actor: str = Field(default="", max_length=256)


def _backends(request: Request) -> Backends:
    return request.app.state.backends


@router.put(
    "/{model}/rollout-policy",
    summary="Set a model's rollout policy",
    response_model=None,
    responses={200: proto_response(pb.SetRolloutPolicyResponse)},
)
async def set_policy(request: Request, model: ModelName, body: PolicyBody) -> dict[str, Any]:
    policy = pb.RolloutPolicy(
        model=model,
        steps=body.steps,
        step_seconds=body.step_seconds,
        step_min_requests=body.step_min_requests,
        step_timeout_seconds=body.step_timeout_seconds,
        checks=[
            pb.RolloutCheck(
                metric=BY_NAME[c.metric],
                max_degradation=c.max_degradation,
                min_samples=c.min_samples,
            )
            for c in body.checks
        ],
        confidence=body.confidence,
    )
    b = _backends(request)
    return to_json(
        await b.call(b.registry.SetRolloutPolicy, pb.SetRolloutPolicyRequest(policy=policy))
    )


@router.get(
    "/{model}/rollout-policy",
    summary="Get a model's rollout policy",
    response_model=None,
    responses={200: proto_response(pb.GetRolloutPolicyResponse)},
)
async def get_policy(request: Request, model: ModelName) -> dict[str, Any]:
    b = _backends(request)
    message = pb.GetRolloutPolicyRequest(model=model)
    return to_json(await b.call(b.registry.GetRolloutPolicy, message))


@router.delete(
    "/{model}/rollout-policy", summary="Delete a model's rollout policy", status_code=204
)
async def delete_policy(request: Request, model: ModelName) -> None:
    b = _backends(request)
    await b.call(b.registry.DeleteRolloutPolicy, pb.DeleteRolloutPolicyRequest(model=model))


@router.get(
    "/{model}/rollout",
    summary="A model's latest rollout: state, step, and every event with its evidence",
    response_model=None,
    responses={200: proto_response(pb.GetRolloutResponse)},
)
async def get_rollout(request: Request, model: ModelName) -> dict[str, Any]:
    b = _backends(request)
    return to_json(await b.call(b.registry.GetRollout, pb.GetRolloutRequest(model=model)))


@router.post(
    "/{model}/rollout/{verb}",
    summary="Pause, resume or abort a model's rollout",
    response_model=None,
    responses={200: proto_response(pb.ChangeRolloutResponse)},
)
async def change_rollout(
    request: Request,
    model: ModelName,
    verb: Annotated[Literal["pause", "resume", "abort"], Path()],
    body: ChangeBody | None = None,
) -> dict[str, Any]:
    b = _backends(request)
    body = body or ChangeBody()
    method = {
        "pause": b.registry.PauseRollout,
        "resume": b.registry.ResumeRollout,
        "abort": b.registry.AbortRollout,
    }[verb]
    message = pb.ChangeRolloutRequest(model=model, actor=body.actor, reason=body.reason)
    return to_json(await b.call(method, message))
