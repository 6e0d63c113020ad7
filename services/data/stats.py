"""Streaming statistics over batches of rows, in bounded memory.

`Moments` keeps count, mean, variance, min and max per feature and merges each batch
with Chan, Golub and LeVeque's parallel update, so the result matches numpy over the
whole data to rounding. `Histograms` counts values into fixed bins whose edges are
numpy's for the same range, so they equal `numpy.histogram` over the whole data. Both
skip values that are not finite (NaN marks a missing or invalid value)."""

from __future__ import annotations

import numpy as np


class Moments:
    """Per-feature count, mean, population std, min and max of finite values."""

    def __init__(self, features: int) -> None:
        self.count = np.zeros(features, dtype=np.int64)
        self.mean = np.zeros(features)
        self._m2 = np.zeros(features)
        self.min = np.full(features, np.inf)
        self.max = np.full(features, -np.inf)

    def add(self, values: np.ndarray) -> None:
        """Merge a (rows, features) batch."""
        valid = np.isfinite(values)
        if valid.all():
            # The common case (kept rows): nothing to mask.
            count = np.full(values.shape[1], len(values), dtype=np.int64)
            present, low, high = values, values, values
        else:
            count = valid.sum(axis=0)
            present = np.where(valid, values, 0.0)
            low = np.where(valid, values, np.inf)
            high = np.where(valid, values, -np.inf)
        if not count.any():
            return
        batch_mean = np.divide(
            present.sum(axis=0), count, out=np.zeros_like(self.mean), where=count > 0
        )
        deviations = values - batch_mean
        if present is not values:
            deviations = np.where(valid, deviations, 0.0)
        batch_m2 = (deviations * deviations).sum(axis=0)
        total = self.count + count
        delta = batch_mean - self.mean
        weight = np.divide(count, total, out=np.zeros_like(self.mean), where=total > 0)
        self._m2 += batch_m2 + delta * delta * self.count * weight
        self.mean += delta * weight
        self.count = total
        self.min = np.minimum(self.min, low.min(axis=0))
        self.max = np.maximum(self.max, high.max(axis=0))

    @property
    def std(self) -> np.ndarray:
        variance = np.divide(
            self._m2, self.count, out=np.zeros_like(self._m2), where=self.count > 0
        )
        return np.sqrt(variance)


class Histograms:
    """Equal-width histograms, one per feature with a known finite range."""

    def __init__(self, ranges: list[tuple[float, float] | None], bins: int) -> None:
        self._bins = bins
        self.edges = [None if bounds is None else _edges(bounds, bins) for bounds in ranges]
        # A range too narrow for float64 to split into bins has no histogram.
        self._ranges = [
            r if e is not None else None for r, e in zip(ranges, self.edges, strict=True)
        ]
        self.counts = [np.zeros(bins, dtype=np.int64) for _ in ranges]

    def add(self, values: np.ndarray) -> None:
        """Count a (rows, features) batch."""
        for column, bounds in enumerate(self._ranges):
            if bounds is None:
                continue
            present = values[:, column]
            present = present[np.isfinite(present)]
            # Equal bins by count and range: numpy's arithmetic path, not a sort.
            self.counts[column] += np.histogram(present, bins=self._bins, range=bounds)[0]


def _edges(bounds: tuple[float, float], bins: int) -> np.ndarray | None:
    try:
        return np.histogram_bin_edges(np.empty(0), bins, range=bounds)
    except ValueError:
        return None
