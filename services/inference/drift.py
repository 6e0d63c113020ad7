"""Drift of a served model's live inputs from its training data's statistics.

A `DriftWindow` (one per served model version) samples requests, bins every observation
of every feature into bins derived from the dataset's statistics (`FeatureBaseline`),
and keeps per-row bin counts for the last `window_rows` sampled rows in a fixed ring, so
memory is bounded whatever the request sizes. `scores()` compares the window with the
baseline: the population stability index for numeric features, the L-infinity distance
for categorical ones. The caller converts statistics into `FeatureSummary` and exports
the scores; this module knows neither protobuf nor metrics."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Kind = Literal["numeric", "categorical"]

# Fewer rows than this give scores that are mostly sampling noise.
MIN_ROWS = 100
# PSI takes the log of proportions: a bin that is empty on either side counts as this
# proportion, so one empty bin adds a large but finite term instead of infinity.
PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class FeatureSummary:
    """One feature's statistics as the data service reports them, in plain values.

    Numeric: `edges` and `counts` of its histogram (numpy.histogram's convention).
    Categorical: its `vocabulary` in encoding order, `top_values` (value to count) and
    `count`, the number of present values."""

    name: str
    kind: Kind
    count: int = 0
    edges: Sequence[float] = ()
    counts: Sequence[int] = ()
    vocabulary: Sequence[str] = ()
    top_values: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Baseline:
    """The statistics a version's inputs are compared with: its training dataset's."""

    dataset_version: str
    features: list[FeatureSummary]


@dataclass(frozen=True)
class FeatureBaseline:
    """Expected proportion of one feature's observations per bin.

    Numeric: `expected` has one entry per bin of `edges` plus an underflow bin first and
    an overflow bin last. Categorical: one entry per vocabulary index in `categories`,
    then one for every other value (other vocabulary entries, unknown indices)."""

    name: str
    kind: Kind
    expected: tuple[float, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "numeric":
            if len(self.edges) < 2 or np.any(np.diff(self.edges) < 0):
                raise ValueError(f"feature {self.name!r}: edges must be 2+ ascending values")
            bins = len(self.edges) + 1
        elif self.kind == "categorical":
            if len(set(self.categories)) != len(self.categories) or any(
                c < 0 for c in self.categories
            ):
                raise ValueError(f"feature {self.name!r}: categories must be distinct indices")
            bins = len(self.categories) + 1
        else:
            raise ValueError(f"feature {self.name!r}: unknown kind {self.kind!r}")
        if len(self.expected) != bins or min(self.expected) < 0:
            raise ValueError(f"feature {self.name!r}: expected needs {bins} proportions >= 0")
        if not np.isclose(sum(self.expected), 1.0):
            raise ValueError(f"feature {self.name!r}: expected proportions must sum to 1")


def baselines_from_statistics(features: Sequence[FeatureSummary]) -> list[FeatureBaseline]:
    """Baselines in feature order; ValueError when a feature has no usable statistics."""
    return [_baseline(summary) for summary in features]


def _baseline(summary: FeatureSummary) -> FeatureBaseline:
    if summary.kind == "numeric":
        counts = np.asarray(summary.counts, dtype=np.float64)
        if len(summary.edges) != len(counts) + 1 or counts.sum() <= 0:
            raise ValueError(f"feature {summary.name!r}: no histogram to compare with")
        # The histogram spans the data's min to max, so nothing was expected outside it.
        expected = np.concatenate([[0.0], counts / counts.sum(), [0.0]])
        return FeatureBaseline(
            summary.name,
            "numeric",
            tuple(expected.tolist()),
            edges=tuple(map(float, summary.edges)),
        )
    index = {value: i for i, value in enumerate(summary.vocabulary)}
    known = {index[v]: n for v, n in summary.top_values.items() if v in index}
    # A top value outside the vocabulary cannot be encoded, so its mass is "other" too.
    total = max(summary.count, sum(summary.top_values.values()))
    if total <= 0:
        raise ValueError(f"feature {summary.name!r}: no values to compare with")
    categories = tuple(sorted(known))
    shares = [known[c] / total for c in categories]
    return FeatureBaseline(
        summary.name,
        "categorical",
        (*shares, max(1.0 - sum(shares), 0.0)),
        categories=categories,
    )


def drift_applicable(
    input_shape: Sequence[int | None], baselines: Sequence[FeatureBaseline]
) -> bool:
    """Whether a model input of this shape (rows first) carries the baselines' features
    along its last axis, the dataset's layout."""
    return bool(baselines) and len(input_shape) >= 2 and input_shape[-1] == len(baselines)


@dataclass(frozen=True)
class DriftScore:
    feature: str
    statistic: Literal["psi", "linf"]
    score: float
    # Rows in the window the score was computed over.
    rows: int


@dataclass
class DriftStatus:
    """What a version's drift watch reports: its baseline, rows sampled and in the window,
    the scores, and when there are none, why."""

    baseline: str = ""
    sampled_rows: int = 0
    window_rows: int = 0
    scores: list[DriftScore] = field(default_factory=list)
    note: str = ""


class _FeatureBins:
    """Maps one feature's observations to bin indices and scores its window counts."""

    def __init__(self, baseline: FeatureBaseline, start: int) -> None:
        self.baseline = baseline
        self.bins = len(baseline.expected)
        self.segment = slice(start, start + self.bins)
        expected = np.asarray(baseline.expected)
        if baseline.kind == "numeric":
            self._edges = np.asarray(baseline.edges, dtype=np.float64)
            self._expected = np.maximum(expected, PSI_EPSILON)
        else:
            other = len(baseline.categories)
            # Vocabulary index -> bin; indices past the table are "other" as well.
            self._lookup = np.full(max(baseline.categories, default=0) + 1, other, np.intp)
            self._lookup[list(baseline.categories)] = np.arange(other)
            self._expected = expected

    def local(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each value (finite values only are counted by the caller)."""
        if self.baseline.kind == "numeric":
            # side="right" puts a value equal to a lower edge into that edge's bin; the
            # last edge belongs to the last bin, as in numpy.histogram.
            bins = np.searchsorted(self._edges, values, side="right")
            bins[values == self._edges[-1]] = len(self._edges) - 1
            return bins
        other = self.bins - 1
        known = (values >= 0) & (values < len(self._lookup)) & (values == np.floor(values))
        indices = np.where(known, values, 0).astype(np.intp)
        return np.where(known, self._lookup[indices], other)

    def score(self, counts: np.ndarray, rows: int) -> DriftScore | None:
        seen = counts.sum()
        if seen == 0:
            return None
        actual = counts / seen
        if self.baseline.kind == "numeric":
            actual = np.maximum(actual, PSI_EPSILON)
            psi = np.sum((actual - self._expected) * np.log(actual / self._expected))
            return DriftScore(self.baseline.name, "psi", float(psi), rows)
        linf = np.max(np.abs(actual - self._expected))
        return DriftScore(self.baseline.name, "linf", float(linf), rows)


class DriftWindow:
    """Per-feature bin counts of the last `window_rows` sampled rows of one model version.

    A request is sampled whole with probability `sampling_rate`; an unsampled one costs a
    shape check and one random draw. Each kept row is a line of a ring of per-row bin
    counts (uint32, window_rows x total bins, allocated once), with running totals, so
    the oldest rows drop out as new ones arrive and scoring does not rescan the ring.
    Every element along a row's middle axes is one observation: an (8, 8, 1) image is
    64 observations of one feature. Values that are not finite are ignored, as in the
    dataset's statistics. Not thread-safe: the service calls it from its one event-loop
    thread, so it takes no locks."""

    def __init__(
        self,
        baselines: Sequence[FeatureBaseline],
        sampling_rate: float,
        window_rows: int,
        rng: random.Random | None = None,
    ) -> None:
        if not baselines:
            raise ValueError("drift needs at least one feature baseline")
        if not 0 < sampling_rate <= 1:
            raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
        if window_rows < MIN_ROWS:
            raise ValueError(f"window_rows must be at least {MIN_ROWS}, got {window_rows}")
        self._rate = sampling_rate
        self._rng = rng or random.Random()
        self._features: list[_FeatureBins] = []
        start = 0
        for baseline in baselines:
            self._features.append(_FeatureBins(baseline, start))
            start += self._features[-1].bins
        self._ring = np.zeros((window_rows, start), dtype=np.uint32)
        self._totals = np.zeros(start, dtype=np.int64)
        self._next = 0
        self._held = 0
        self._sampled = 0

    @property
    def sampled_rows(self) -> int:
        """Rows sampled since the window was built, including those since dropped."""
        return self._sampled

    @property
    def held_rows(self) -> int:
        """Rows in the window now (at most `window_rows`): what the scores are over."""
        return self._held

    @property
    def nbytes(self) -> int:
        """Memory held by the counts; fixed when the window is built."""
        return self._ring.nbytes + self._totals.nbytes

    def observe(self, x: np.ndarray) -> None:
        """Maybe sample a batch of model input rows shaped (rows, ..., features)."""
        if x.ndim < 2 or x.shape[-1] != len(self._features):
            raise ValueError(
                f"input shape {list(x.shape)} does not end in the {len(self._features)} "
                "features of the drift baseline"
            )
        if self._rate < 1 and self._rng.random() >= self._rate:
            return
        rows = x.shape[0]
        self._sampled += rows
        window = len(self._ring)
        # Rows that would be overwritten within this same batch are not binned at all.
        kept = np.asarray(x[max(rows - window, 0) :], dtype=np.float64)
        if not len(kept):
            return
        kept = kept.reshape(len(kept), math.prod(x.shape[1:-1]), len(self._features))
        counts = self._row_counts(kept)
        slots = (self._next + np.arange(len(kept))) % window
        self._totals -= self._ring[slots].sum(axis=0, dtype=np.int64)
        self._ring[slots] = counts
        self._totals += counts.sum(axis=0)
        self._next = int(slots[-1] + 1) % window
        self._held = min(self._held + len(kept), window)

    def _row_counts(self, values: np.ndarray) -> np.ndarray:
        """(rows, total bins) counts of a (rows, observations, features) batch."""
        rows = len(values)
        counts = np.empty((rows, self._ring.shape[1]), dtype=np.int64)
        for f, feature in enumerate(self._features):
            column = values[:, :, f]
            finite = np.isfinite(column)
            # One bincount per feature: offsetting each row's bins makes them disjoint.
            flat = feature.local(column) + (np.arange(rows) * feature.bins)[:, None]
            per_row = np.bincount(flat[finite], minlength=rows * feature.bins)
            counts[:, feature.segment] = per_row.reshape(rows, feature.bins)
        return counts

    def scores(self) -> list[DriftScore]:
        """One score per feature with observations in the window; [] below MIN_ROWS rows."""
        if self._held < MIN_ROWS:
            return []
        found = (f.score(self._totals[f.segment], self._held) for f in self._features)
        return [score for score in found if score is not None]
