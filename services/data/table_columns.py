"""One column of a record batch read as numbers or as text, with Arrow's compute kernels.

A numeric column (Parquet or JSON numbers, booleans) is its values as float64; a null is
a missing value. A text column (every CSV column, JSON or Parquet strings) is cast to
float64 in one kernel call when all its values are numbers; only a batch where some are
not (a missing-value token, padding, text) falls back to parsing its distinct values one
by one. Text values are compared stripped of surrounding white space, as the vocabulary
holds them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.data.sources import MISSING_TOKENS, is_missing
from shared.errors import invalid

MISSING = pa.array(sorted(MISSING_TOKENS), pa.string())


@dataclass(frozen=True)
class ParsedColumn:
    """A column as numbers: NaN where the value is missing or not a number."""

    numbers: np.ndarray
    missing: np.ndarray
    text: np.ndarray

    @property
    def clean(self) -> bool:
        """Numbers or missing values only, all finite: the numbers (NaN for missing) say
        all there is, anomaly details included."""
        return not self.text.any() and bool(np.isfinite(self.numbers[~self.missing]).all())


def is_text(column: pa.Array) -> bool:
    return pa.types.is_string(column.type) or pa.types.is_large_string(column.type)


def normalized(name: str, column: pa.Array, check_text: bool) -> pa.Array:
    """The column as numbers (integers, floats, booleans, nulls) or as UTF-8 text:
    dictionaries decoded, decimals as float64, string views as strings; INVALID_ARGUMENT
    for any other type, or (`check_text`: Parquet and JSON readers do not check it) for
    text that is not UTF-8."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.dictionary_decode()
        kind = column.type
    if pa.types.is_decimal(kind):
        return pc.cast(column, pa.float64(), safe=False)
    if pa.types.is_string_view(kind):
        column = pc.cast(column, pa.string())
    elif not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
        or is_text(column)
    ):
        raise invalid(
            "chunk", f"column {name!r} holds {kind}; a feature or label is a number or text"
        )
    if check_text and is_text(column):
        try:
            column.validate(full=True)
        except pa.ArrowInvalid:
            raise invalid("chunk", f"column {name!r} holds text that is not UTF-8") from None
    return column


def parse_numbers(column: pa.Array) -> ParsedColumn:
    """A normalized column's values as numbers."""
    if not is_text(column):
        numbers = pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        return ParsedColumn(numbers, np.isnan(numbers), np.zeros(len(numbers), dtype=bool))
    try:
        numbers = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return _parse_distinct(column)
    # Nulls and "nan" become NaN: both are missing values.
    return ParsedColumn(numbers, np.isnan(numbers), np.zeros(len(numbers), dtype=bool))


def _parse_distinct(column: pa.Array) -> ParsedColumn:
    encoded = pc.dictionary_encode(pc.fill_null(column, ""))
    distinct = encoded.dictionary.to_pylist()
    inverse = encoded.indices.to_numpy()
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


def stripped_text(column: pa.Array) -> pa.Array:
    """A normalized column's values as text without surrounding white space; "" where
    null."""
    if not is_text(column):
        column = pc.cast(column, pa.string())
    return pc.utf8_trim_whitespace(pc.fill_null(column, ""))


def missing_text(stripped: pa.Array) -> np.ndarray:
    return pc.is_in(stripped, value_set=MISSING).to_numpy(zero_copy_only=False)


def codes_in(stripped: pa.Array, values: pa.Array) -> np.ndarray:
    """Each value's index in `values`, -1 where it is not there."""
    found = pc.index_in(stripped, value_set=values)
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def value_counts(column: pa.Array) -> Counter[str]:
    """How often each value of a normalized column occurs, as text stripped of
    surrounding white space (counted on the distinct values: stripping a handful beats
    stripping every row)."""
    counts = pc.value_counts(column)
    distinct = stripped_text(counts.field("values")).to_pylist()
    found: Counter[str] = Counter()
    for value, count in zip(distinct, counts.field("counts").to_pylist(), strict=True):
        found[value] += count
    return found


def shown(column: pa.Array, row: int) -> str:
    """A value as the anomaly's detail quotes it."""
    value = column[row].as_py()
    return "" if value is None else str(value)
