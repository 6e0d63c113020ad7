"""Feedback: the true outcomes clients report for earlier predictions, joined by request id.

Each served model keeps a `PredictionLog` of its most recent predictions: request id,
version, when, and the predicted value of each row (a classifier's class is the argmax of
its output; a model with one output column is a regressor and predicts that value). At most
`max_predictions` are kept, the oldest forgotten first, so memory is bounded. A feedback
item names a request id and gives the true value of each of its rows; joined to its
prediction it adds to that version's `FeedbackTally` (rows, correct rows of classifiers,
absolute error), from which live accuracy (classifiers) and mean absolute error follow.
Predictions of more than `MAX_LOGGED_ROWS` rows are not logged, so each entry is small
(about 200 bytes plus 8 per row). An id the log does not hold
(never seen, or forgotten) counts as unknown, a prediction older than `retention_s` as
late; neither is an error. A report is refused whole, and changes nothing, when an item is
malformed, names a version that is not served, repeats an id, or reports an id twice."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from shared.errors import FailedPrecondition, FieldViolation, raise_violations

MAX_ITEMS = 10_000
MAX_REQUEST_ID = 128
# Predictions of more rows are not logged (feedback for them counts as unknown), so an
# entry holds at most this many values and the log's memory stays bounded by its length.
MAX_LOGGED_ROWS = 64


@dataclass
class FeedbackTally:
    """What the feedback joined to one version's predictions says about it."""

    requests: int = 0
    rows: int = 0
    correct_rows: int = 0
    abs_error_sum: float = 0.0
    # Reports whose prediction was older than the retention.
    late: int = 0
    # Rows of classifier predictions: live accuracy is correct_rows / classified_rows.
    classified_rows: int = 0

    def plus(self, other: FeedbackTally) -> FeedbackTally:
        return FeedbackTally(
            self.requests + other.requests,
            self.rows + other.rows,
            self.correct_rows + other.correct_rows,
            self.abs_error_sum + other.abs_error_sum,
            self.late + other.late,
            self.classified_rows + other.classified_rows,
        )


@dataclass(frozen=True)
class FeedbackItem:
    request_id: str
    labels: tuple[float, ...]
    # The version the client believes served the request; 0 when it does not say.
    version: int = 0


@dataclass(frozen=True)
class FeedbackOutcome:
    matched: int = 0
    unknown: int = 0
    late: int = 0
    # What the report added to each version's tally.
    added: dict[int, FeedbackTally] = field(default_factory=dict)


@dataclass
class _Logged:
    version: int
    # One value per row: a class index (classifiers) or a value (regressors).
    predicted: np.ndarray
    classifier: bool
    at: float
    reported: bool = False


def predicted_values(outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, bool] | None:
    """The predicted value of each row and whether they are classes, from a version's first
    output; None when that output is not a class distribution or a value per row."""
    if not outputs:
        return None
    first = np.asarray(next(iter(outputs.values())))
    if first.ndim == 2 and first.shape[1] > 1 and first.dtype.kind in "fiu":
        return np.argmax(first, axis=1).astype(np.int64), True
    if (first.ndim == 1 or (first.ndim == 2 and first.shape[1] == 1)) and first.dtype.kind in "fiu":
        return first.reshape(-1).astype(np.float64), False
    return None


