"""`tfmesh rollout`: a model's rollout policy, and the rollout the registry's controller runs
by it (status with every step and its evidence; pause, resume, abort)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.output import print_json, table
from cli.rpc import JsonFlag, run_rpc
from shared.rollout_metrics import BY_NAME, BY_NUMBER
from tfmesh.registry.v1 import registry_pb2 as pb
from tfmesh.registry.v1 import registry_pb2_grpc

app = typer.Typer(
    help="Rollouts decided by live evidence: policies, status, pause, resume, abort.",
    no_args_is_help=True,
)

Reason = Annotated[str, typer.Option(help="Why; recorded in the rollout's events.")]


def _registry(channel) -> registry_pb2_grpc.RegistryServiceStub:  # type: ignore[no-untyped-def]
    return registry_pb2_grpc.RegistryServiceStub(channel)


def parse_check(text: str) -> pb.RolloutCheck:
    """`metric:max_degradation:min_samples`, e.g. `error_ratio:0.01:100`."""
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in BY_NAME:
        raise typer.BadParameter(
            f"{text!r}: want metric:max_degradation:min_samples, metric one of {', '.join(BY_NAME)}"
        )
    try:
        return pb.RolloutCheck(
            metric=BY_NAME[parts[0]], max_degradation=float(parts[1]), min_samples=int(parts[2])
        )
    except ValueError:
        raise typer.BadParameter(f"{text!r}: max_degradation and min_samples are numbers") from None


def parse_steps(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: comma-separated percentages") from None


def print_policy(policy: pb.RolloutPolicy) -> None:
    table(
        f"rollout policy of {policy.model}",
        ["steps", "hold", "min requests/step", "timeout", "confidence"],
        [
            [
                " -> ".join(f"{s}%" for s in policy.steps),
                f"{policy.step_seconds:g} s",
                policy.step_min_requests,
                f"{policy.step_timeout_seconds:g} s",
                policy.confidence,
            ]
        ],
    )
    table(
        "checks",
        ["metric", "max degradation", "min samples"],
        [[BY_NUMBER.get(c.metric, "?"), c.max_degradation, c.min_samples] for c in policy.checks],
    )


@app.command("set-policy")
def set_policy(
    model: str,
    steps: Annotated[str, typer.Option(help="Canary weights, e.g. 5,20,50,100.")] = "5,20,50,100",
    step_seconds: Annotated[float, typer.Option(help="Each step holds at least this.")] = 60,
    step_min_requests: Annotated[int, typer.Option(help="Canary requests per step.")] = 100,
    step_timeout_seconds: Annotated[float, typer.Option(help="Undecided then: roll back.")] = 900,
    check: Annotated[
        list[str] | None,
        typer.Option(help="metric:max_degradation:min_samples; repeat for several."),
    ] = None,
    confidence: Annotated[float, typer.Option(help="Of each statistical test.")] = 0.95,
    as_json: JsonFlag = False,
) -> None:
    """Set the rollout policy of MODEL."""
    policy = pb.RolloutPolicy(
        model=model,
        steps=parse_steps(steps),
        step_seconds=step_seconds,
        step_min_requests=step_min_requests,
        step_timeout_seconds=step_timeout_seconds,
        checks=[parse_check(c) for c in check or ["error_ratio:0.01:100", "latency_p99:0.5:100"]],
        confidence=confidence,
    )
    reply = run_rpc(
        "registry",
        lambda ch: _registry(ch).SetRolloutPolicy(pb.SetRolloutPolicyRequest(policy=policy)),
    )
    if as_json:
        print_json(reply.policy)
    else:
        print_policy(reply.policy)


@app.command("policy")
def show_policy(model: str, as_json: JsonFlag = False) -> None:
    """Show the rollout policy of MODEL."""
    reply = run_rpc(
        "registry",
        lambda ch: _registry(ch).GetRolloutPolicy(pb.GetRolloutPolicyRequest(model=model)),
    )
    if as_json:
        print_json(reply.policy)
    else:
        print_policy(reply.policy)


def print_rollout(rollout: pb.Rollout) -> None:
    state = pb.Rollout.State.Name(rollout.state).removeprefix("STATE_").lower()
    table(
        f"rollout of {rollout.model} v{rollout.version} (production v{rollout.production_version})",
        ["state", "step", "canary weight", "started"],
        [
            [
                state,
                f"{rollout.step + 1} of {len(rollout.policy.steps)}",
                f"{rollout.traffic_weight}%",
                rollout.start_time.ToDatetime().isoformat(timespec="seconds"),
            ]
        ],
    )
    table(
        "events",
        ["time", "event", "weight", "actor", "detail"],
        [
            [
                e.event_time.ToDatetime().isoformat(timespec="seconds"),
                e.kind,
                f"{e.traffic_weight}%",
                e.actor,
                e.detail,
            ]
            for e in rollout.events
        ],
    )


@app.command("status")
def status(model: str, as_json: JsonFlag = False) -> None:
    """The latest rollout of MODEL: state, step, and every event with its evidence."""
    reply = run_rpc(
        "registry", lambda ch: _registry(ch).GetRollout(pb.GetRolloutRequest(model=model))
    )
    if as_json:
        print_json(reply.rollout)
    else:
        print_rollout(reply.rollout)


def _change(verb: str, model: str, reason: str, as_json: bool) -> None:
    request = pb.ChangeRolloutRequest(model=model, reason=reason)
    reply = run_rpc("registry", lambda ch: getattr(_registry(ch), verb)(request))
    if as_json:
        print_json(reply.rollout)
    else:
        print_rollout(reply.rollout)


@app.command("pause")
def pause(model: str, reason: Reason = "", as_json: JsonFlag = False) -> None:
    """Hold the running rollout of MODEL at its step."""
    _change("PauseRollout", model, reason, as_json)


@app.command("resume")
def resume(model: str, reason: Reason = "", as_json: JsonFlag = False) -> None:
    """Resume the paused rollout of MODEL (its step's clock starts again)."""
    _change("ResumeRollout", model, reason, as_json)


@app.command("abort")
def abort(model: str, reason: Reason = "", as_json: JsonFlag = False) -> None:
    """End the rollout of MODEL: the canary alias goes, production stays."""
    _change("AbortRollout", model, reason, as_json)
