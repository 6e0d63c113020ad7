"""Unit tests of live-input drift: baselines, binning, PSI and L-inf, the window, sampling."""

from __future__ import annotations

import math
import random
import tracemalloc

import numpy as np
import pytest

from services.inference.drift import (
    MIN_ROWS,
    PSI_EPSILON,
    DriftWindow,
    FeatureBaseline,
    FeatureSummary,
    baselines_from_statistics,
    drift_applicable,
)

COLOURS = FeatureSummary(
    name="colour",
    kind="categorical",
    count=100,
    vocabulary=("red", "green", "blue", "black"),
    top_values={"red": 50, "green": 30, "blue": 10},
)
# Two equal bins, [0, 1) and [1, 2].
TINY = FeatureSummary(name="tiny", kind="numeric", edges=(0.0, 1.0, 2.0), counts=(5, 5))


def normal_summary(name: str = "x") -> FeatureSummary:
    """A standard normal feature's histogram, as the data service computes it."""
    values = np.random.default_rng(0).standard_normal(100_000)
    counts, edges = np.histogram(values, bins=10)
    return FeatureSummary(name=name, kind="numeric", edges=edges.tolist(), counts=counts.tolist())


def window(*summaries: FeatureSummary, rows: int = 1000, rate: float = 1.0) -> DriftWindow:
    return DriftWindow(baselines_from_statistics(summaries), rate, rows, random.Random(0))


def only_score(drift: DriftWindow) -> float:
    (score,) = drift.scores()
    return score.score


def test_numeric_baseline_is_the_histogram_with_empty_outer_bins():
    (baseline,) = baselines_from_statistics([TINY])
    assert baseline.kind == "numeric"
    assert baseline.edges == (0.0, 1.0, 2.0)
    assert baseline.expected == (0.0, 0.5, 0.5, 0.0)


def test_categorical_baseline_gives_values_outside_the_top_the_remaining_mass():
    (baseline,) = baselines_from_statistics([COLOURS])
    assert baseline.categories == (0, 1, 2)
    assert baseline.expected == pytest.approx((0.5, 0.3, 0.1, 0.1))


def test_a_feature_without_statistics_has_no_baseline():
    with pytest.raises(ValueError, match="histogram"):
        baselines_from_statistics([FeatureSummary(name="empty", kind="numeric")])
    with pytest.raises(ValueError, match="no values"):
        baselines_from_statistics([FeatureSummary(name="c", kind="categorical", vocabulary=["a"])])


def test_psi_of_samples_from_the_baseline_is_small_and_of_a_shifted_mean_large():
    rng = np.random.default_rng(1)
    same, shifted = window(normal_summary()), window(normal_summary())
    same.observe(rng.standard_normal((1000, 1)))
    shifted.observe(rng.standard_normal((1000, 1)) + 2.0)
    assert only_score(same) < 0.1
    assert only_score(shifted) > 0.25
    assert same.scores()[0].statistic == "psi"


def test_psi_matches_a_hand_computation():
    drift = window(TINY)
    # Lower edges belong to their bin and the last edge to the last bin: 0.0 and 0.5
    # fill [0, 1), 1.5 and 2.0 fill [1, 2], 5.0 overflows. Proportions .7, .2, .1.
    values = [0.0] * 10 + [0.5] * 60 + [1.5] * 10 + [2.0] * 10 + [5.0] * 10
    drift.observe(np.array(values).reshape(-1, 1))
    overflow = 0.1 - PSI_EPSILON
    expected = 0.2 * math.log(0.7 / 0.5) + 0.3 * math.log(0.5 / 0.2)
    expected += overflow * math.log(0.1 / PSI_EPSILON)
    assert only_score(drift) == pytest.approx(expected)


def test_linf_matches_a_hand_computation_with_unknown_values_as_other():
    drift = window(COLOURS)
    # red .45, green .25, blue .1; other .2: black (in the vocabulary, not in the top
    # values), an index past the vocabulary, a negative one and a fractional one.
    values = [0] * 45 + [1] * 25 + [2] * 10 + [3] * 5 + [7] * 5 + [-1] * 5 + [1.5] * 5
    drift.observe(np.array(values, dtype=np.float32).reshape(-1, 1))
    (score,) = drift.scores()
    assert score.statistic == "linf"
    assert score.score == pytest.approx(0.1)


def test_an_unseen_category_goes_to_other():
    drift = window(COLOURS)
    drift.observe(np.full((MIN_ROWS, 1), 9.0))
    # Everything lands in "other" (expected .1), which now differs most: |1 - .1|.
    assert only_score(drift) == pytest.approx(0.9)


def test_the_window_forgets_rows_older_than_window_rows():
    rng = np.random.default_rng(2)
    drift = window(normal_summary(), rows=200)
    for _ in range(30):  # 210 rows in batches of 7, so the ring wraps mid-batch
        drift.observe(rng.standard_normal((7, 1)))
    assert only_score(drift) < 0.1
    shifted = rng.standard_normal((203, 1)) + 2.0
    for start in range(0, 203, 7):
        drift.observe(shifted[start : start + 7])
    recent_only = window(normal_summary(), rows=200)
    recent_only.observe(shifted[-200:])
    assert drift.scores() == recent_only.scores()
    assert drift.scores()[0].rows == 200
    assert drift.sampled_rows == 413


