"""The drift of one served version's live inputs: its window, its baseline, its metrics.

`LiveDrift` joins a `DriftWindow` (services.inference.drift) to the dataset version the
model was trained on and to the input it watches, exports the scores as
`tfmesh_inference_drift_score` (at most once a second, from the request that sampled),
and reports a `DriftStatus` for the statistics a client asks for. A version whose drift
cannot be watched (sampling off, no lineage, an input that is not the dataset's features)
gets a `LiveDrift` that only says why."""

from __future__ import annotations

import time

import numpy as np

from services.inference import metrics
from services.inference.drift import MIN_ROWS, DriftScore, DriftStatus, DriftWindow

# TFDV-style thresholds past which a feature counts as drifted: a PSI above 0.25 is the
# usual "significant shift"; L-infinity is the largest change in one category's share.
THRESHOLDS = {"psi": 0.25, "linf": 0.3}
EXPORT_EVERY_S = 1.0


class LiveDrift:
    def __init__(
        self,
        model: str,
        version: int,
        *,
        baseline: str = "",
        input_name: str = "",
        window: DriftWindow | None = None,
        note: str = "",
    ) -> None:
        self._labels = (model, str(version))
        self.baseline = baseline
        self.input_name = input_name
        self._window = window
        self._note = note
        self._exported_at = 0.0
        self._exported: set[tuple[str, str]] = set()
        self._sampled = metrics.DRIFT_SAMPLED_ROWS.labels(*self._labels)

    @classmethod
    def off(cls, model: str, version: int, note: str, baseline: str = "") -> LiveDrift:
        return cls(model, version, baseline=baseline, note=note)

    def observe(self, inputs: dict[str, np.ndarray]) -> None:
        """Maybe sample a request's inputs (called before the request is queued)."""
        window = self._window
        if window is None:
            return
        before = window.sampled_rows
        window.observe(inputs[self.input_name])
        if window.sampled_rows == before:
            return
        self._sampled.inc(window.sampled_rows - before)
        now = time.monotonic()
        if now - self._exported_at >= EXPORT_EVERY_S:
            # Below the rows needed there are no scores yet: keep trying on each sample.
            scores = window.scores()
            if scores:
                self._exported_at = now
                self._export(scores)

    def _export(self, scores: list[DriftScore]) -> None:
        for score in scores:
            metrics.DRIFT_SCORE.labels(*self._labels, score.feature, score.statistic).set(
                score.score
            )
            self._exported.add((score.feature, score.statistic))

    def status(self) -> DriftStatus:
        window = self._window
        if window is None:
            return DriftStatus(baseline=self.baseline, note=self._note)
        scores = window.scores()
        note = "" if scores else f"scores need {MIN_ROWS} sampled rows; {window.held_rows} so far"
        return DriftStatus(self.baseline, window.sampled_rows, window.held_rows, scores, note)

    def close(self) -> None:
        """The version is unloaded: its scores read 0, so no alert holds on a version that
        no longer serves (multiprocess metric files cannot drop a series)."""
        for feature, statistic in self._exported:
            metrics.DRIFT_SCORE.labels(*self._labels, feature, statistic).set(0)
