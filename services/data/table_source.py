"""A tabular upload (CSV, Parquet, JSON Lines) as a `Source`: one feature per column
except the label, read as Arrow record batches.

Type inference follows TFDV's spirit: a column is numeric when most of its present
values are numbers (INT when all of them are integral), else categorical with the sorted
distinct values as vocabulary. The first pass reads the file once, profiles each column
and sets each batch aside (`BatchSpill`) with the columns that can only be numbers
already parsed (where the numbers say all the text did); the second pass encodes the
set-aside batches with the schema, so the file is parsed once. Everything per row runs
in Arrow's kernels or numpy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from services.data.batch_spill import BatchSpill
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
from services.data.splits import hash_values, number_words, text_words
from services.data.stats import Moments
from services.data.table_columns import (
    ParsedColumn,
    codes_in,
    is_text,
    missing_text,
    normalized,
    parse_numbers,
    shown,
    stripped_text,
    value_counts,
)
from services.data.table_files import TableFile, read_ahead
from shared.errors import invalid

# The largest whole number an INT column may hold: float64's exact range.
MAX_EXACT_INT = 2.0**53


@dataclass
class _ColumnProfile:
    """First-pass counts of one feature column."""

    missing: int = 0
    text: int = 0
    not_finite: int = 0
    integral: bool = True
    # Distinct values, until there are too many for a categorical column.
    distinct: Counter[str] | None = field(default_factory=Counter)


@dataclass(frozen=True)
class _Vocabulary:
    """A categorical column's (or the label's) values, as Arrow matches them and as the
    row hash takes them."""

    values: pa.Array
    words: np.ndarray

    @classmethod
    def of(cls, values: list[str]) -> _Vocabulary:
        return cls(pa.array(values, pa.string()), text_words(values))

    def words_of(self, codes: np.ndarray) -> np.ndarray:
        """Each code's word; 0 where it is -1 (a bad row's value, never hashed for a split)."""
        if not len(self.words):
            return np.zeros(len(codes), dtype=np.uint64)
        return np.where(codes >= 0, self.words[codes], np.uint64(0))


class TableSource:
    def __init__(
        self, table: TableFile, label_column: str, max_categories: int, spill_dir: Path
    ) -> None:
        self._table = table
        self._max_categories = max_categories
        self._spill_dir = spill_dir
        self._spill: BatchSpill | None = None
        columns = table.columns
        if label_column not in columns:
            raise invalid(
                "header.label_column", f"column {label_column!r} is not in the header {columns}"
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
        self._spill = BatchSpill(self._spill_dir)
        try:
            for batch in read_ahead(self._table.batches()):
                rows += batch.num_rows
                label = self._normalized(self._label, batch.column(self._label_index))
                labels.update(value_counts(label))
                check_label_counts(labels, self._max_categories)
                numbers, spilled = self._profile_batch(batch, profiles, reference)
                moments.add(numbers)
                names = [*self._feature_names, self._label]
                self._spill.write(pa.record_batch([*spilled, label], names=names))
        except BaseException:
            self._spill.close()
            raise
        if rows == 0:
            raise invalid("chunk", f"the {self._table.kind} has a header but no data rows")
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
                f"this file has features {self._feature_names} and label {self._label!r}",
            )

    def _profile_batch(
        self, batch: pa.RecordBatch, profiles: list[_ColumnProfile], reference: Schema | None
    ) -> tuple[np.ndarray, list[pa.Array]]:
        """The batch's numbers (NaN where missing or not a number) for the moments, and
        its feature columns as the second pass reads them."""
        numbers = np.empty((batch.num_rows, len(profiles)))
        spilled = []
        for f, (index, profile) in enumerate(zip(self._feature_indexes, profiles, strict=True)):
            column = self._normalized(self._feature_names[f], batch.column(index))
            parsed = parse_numbers(column)
            finite = np.isfinite(parsed.numbers)
            profile.missing += int(parsed.missing.sum())
            profile.text += int(parsed.text.sum())
            profile.not_finite += int((~finite & ~parsed.missing & ~parsed.text).sum())
            if profile.integral:
                # INT: whole numbers that float64 holds exactly.
                present = parsed.numbers[finite]
                profile.integral = bool(
                    np.all((present == np.floor(present)) & (np.abs(present) <= MAX_EXACT_INT))
                )
            if not is_text(column):
                # Numbers only: never a categorical column (unless a reference says so).
                profile.distinct = None
            if profile.distinct is not None:
                profile.distinct.update(value_counts(column))
                if len(profile.distinct) > self._max_categories + len(MISSING_TOKENS):
                    profile.distinct = None
            numbers[:, f] = np.where(finite, parsed.numbers, np.nan)
            # Parsed numbers are set aside where they tell the second pass all the text
            # would: the column cannot be categorical, and no value is an anomaly whose
            # detail quotes its text (text, infinities; a reference's ranges).
            numeric = profile.distinct is None and reference is None
            spilled.append(
                pa.array(parsed.numbers) if numeric and parsed.clean and is_text(column) else column
            )
        return numbers, spilled

    def _normalized(self, name: str, column: pa.Array) -> pa.Array:
        return normalized(name, column, check_text=not self._table.text_checked)

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
        if self._spill is None:
            raise RuntimeError("encode() follows infer()")
        labels = _Vocabulary.of(schema.label_vocabulary)
        vocabularies = [_Vocabulary.of(f.vocabulary) for f in schema.features]
        first_row = 0
        try:
            for batch in self._spill.batches():
                yield self._encode_batch(batch, first_row, schema, vocabularies, labels)
                first_row += batch.num_rows
        finally:
            self._spill.close()

    def _encode_batch(
        self,
        batch: pa.RecordBatch,
        first_row: int,
        schema: Schema,
        vocabularies: list[_Vocabulary],
        labels: _Vocabulary,
    ) -> EncodedChunk:
        features = np.empty((batch.num_rows, len(schema.features)))
        words = []
        problems: list[Problem] = []
        for f, (feature, known) in enumerate(zip(schema.features, vocabularies, strict=True)):
            column = batch.column(f)
            if feature.kind is FeatureKind.CATEGORICAL:
                codes = _encode_categories(column, known, feature.name, problems, label=False)
                features[:, f] = np.where(codes >= 0, codes, np.nan)
                words.append(known.words_of(codes))
            else:
                features[:, f] = _encode_numbers(column, feature, problems)
                words.append(number_words(features[:, f]))
        label = batch.column(len(schema.features))
        codes = _encode_categories(label, labels, self._label, problems, label=True)
        words.append(labels.words_of(codes))
        return EncodedChunk(
            first_row=first_row,
            features=features,
            labels=codes,
            row_hashes=hash_values(words),
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
    column: pa.Array, feature: FeatureSchema, problems: list[Problem]
) -> np.ndarray:
    parsed: ParsedColumn = parse_numbers(column)
    finite = np.isfinite(parsed.numbers)
    name = feature.name
    _report(problems, AnomalyKind.MISSING_VALUE, name, parsed.missing, same_detail("missing value"))
    _report(
        problems,
        AnomalyKind.NOT_A_NUMBER,
        name,
        parsed.text,
        lambda i: f"not a number: {shown(column, i)!r}",
    )
    _report(
        problems,
        AnomalyKind.NOT_FINITE,
        name,
        ~finite & ~parsed.missing & ~parsed.text,
        lambda i: f"not a finite number: {shown(column, i)!r}",
    )
    if feature.kind is FeatureKind.INT:
        # A column whose schema (a reference version's) says INT takes whole numbers only.
        _report(
            problems,
            AnomalyKind.NOT_A_NUMBER,
            name,
            finite & (parsed.numbers != np.floor(parsed.numbers)),
            lambda i: f"not an integer: {shown(column, i)!r} (the schema's column is INT)",
        )
    low, high = feature.min, feature.max
    if low is not None and high is not None:
        _report(
            problems,
            AnomalyKind.OUT_OF_RANGE,
            name,
            finite & ((parsed.numbers < low) | (parsed.numbers > high)),
            lambda i: (
                f"{shown(column, i).strip()} is outside the schema's range [{low:g}, {high:g}]"
            ),
        )
    return np.where(finite, parsed.numbers, np.nan)


def _encode_categories(
    column: pa.Array, known: _Vocabulary, name: str, problems: list[Problem], label: bool
) -> np.ndarray:
    """Each value's index in the vocabulary, -1 where it is missing or not in it."""
    stripped = stripped_text(column)
    codes = codes_in(stripped, known.values)
    unmatched = codes < 0
    if unmatched.any():
        missing = unmatched & missing_text(stripped)
        what = "label set" if label else "vocabulary"
        _report(
            problems,
            AnomalyKind.MISSING_LABEL if label else AnomalyKind.MISSING_VALUE,
            name,
            missing,
            same_detail("missing label" if label else "missing value"),
        )
        _report(
            problems,
            AnomalyKind.UNKNOWN_LABEL if label else AnomalyKind.UNKNOWN_CATEGORY,
            name,
            unmatched & ~missing,
            lambda i: f"{shown(stripped, i)!r} is not in the schema's {what}",
        )
    return codes