def test_a_batch_larger_than_the_window_keeps_its_last_rows():
    rows = np.random.default_rng(3).standard_normal((350, 1))
    drift, last = window(normal_summary(), rows=200), window(normal_summary(), rows=200)
    drift.observe(rows)
    last.observe(rows[-200:])
    assert drift.scores() == last.scores()
    assert drift.sampled_rows == 350


def test_sampling_rate_takes_about_that_share_of_requests_deterministically():
    def sampled(seed: int) -> int:
        drift = DriftWindow(baselines_from_statistics([TINY]), 0.1, 1000, random.Random(seed))
        for _ in range(2000):
            drift.observe(np.ones((1, 1)))
        return drift.sampled_rows

    assert 150 <= sampled(5) <= 250
    assert sampled(5) == sampled(5)


def test_no_scores_below_min_rows():
    drift = window(TINY)
    drift.observe(np.full((MIN_ROWS - 1, 1), 0.5))
    assert drift.scores() == []
    drift.observe(np.full((1, 1), 0.5))
    (score,) = drift.scores()
    assert score.rows == MIN_ROWS


def test_image_rows_count_every_pixel_as_an_observation_of_one_feature():
    rng = np.random.default_rng(4)
    images = rng.standard_normal((MIN_ROWS, 8, 8, 1)) + 2.0
    drift, pixels = window(normal_summary()), window(normal_summary(), rows=10_000)
    drift.observe(images)
    pixels.observe(images.reshape(-1, 1))
    (score,) = drift.scores()
    assert score.rows == MIN_ROWS
    assert score.score == pytest.approx(only_score(pixels))
    assert score.score > 0.25


def test_features_are_scored_independently_in_order():
    drift = window(TINY, COLOURS)
    drift.observe(np.tile([0.5, 0.0], (MIN_ROWS, 1)))
    psi, linf = drift.scores()
    assert (psi.feature, psi.statistic) == ("tiny", "psi")
    assert (linf.feature, linf.score) == ("colour", pytest.approx(0.5))


def test_empty_batches_change_nothing():
    drift = window(TINY)
    drift.observe(np.zeros((0, 1)))
    drift.observe(np.zeros((3, 0, 1)))
    assert drift.sampled_rows == 3
    drift.observe(np.full((MIN_ROWS, 1), 0.5))
    assert drift.scores()[0].rows == MIN_ROWS + 3


def test_a_batch_whose_last_axis_is_not_the_features_is_refused():
    drift = window(TINY, COLOURS)
    with pytest.raises(ValueError, match="2 features"):
        drift.observe(np.zeros((4, 3)))
    with pytest.raises(ValueError):
        drift.observe(np.zeros(2))


def test_drift_applies_when_the_input_ends_in_the_dataset_features():
    (one,) = baselines_from_statistics([TINY])
    two = baselines_from_statistics([TINY, COLOURS])
    assert drift_applicable([None, 8, 8, 1], [one])
    assert drift_applicable([None, 2], two)
    assert not drift_applicable([None, 13], two)
    assert not drift_applicable([None, None], two)
    assert not drift_applicable([2], two)
    assert not drift_applicable([None, 0], [])


def test_nan_is_ignored():
    with_nan, without = window(TINY), window(TINY)
    values = np.full((MIN_ROWS, 1), 0.5)
    without.observe(values)
    values[::2] = np.nan
    with_nan.observe(values)
    assert with_nan.scores() == without.scores()


def test_a_feature_with_only_nan_in_the_window_is_not_scored():
    drift = window(TINY, COLOURS)
    drift.observe(np.tile([np.nan, 0.0], (MIN_ROWS, 1)))
    assert [score.feature for score in drift.scores()] == ["colour"]


def test_memory_does_not_grow_with_observations():
    rng = np.random.default_rng(6)
    drift = window(normal_summary(), COLOURS, rows=200)
    batch = rng.standard_normal((16, 4, 4, 2))
    drift.observe(batch)
    nbytes = drift.nbytes
    tracemalloc.start()
    try:
        drift.observe(batch)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(500):
            drift.observe(batch)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert drift.nbytes == nbytes
    assert after - before < 10_000
    assert drift.sampled_rows == 16 * 502


@pytest.mark.parametrize("rate, rows", [(0.0, 1000), (1.5, 1000), (1.0, MIN_ROWS - 1)])
def test_bad_window_arguments_are_refused(rate, rows):
    with pytest.raises(ValueError):
        DriftWindow(baselines_from_statistics([TINY]), rate, rows)


def test_an_inconsistent_baseline_is_refused():
    with pytest.raises(ValueError, match="proportions"):
        FeatureBaseline("x", "numeric", (0.0, 1.0, 0.0), edges=(0.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="sum to 1"):
        FeatureBaseline("x", "categorical", (0.5, 0.2), categories=(0,))
    with pytest.raises(ValueError, match="ascending"):
        FeatureBaseline("x", "numeric", (0.0, 1.0, 0.0), edges=(1.0, 0.0))
    with pytest.raises(ValueError, match="unknown kind"):
        FeatureBaseline("x", "text", (1.0,))  # type: ignore[arg-type]
