"""The promotion gate: whether a candidate version may replace production, by the model's
rule (a metric, its direction and the least improvement), or only by a recorded override."""

from __future__ import annotations

from services.registry import entities as e
from shared.errors import FailedPrecondition


def check_promotion(
    rule: e.PromotionRule,
    candidate_number: int,
    candidate_metrics: dict[str, float],
    current_number: int,
    current_metrics: dict[str, float],
    override: bool,
) -> bool:
    """Allow version `candidate_number` to replace production version `current_number`,
    or raise FailedPrecondition; True when it passes only by the override."""
    metric = rule.metric
    candidate_value = candidate_metrics.get(metric)
    current_value = current_metrics.get(metric)
    if candidate_value is None or current_value is None:
        missing = candidate_number if candidate_value is None else current_number
        problem = f"version {missing} has no {metric!r} metric to compare"
    else:
        gain = rule.improvement(candidate_value, current_value)
        if gain > 0 and gain >= rule.min_improvement:
            return False
        problem = (
            f"version {candidate_number} {metric}={candidate_value:g} does not beat "
            f"production version {current_number} {metric}={current_value:g} by "
            f"{rule.min_improvement:g} ({'higher' if rule.higher_is_better else 'lower'} "
            "is better)"
        )
    if override:
        return True
    raise FailedPrecondition(f"promotion refused: {problem}; set override_gate with a reason")
