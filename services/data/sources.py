"""What ingest needs from an uploaded file, whatever its format.

A `Source` is read twice. `infer` is the first pass: it checks the file's structure,
infers the schema (or checks the file against a reference schema) and computes the
statistics that need no schema. `encode` is the second pass: it yields the rows in
chunks, encoded with the schema, with the anomalies found in each chunk and a hash of
each row's content for the split."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.data.entities import AnomalyKind, FeatureStatistics, Schema
from shared.errors import InvalidArgument, invalid

MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
TOP_VALUES = 10


@dataclass(frozen=True)
class Inference:
    schema: Schema
    total_rows: int
    # Per feature of the schema; histograms are added by the second pass.
    statistics: list[FeatureStatistics]


@dataclass(frozen=True)
class Problem:
    """One kind of anomaly in one column, at `rows` (indices within the chunk)."""

    kind: AnomalyKind
    column: str
    rows: np.ndarray
    describe: Callable[[int], str]


@dataclass(frozen=True)
class EncodedChunk:
    first_row: int
    # float64, (rows, *feature_shape); NaN where a value is missing or invalid.
    features: np.ndarray
    # int64 class indices, (rows,); -1 where the label is missing or unknown.
    labels: np.ndarray
    # uint64, (rows,): a hash of each row's content.
    row_hashes: np.ndarray
    problems: list[Problem]


class Source(Protocol):
    def infer(self, reference: Schema | None) -> Inference: ...

    def encode(self, schema: Schema) -> Iterator[EncodedChunk]: ...


def same_detail(detail: str) -> Callable[[int], str]:
    """A `Problem.describe` that says the same for every row."""
    return lambda _row: detail


def is_missing(value: str) -> bool:
    return value.strip() in MISSING_TOKENS


def vocabulary(values: Iterable[str]) -> list[str]:
    """Distinct values in encoding order: numeric order when all are numbers, else text order."""
    distinct = set(values)
    try:
        return sorted(distinct, key=lambda value: (float(value), value))
    except ValueError:
        return sorted(distinct)


def _too_many_labels(max_classes: int) -> InvalidArgument:
    return invalid(
        "chunk", f"the label has more than {max_classes} distinct values; labels must be classes"
    )


def label_vocabulary(counts: Counter[str], max_classes: int) -> list[str]:
    labels = vocabulary(value for value in counts if not is_missing(value))
    if not labels:
        raise invalid("chunk", "no row has a label")
    if len(labels) > max_classes:
        raise _too_many_labels(max_classes)
    return labels


def check_label_counts(counts: Counter[str], max_classes: int) -> None:
    """Fail early, while counting, once the labels cannot be classes any more."""
    if len(counts) > max_classes + len(MISSING_TOKENS):
        raise _too_many_labels(max_classes)


def finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
