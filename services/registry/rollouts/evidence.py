"""The statistical checks of a rollout: is the canary worse than production by more than
the policy allows?

Each check waits until the canary and production have its minimum sample, then fails
when a one-sided z-test says, at the policy's confidence, that the canary is worse than
production by more than `max_degradation`, and passes otherwise:

- error ratio (model errors / requests) and live accuracy (correct / reported rows): a
  two-proportion test of `canary - production > max_degradation` (for accuracy,
  `production - canary`), with the unpooled standard error;
- p99 latency: production's p99 from its latency buckets, a threshold of
  `(1 + max_degradation)` times it, and a one-proportion test of whether more than 1 % of
  the canary's requests took longer (a canary whose p99 is within the threshold has at
  most 1 % there).

Figures are each version's counts since it was loaded, as the inference service reports
them. Looking again at every tick repeats the test, which raises its false-alarm rate
above 1 - confidence; the minimum sample and a high confidence keep that in check."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import NormalDist

from services.registry.rollouts.policy import Check, Metric

# The share of requests slower than a p99: by definition 1 %.
P99_TAIL = 0.01


@dataclass(frozen=True)
class VersionFigures:
    version: int
    requests: int = 0
    model_errors: int = 0
    # Upper bounds in seconds, and counts (one more, for the slower ones).
    latency_bounds: tuple[float, ...] = ()
    latency_counts: tuple[int, ...] = ()
    # Reported rows of classifier predictions, and those predicted right.
    feedback_rows: int = 0
    feedback_correct: int = 0

    @property
    def answered(self) -> int:
        return sum(self.latency_counts)

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding the q-quantile of answered requests."""
        target = q * self.answered
        running = 0
        for bound, count in zip(self.latency_bounds, self.latency_counts, strict=False):
            running += count
            if running >= target:
                return bound
        return math.inf

    def slower_than(self, seconds: float) -> int:
        """Answered requests certainly slower than `seconds` (their bucket starts above)."""
        lowers = (0.0, *self.latency_bounds)
        return sum(
            count
            for lower, count in zip(lowers, self.latency_counts, strict=True)
            if lower >= seconds
        )


class Verdict(StrEnum):
    WAIT = "wait"
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckResult:
    metric: Metric
    verdict: Verdict
    detail: str
    evidence: dict[str, float] = field(default_factory=dict)


def evaluate(
    check: Check, canary: VersionFigures, production: VersionFigures, confidence: float
) -> CheckResult:
    """The check's verdict; every figure in its evidence is finite (JSON has no infinity)."""
    result = _evaluate(check, canary, production, confidence)
    evidence = {key: _finite(value) for key, value in result.evidence.items()}
    return CheckResult(result.metric, result.verdict, result.detail, evidence)


def _evaluate(
    check: Check, canary: VersionFigures, production: VersionFigures, confidence: float
) -> CheckResult:
    critical = NormalDist().inv_cdf(confidence)
    if check.metric is Metric.ERROR_RATIO:
        return _proportions(
            check,
            critical,
            (canary.model_errors, canary.requests),
            (production.model_errors, production.requests),
            "error ratio",
            higher_is_worse=True,
        )
    if check.metric is Metric.LIVE_ACCURACY:
        return _proportions(
            check,
            critical,
            (canary.feedback_correct, canary.feedback_rows),
            (production.feedback_correct, production.feedback_rows),
            "live accuracy",
            higher_is_worse=False,
        )
    return _latency(check, critical, canary, production)


def _z(excess: float, se: float) -> float:
    if se > 0:
        return excess / se
    return math.inf if excess > 0 else -math.inf


def _proportions(
    check: Check,
    critical: float,
    canary: tuple[int, int],
    production: tuple[int, int],
    name: str,
    *,
    higher_is_worse: bool,
) -> CheckResult:
    (hits_c, n_c), (hits_p, n_p) = canary, production
    key = check.metric.value
    if n_c < check.min_samples or n_p < check.min_samples:
        return CheckResult(
            check.metric,
            Verdict.WAIT,
            f"{name}: {n_c} of {check.min_samples} canary samples (production {n_p})",
            {f"{key}.canary_n": n_c, f"{key}.production_n": n_p},
        )
    p_c, p_p = hits_c / n_c, hits_p / n_p
    worse_by = (p_c - p_p) if higher_is_worse else (p_p - p_c)
    se = math.sqrt(p_c * (1 - p_c) / n_c + p_p * (1 - p_p) / n_p)
    z = _z(worse_by - check.max_degradation, se)
    failed = z > critical
    evidence = {
        f"{key}.canary": p_c,
        f"{key}.production": p_p,
        f"{key}.canary_n": n_c,
        f"{key}.production_n": n_p,
        f"{key}.z": _finite(z),
    }
    relation = "worse" if failed else "not worse"
    detail = (
        f"{name}: canary {p_c:.4f} (n={n_c}) vs production {p_p:.4f} (n={n_p}): "
        f"{relation} by more than {check.max_degradation:g} ({_z_text(z)}, "
        f"critical {critical:.2f})"
    )
    return CheckResult(check.metric, Verdict.FAIL if failed else Verdict.PASS, detail, evidence)


def _latency(
    check: Check, critical: float, canary: VersionFigures, production: VersionFigures
) -> CheckResult:
    key = check.metric.value
    n_c, n_p = canary.answered, production.answered
    if n_c < check.min_samples or n_p < check.min_samples:
        return CheckResult(
            check.metric,
            Verdict.WAIT,
            f"p99 latency: {n_c} of {check.min_samples} canary requests (production {n_p})",
            {f"{key}.canary_n": n_c, f"{key}.production_n": n_p},
        )
    p99_p = production.quantile(0.99)
    threshold = (1 + check.max_degradation) * p99_p
    slower = canary.slower_than(threshold)
    share = slower / n_c
    z = _z(share - P99_TAIL, math.sqrt(P99_TAIL * (1 - P99_TAIL) / n_c))
    failed = z > critical
    evidence = {
        f"{key}.canary_seconds": canary.quantile(0.99),
        f"{key}.production_seconds": p99_p,
        f"{key}.threshold_seconds": threshold,
        f"{key}.canary_share_above": share,
        f"{key}.canary_n": n_c,
        f"{key}.production_n": n_p,
        f"{key}.z": _finite(z),
    }
    detail = (
        f"p99 latency: canary {canary.quantile(0.99) * 1000:.2f} ms vs production "
        f"{p99_p * 1000:.2f} ms; {share:.1%} of {n_c} canary requests above "
        f"{threshold * 1000:.2f} ms ({_z_text(z)}, critical {critical:.2f}): "
        f"{'worse' if failed else 'not worse'} than {1 + check.max_degradation:g}x"
    )
    return CheckResult(check.metric, Verdict.FAIL if failed else Verdict.PASS, detail, evidence)


def _z_text(z: float) -> str:
    return f"z={z:.2f}" if math.isfinite(z) else "no spread in either sample: z infinite"


def _finite(value: float) -> float:
    """JSON (PostgreSQL's too) takes no infinities: a sure verdict's z, or a p99 past the
    last bucket, is capped."""
    return max(-1e9, min(1e9, value))
