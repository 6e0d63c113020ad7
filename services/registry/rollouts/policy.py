"""A model's rollout policy: the canary's steps, how long and how many requests each holds,
and the checks the canary must pass against production, each with its allowed degradation
and minimum sample. Stored as JSON in the registry's database."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from shared.errors import FieldViolation, raise_violations

DEFAULT_CONFIDENCE = 0.95
MAX_STEPS = 20


class Metric(StrEnum):
    ERROR_RATIO = "error_ratio"
    LATENCY_P99 = "latency_p99"
    LIVE_ACCURACY = "live_accuracy"


# The largest degradation each metric may allow: ratios in absolute points, latency as a
# relative increase.
MAX_DEGRADATION = {Metric.ERROR_RATIO: 1.0, Metric.LATENCY_P99: 100.0, Metric.LIVE_ACCURACY: 1.0}


@dataclass(frozen=True)
class Check:
    metric: Metric
    max_degradation: float
    min_samples: int


@dataclass(frozen=True)
class RolloutPolicy:
    steps: tuple[int, ...]
    step_seconds: float
    step_min_requests: int
    step_timeout_seconds: float
    checks: tuple[Check, ...] = ()
    confidence: float = DEFAULT_CONFIDENCE

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["checks"] = [{**asdict(c), "metric": c.metric.value} for c in self.checks]
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RolloutPolicy:
        return cls(
            steps=tuple(document["steps"]),
            step_seconds=document["step_seconds"],
            step_min_requests=document["step_min_requests"],
            step_timeout_seconds=document["step_timeout_seconds"],
            checks=tuple(
                Check(Metric(c["metric"]), c["max_degradation"], c["min_samples"])
                for c in document["checks"]
            ),
            confidence=document["confidence"],
        )


@dataclass(frozen=True)
class PolicyDraft:
    """A policy as a client sent it, before `check_policy` makes it a `RolloutPolicy`."""

    steps: list[int]
    step_seconds: float
    step_min_requests: int
    step_timeout_seconds: float
    # (metric name or "" when unspecified, max_degradation, min_samples)
    checks: list[tuple[str, float, int]] = field(default_factory=list)
    confidence: float = 0.0


def check_policy(draft: PolicyDraft) -> RolloutPolicy:
    """The policy, or INVALID_ARGUMENT naming every field that is wrong."""
    violations: list[FieldViolation | None] = []
    steps = draft.steps
    if not steps or len(steps) > MAX_STEPS:
        violations.append(FieldViolation("policy.steps", f"1-{MAX_STEPS} canary weights"))
    elif any(not 1 <= s <= 100 for s in steps):
        violations.append(FieldViolation("policy.steps", "each weight is 1-100 percent"))
    elif any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        violations.append(
            FieldViolation("policy.steps", f"must increase strictly, got {list(steps)}")
        )
    elif steps[-1] != 100:
        violations.append(FieldViolation("policy.steps", "the last step is 100 (all traffic)"))
    if not math.isfinite(draft.step_seconds) or not 0 <= draft.step_seconds <= 86_400:
        violations.append(FieldViolation("policy.step_seconds", "0 to 86400 seconds"))
    if not 0 <= draft.step_min_requests <= 10**9:
        violations.append(FieldViolation("policy.step_min_requests", "0 to 10^9"))
    timeout = draft.step_timeout_seconds
    if not math.isfinite(timeout) or not draft.step_seconds < timeout <= 7 * 86_400:
        violations.append(
            FieldViolation(
                "policy.step_timeout_seconds", "longer than step_seconds, at most a week"
            )
        )
    confidence = draft.confidence or DEFAULT_CONFIDENCE
    if not 0.5 <= confidence <= 0.9999:
        violations.append(FieldViolation("policy.confidence", "0.5 to 0.9999 (0: 0.95)"))
    checks = []
    seen: set[Metric] = set()
    for i, (name, degradation, min_samples) in enumerate(draft.checks):
        where = f"policy.checks[{i}]"
        try:
            metric = Metric(name)
        except ValueError:
            violations.append(
                FieldViolation(f"{where}.metric", f"one of {', '.join(m.value for m in Metric)}")
            )
            continue
        if metric in seen:
            violations.append(FieldViolation(f"{where}.metric", "one check per metric"))
        seen.add(metric)
        limit = MAX_DEGRADATION[metric]
        if not math.isfinite(degradation) or not 0 <= degradation <= limit:
            violations.append(
                FieldViolation(f"{where}.max_degradation", f"0 to {limit:g} for {metric.value}")
            )
        if not 1 <= min_samples <= 10**9:
            violations.append(FieldViolation(f"{where}.min_samples", "1 to 10^9"))
        checks.append(Check(metric, degradation, min_samples))
    raise_violations(violations)
    return RolloutPolicy(
        tuple(steps),
        draft.step_seconds,
        draft.step_min_requests,
        timeout,
        tuple(checks),
        confidence,
    )
