"""The demo's rollout of v2: the policy it sets, and the traffic and feedback it sends
while the registry's controller moves the canary step by step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import numpy as np

from cli.demo_calls import MODEL
from shared.rollout_metrics import BY_NUMBER
from shared.tensors import to_tensor
from tfmesh.inference.v1 import inference_pb2 as ipb
from tfmesh.registry.v1 import registry_pb2 as rpb

ROLLOUT_POLICY = rpb.RolloutPolicy(
    model=MODEL,
    steps=[10, 50, 100],
    step_seconds=2,
    step_min_requests=60,
    step_timeout_seconds=90,
    checks=[
        rpb.RolloutCheck(
            metric=rpb.RolloutCheck.METRIC_ERROR_RATIO, max_degradation=0.02, min_samples=50
        ),
        rpb.RolloutCheck(
            metric=rpb.RolloutCheck.METRIC_LATENCY_P99, max_degradation=1.0, min_samples=50
        ),
        rpb.RolloutCheck(
            metric=rpb.RolloutCheck.METRIC_LIVE_ACCURACY, max_degradation=0.05, min_samples=100
        ),
    ],
    confidence=0.99,
)


def policy_text(policy: rpb.RolloutPolicy) -> str:
    checks = ", ".join(
        f"{BY_NUMBER[c.metric]} within {c.max_degradation:g} (n>={c.min_samples})"
        for c in policy.checks
    )
    steps = " -> ".join(f"{s}%" for s in policy.steps)
    return f"{steps}, each >= {policy.step_seconds:g} s; {checks}"


async def watch_rollout(  # type: ignore[no-untyped-def]
    registry,
    inference,
    version: int,
    x: np.ndarray,
    y: np.ndarray,
    input_name: str,
    show: Callable[[str], None],
) -> rpb.Rollout:
    """Send the test split as unpinned traffic, with each answer's true label as feedback,
    and `show` the rollout's events as the controller records them, until it ends."""
    feedback: list[ipb.FeedbackItem] = []
    stop = asyncio.Event()

    async def client(offset: int) -> None:
        row = offset
        while not stop.is_set():
            request = ipb.PredictRequest(
                model=MODEL, inputs={input_name: to_tensor(x[row % len(x)][None])}
            )
            answer = await inference.Predict(request)
            feedback.append(
                ipb.FeedbackItem(request_id=answer.request_id, labels=[float(y[row % len(x)])])
            )
            row += 8

    clients = [asyncio.create_task(client(i)) for i in range(8)]
    shown = 0
    deadline = time.monotonic() + 300
    try:
        while True:
            if time.monotonic() > deadline:
                raise SystemExit(f"the rollout of v{version} did not end in 300 s")
            await asyncio.sleep(0.25)
            batch, feedback[:] = list(feedback), []
            if batch:
                await inference.ReportFeedback(ipb.ReportFeedbackRequest(model=MODEL, items=batch))
            try:
                reply = await registry.GetRollout(rpb.GetRolloutRequest(model=MODEL))
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                continue
            rollout = reply.rollout
            if rollout.version != version:
                continue
            for event in rollout.events[shown:]:
                show(f"  [bold]{event.kind} {event.traffic_weight}%[/bold]: {event.detail}")
            shown = len(rollout.events)
            if rollout.state not in (rpb.Rollout.STATE_RUNNING, rpb.Rollout.STATE_PAUSED):
                return rollout
    finally:
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
