"""The promotion gate alone: the rule's metric, direction and margin decide; a missing
metric refuses; an override lets a refused candidate through and says so."""

from __future__ import annotations

import pytest

from services.registry.entities import PromotionRule
from services.registry.gate import check_promotion
from shared.errors import FailedPrecondition

ACCURACY = PromotionRule("accuracy", 0.01, True)
LOSS = PromotionRule("loss", 0.0, False)


def test_a_candidate_that_beats_production_by_the_margin_passes_without_override():
    assert check_promotion(ACCURACY, 2, {"accuracy": 0.95}, 1, {"accuracy": 0.93}, False) is False


@pytest.mark.parametrize("candidate", [0.935, 0.93, 0.90])
def test_a_candidate_under_the_margin_is_refused_with_both_figures(candidate):
    with pytest.raises(FailedPrecondition) as refused:
        check_promotion(ACCURACY, 2, {"accuracy": candidate}, 1, {"accuracy": 0.93}, False)
    assert f"accuracy={candidate:g}" in refused.value.message
    assert "production version 1 accuracy=0.93" in refused.value.message


def test_lower_is_better_rules_compare_the_other_way():
    assert check_promotion(LOSS, 2, {"loss": 0.2}, 1, {"loss": 0.3}, False) is False
    with pytest.raises(FailedPrecondition, match="lower is better"):
        check_promotion(LOSS, 2, {"loss": 0.4}, 1, {"loss": 0.3}, False)


def test_a_missing_metric_names_the_version_without_it():
    with pytest.raises(FailedPrecondition, match="version 1 has no 'accuracy' metric"):
        check_promotion(ACCURACY, 2, {"accuracy": 0.99}, 1, {}, False)


def test_the_override_lets_a_refused_candidate_through_and_reports_it():
    assert check_promotion(ACCURACY, 2, {"accuracy": 0.5}, 1, {"accuracy": 0.93}, True) is True
    assert check_promotion(ACCURACY, 2, {}, 1, {"accuracy": 0.93}, True) is True