@dataclass
class PredictionLog:
    max_predictions: int = 50_000
    retention_s: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    unknown: int = 0
    _entries: OrderedDict[str, _Logged] = field(default_factory=OrderedDict)
    _tallies: dict[int, FeedbackTally] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.max_predictions > 0

    def record(self, request_id: str, version: int, outputs: Mapping[str, np.ndarray]) -> None:
        """Remember a prediction (a repeated id replaces the older one)."""
        if not self.enabled or not request_id:
            return
        values = predicted_values(outputs)
        if values is None or len(values[0]) > MAX_LOGGED_ROWS:
            return
        self._entries.pop(request_id, None)
        self._entries[request_id] = _Logged(version, values[0], values[1], self.clock())
        while len(self._entries) > self.max_predictions:
            self._entries.popitem(last=False)

    def tally(self, version: int) -> FeedbackTally:
        return self._tallies.get(version) or FeedbackTally()

    def report(self, items: Sequence[FeedbackItem], served: Collection[int]) -> FeedbackOutcome:
        """Join `items` to their predictions; `served` are the versions loaded now."""
        found = self._check(items, served)
        now = self.clock()
        added: dict[int, FeedbackTally] = {}
        matched = late = 0
        for item, logged in zip(items, found, strict=True):
            if logged is None:
                self.unknown += 1
                continue
            logged.reported = True
            delta = added.setdefault(logged.version, FeedbackTally())
            if now - logged.at > self.retention_s:
                delta.late += 1
                late += 1
                continue
            truth = np.asarray(item.labels, dtype=np.float64)
            delta.requests += 1
            delta.rows += len(truth)
            if logged.classifier:
                delta.classified_rows += len(truth)
                delta.correct_rows += int(np.sum(logged.predicted == truth))
            delta.abs_error_sum += float(np.sum(np.abs(logged.predicted - truth)))
            matched += 1
        for version, delta in added.items():
            self._tallies[version] = self.tally(version).plus(delta)
        return FeedbackOutcome(matched, len(items) - matched - late, late, added)

    def _check(
        self, items: Sequence[FeedbackItem], served: Collection[int]
    ) -> list[_Logged | None]:
        """The logged prediction of each item (None: unknown); raises, changing nothing, on
        a malformed report."""
        violations: list[FieldViolation | None] = []
        if not items:
            violations.append(FieldViolation("items", "at least one feedback item"))
        if len(items) > MAX_ITEMS:
            violations.append(FieldViolation("items", f"at most {MAX_ITEMS} items a report"))
        raise_violations(violations)
        seen: set[str] = set()
        found: list[_Logged | None] = []
        for i, item in enumerate(items):
            where = f"items[{i}]"
            violations += _item_problems(item, where, seen)
            seen.add(item.request_id)
            logged = self._entries.get(item.request_id)
            found.append(logged)
            if logged is not None and item.labels:
                violations += _fit_problems(item, where, logged, served)
        raise_violations(violations)
        for i, item in enumerate(items):
            if item.version and item.version not in served:
                raise FailedPrecondition(
                    f"items[{i}]: version {item.version} is not served; feedback goes to "
                    "a version that is loaded"
                )
            logged = found[i]
            if logged is not None and logged.reported:
                raise FailedPrecondition(
                    f"items[{i}]: feedback for request {item.request_id!r} was already recorded"
                )
        return found


def _item_problems(item: FeedbackItem, where: str, seen: set[str]) -> list[FieldViolation]:
    """What is wrong with one item on its own (`seen`: the ids of the items before it)."""
    problems = []
    if not item.request_id or len(item.request_id) > MAX_REQUEST_ID:
        problems.append(FieldViolation(f"{where}.request_id", f"1-{MAX_REQUEST_ID} characters"))
    elif item.request_id in seen:
        problems.append(FieldViolation(f"{where}.request_id", "repeats an earlier item's id"))
    if not item.labels:
        problems.append(FieldViolation(f"{where}.labels", "one true value per row"))
    elif not all(math.isfinite(label) for label in item.labels):
        problems.append(FieldViolation(f"{where}.labels", "must be finite numbers"))
    if item.version < 0:
        problems.append(FieldViolation(f"{where}.version", "must be >= 0"))
    return problems


def _fit_problems(
    item: FeedbackItem, where: str, logged: _Logged, served: Collection[int]
) -> list[FieldViolation]:
    """What keeps an item from fitting the prediction it names."""
    problems = []
    if item.version in served and item.version != logged.version:
        problems.append(
            FieldViolation(
                f"{where}.version",
                f"request {item.request_id!r} was served by version {logged.version}",
            )
        )
    if len(item.labels) != len(logged.predicted):
        problems.append(
            FieldViolation(
                f"{where}.labels",
                f"{len(item.labels)} values for a prediction of {len(logged.predicted)} rows",
            )
        )
    elif logged.classifier and not all(float(v).is_integer() for v in item.labels):
        problems.append(
            FieldViolation(f"{where}.labels", "a classifier's labels are class indices")
        )
    return problems
