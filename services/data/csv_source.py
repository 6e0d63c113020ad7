"""A CSV upload as a `Source`: tabular rows, one feature per column except the label.

Type inference follows TFDV's spirit: a column is numeric when most of its present
values are numbers (INT when all of them are integral), else categorical with the sorted
distinct values as vocabulary. Values are parsed a column of a block at a time with
numpy; only a block with a missing or non-numeric value falls back to parsing its
distinct values one by one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.data.csv_blocks import CsvBlock, CsvFile
from services.data.entities import (
    AnomalyKind,
    FeatureKind,
    FeatureSchema,
    FeatureStatistics,
    Schema,
)
from services.data.sources import (
    MISSING_TOKENS,
    TOP_VALUES,
    EncodedChunk,
    Inference,
    Problem,
    check_label_counts,
    finite_or_none,
    is_missing,
    label_vocabulary,
    same_detail,
    vocabulary,
)
from services.data.splits import hash_rows
from services.data.stats import Moments
from shared.errors import invalid

# The largest whole number an INT column may hold: float64's exact range.
MAX_EXACT_INT = 2.0**53
# A quoted field may make a block this much larger than `block_bytes`, no more.
MAX_BLOCK_FACTOR = 64


@dataclass(frozen=True)
class ParsedColumn:
    """A column of a block as numbers: NaN where the value is missing or not a number."""

    numbers: np.ndarray
    missing: np.ndarray
    text: np.ndarray


def parse_numbers(values: list[str]) -> ParsedColumn:
    try:
        numbers = np.array(values, dtype=np.float64)
    except ValueError:
        return _parse_distinct(values)
    # "nan" and "NaN" parse as NaN; they are missing-value tokens.
    return ParsedColumn(numbers, np.isnan(numbers), np.zeros(len(values), dtype=bool))


def _parse_distinct(values: list[str]) -> ParsedColumn:
    distinct, inverse = np.unique(np.array(values, dtype=object), return_inverse=True)
    numbers = np.full(len(distinct), np.nan)
    missing = np.zeros(len(distinct), dtype=bool)
    text = np.zeros(len(distinct), dtype=bool)
    for i, value in enumerate(distinct):
        if is_missing(value):
            missing[i] = True
            continue
        try:
            numbers[i] = float(value)
        except ValueError:
            text[i] = True
        else:
            missing[i] = np.isnan(numbers[i])
    return ParsedColumn(numbers[inverse], missing[inverse], text[inverse])


@dataclass
class _ColumnProfile:
    """First-pass counts of one feature column."""

    missing: int = 0
    text: int = 0
    not_finite: int = 0
    integral: bool = True
    # Distinct values, until there are too many for a categorical column.
    distinct: Counter[str] | None = field(default_factory=Counter)


class CsvSource:
    def __init__(
        self, path: Path, label_column: str, block_bytes: int, max_categories: int
    ) -> None:
        self._file = CsvFile(path, block_bytes, block_bytes * MAX_BLOCK_FACTOR)
        self._max_categories = max_categories
        columns = self._file.columns
        if label_column not in columns:
            raise invalid(
                "header.label_column", f"column {label_column!r} is not in the CSV header {columns}"
            )
        self._label_index = columns.index(label_column)
        self._feature_indexes = [i for i in range(len(columns)) if i != self._label_index]
        self._feature_names = [columns[i] for i in self._feature_indexes]
        self._label = label_column

    def infer(self, reference: Schema | None) -> Inference:
        if reference is not None:
            self._check_columns(reference)
        profiles = [_ColumnProfile() for _ in self._feature_indexes]
        moments = Moments(len(self._feature_indexes))
        labels: Counter[str] = Counter()
        rows = 0
        for block in self._file.blocks():
            rows += block.rows
            labels.update(map(str.strip, block.columns[self._label_index]))
            check_label_counts(labels, self._max_categories)
            moments.add(self._profile_block(block, profiles))
        if rows == 0:
            raise invalid("chunk", "the CSV has a header but no data rows")
        statistics = [
            self._statistics(name, profile, moments, i, rows, reference)
            for i, (name, profile) in enumerate(zip(self._feature_names, profiles, strict=True))
        ]
        schema = reference or Schema(
            features=[
                self._feature_schema(s, p) for s, p in zip(statistics, profiles, strict=True)
            ],
            feature_shape=[len(self._feature_indexes)],
            label=self._label,
            label_vocabulary=label_vocabulary(labels, self._max_categories),
        )
        return Inference(schema, rows, statistics)

    def _check_columns(self, reference: Schema) -> None:
        expected = [feature.name for feature in reference.features]
        if self._feature_names != expected or self._label != reference.label:
            raise invalid(
                "header.reference_version",
                f"the reference has features {expected} and label {reference.label!r}; "
                f"this CSV has features {self._feature_names} and label {self._label!r}",
            )

    def _profile_block(self, block: CsvBlock, profiles: list[_ColumnProfile]) -> np.ndarray:
        numbers = np.empty((block.rows, len(profiles)))
        for f, (index, profile) in enumerate(zip(self._feature_indexes, profiles, strict=True)):
            values = block.columns[index]
            parsed = parse_numbers(values)
            finite = np.isfinite(parsed.numbers)
            profile.missing += int(parsed.missing.sum())
            profile.text += int(parsed.text.sum())
            profile.not_finite += int((~finite & ~parsed.missing & ~parsed.text).sum())
            present = parsed.numbers[finite]
            # INT: whole numbers that float64 holds exactly.
            profile.integral = profile.integral and bool(
                np.all((present == np.floor(present)) & (np.abs(present) <= MAX_EXACT_INT))
            )
            if profile.distinct is not None:
                profile.distinct.update(map(str.strip, values))
                if len(profile.distinct) > self._max_categories + len(MISSING_TOKENS):
                    profile.distinct = None
            numbers[:, f] = np.where(finite, parsed.numbers, np.nan)
        return numbers

    def _statistics(
        self,
        name: str,
        profile: _ColumnProfile,
        moments: Moments,
        index: int,
        rows: int,
        reference: Schema | None,
    ) -> FeatureStatistics:
        kind = (
            reference.features[index].kind
            if reference
            else self._inferred_kind(name, profile, rows)
        )
        if kind is FeatureKind.CATEGORICAL:
            present = Counter(
                {v: n for v, n in (profile.distinct or Counter()).items() if not is_missing(v)}
            )
            return FeatureStatistics(
                name=name,
                kind=kind,
                count=rows - profile.missing,
                missing=profile.missing,
                invalid=0,
                top_values=present.most_common(TOP_VALUES),
            )
        count = int(moments.count[index])
        return FeatureStatistics(
            name=name,
            kind=kind,
            count=count,
            missing=profile.missing,
            invalid=profile.text + profile.not_finite,
            mean=float(moments.mean[index]) if count else None,
            std=float(moments.std[index]) if count else None,
            min=finite_or_none(moments.min[index]),
            max=finite_or_none(moments.max[index]),
        )

    def _inferred_kind(self, name: str, profile: _ColumnProfile, rows: int) -> FeatureKind:
        numeric = rows - profile.missing - profile.text
        if profile.text <= numeric:
            return FeatureKind.INT if profile.integral and numeric else FeatureKind.FLOAT
        if profile.distinct is None:
            raise invalid(
                "chunk",
                f"column {name!r} is mostly text but has more than {self._max_categories} "
                "distinct values; a categorical column needs fewer",
            )
        return FeatureKind.CATEGORICAL

    def _feature_schema(self, stats: FeatureStatistics, profile: _ColumnProfile) -> FeatureSchema:
        if stats.kind is FeatureKind.CATEGORICAL:
            values = [v for v in profile.distinct or () if not is_missing(v)]
            return FeatureSchema(name=stats.name, kind=stats.kind, vocabulary=vocabulary(values))
        return FeatureSchema(name=stats.name, kind=stats.kind, min=stats.min, max=stats.max)

    def encode(self, schema: Schema) -> Iterator[EncodedChunk]:
        label_codes = {label: i for i, label in enumerate(schema.label_vocabulary)}
        codes = [{value: i for i, value in enumerate(f.vocabulary)} for f in schema.features]
        for block in self._file.blocks():
            features = np.empty((block.rows, len(schema.features)))
            problems: list[Problem] = []
            for f, (index, feature) in enumerate(
                zip(self._feature_indexes, schema.features, strict=True)
            ):
                values = block.columns[index]
                if feature.kind is FeatureKind.CATEGORICAL:
                    encoded = _encode_categories(
                        values, codes[f], feature.name, problems, label=False
                    )
                    features[:, f] = np.where(encoded >= 0, encoded, np.nan)
                else:
                    features[:, f] = _encode_numbers(values, feature, problems)
            labels = _encode_categories(
                block.columns[self._label_index], label_codes, self._label, problems, label=True
            )
            yield EncodedChunk(
                first_row=block.first_row,
                features=features,
                labels=labels,
                row_hashes=hash_rows(key.encode() for key in block.keys),
                problems=problems,
            )


def _report(
    problems: list[Problem],
    kind: AnomalyKind,
    column: str,
    mask: np.ndarray,
    describe: Callable[[int], str],
) -> None:
    rows = np.flatnonzero(mask)
    if rows.size:
        problems.append(Problem(kind, column, rows, describe))


def _encode_numbers(
    values: list[str], feature: FeatureSchema, problems: list[Problem]
) -> np.ndarray:
    parsed = parse_numbers(values)
    finite = np.isfinite(parsed.numbers)
    name = feature.name
    _report(problems, AnomalyKind.MISSING_VALUE, name, parsed.missing, same_detail("missing value"))
    _report(
        problems,
        AnomalyKind.NOT_A_NUMBER,
        name,
        parsed.text,
        lambda i: f"not a number: {values[i]!r}",
    )
    _report(
        problems,
        AnomalyKind.NOT_FINITE,
        name,
        ~finite & ~parsed.missing & ~parsed.text,
        lambda i: f"not a finite number: {values[i]!r}",
    )
    if feature.kind is FeatureKind.INT:
        # A column whose schema (a reference version's) says INT takes whole numbers only.
        _report(
            problems,
            AnomalyKind.NOT_A_NUMBER,
            name,
            finite & (parsed.numbers != np.floor(parsed.numbers)),
            lambda i: f"not an integer: {values[i]!r} (the schema's column is INT)",
        )
    low, high = feature.min, feature.max
    if low is not None and high is not None:
        _report(
            problems,
            AnomalyKind.OUT_OF_RANGE,
            name,
            finite & ((parsed.numbers < low) | (parsed.numbers > high)),
            lambda i: f"{values[i].strip()} is outside the schema's range [{low:g}, {high:g}]",
        )
    return np.where(finite, parsed.numbers, np.nan)


def _encode_categories(
    values: list[str], codes: dict[str, int], column: str, problems: list[Problem], label: bool
) -> np.ndarray:
    """Each value's index in the vocabulary, -1 where it is missing or not in it."""
    encoded = np.fromiter(
        (codes.get(value.strip(), -1) for value in values), dtype=np.int64, count=len(values)
    )
    unmatched = np.flatnonzero(encoded < 0)
    if unmatched.size:
        missing = np.zeros(len(values), dtype=bool)
        missing[unmatched] = [is_missing(values[i]) for i in unmatched]
        unknown = np.zeros(len(values), dtype=bool)
        unknown[unmatched] = ~missing[unmatched]
        what = "label set" if label else "vocabulary"
        _report(
            problems,
            AnomalyKind.MISSING_LABEL if label else AnomalyKind.MISSING_VALUE,
            column,
            missing,
            same_detail("missing label" if label else "missing value"),
        )
        _report(
            problems,
            AnomalyKind.UNKNOWN_LABEL if label else AnomalyKind.UNKNOWN_CATEGORY,
            column,
            unknown,
            lambda i: f"{values[i].strip()!r} is not in the schema's {what}",
        )
    return encoded
