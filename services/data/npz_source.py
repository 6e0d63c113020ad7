"""An NPZ upload as a `Source`: arrays `x` (examples on the first axis) and `y` (labels).

The arrays are streamed out of the zip archive a few rows at a time (stored or deflated
members alike), so an archive larger than memory is fine. Features are the channels of
`x`, its last axis: a row is bad when its `x` holds a NaN (missing) or an infinite value,
or a value outside a reference schema's range for its channel."""

from __future__ import annotations

import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from services.data.entities import (
    AnomalyKind,
    FeatureKind,
    FeatureSchema,
    FeatureStatistics,
    Schema,
)
from services.data.sources import (
    EncodedChunk,
    Inference,
    Problem,
    check_label_counts,
    finite_or_none,
    label_vocabulary,
    same_detail,
)
from services.data.splits import hash_rows
from services.data.stats import Moments
from shared.errors import invalid

MEMBERS = ("x.npy", "y.npy")
LABEL = "y"


@dataclass(frozen=True)
class _ArrayHeader:
    shape: tuple[int, ...]
    dtype: np.dtype


class NpzSource:
    def __init__(
        self, path: Path, label_column: str, block_bytes: int, max_categories: int
    ) -> None:
        if label_column not in ("", LABEL):
            raise invalid(
                "header.label_column", "an NPZ's labels are its array y: leave it empty or 'y'"
            )
        self._path = path
        self._max_categories = max_categories
        with self._archive() as archive:
            found = sorted(archive.namelist())
            if found != sorted(MEMBERS):
                raise invalid(
                    "chunk", f"an NPZ upload holds exactly the arrays x and y; found {found}"
                )
            with archive.open("x.npy") as stream:
                self._x = _read_header(stream, "x")
            with archive.open("y.npy") as stream:
                self._y = _read_header(stream, "y")
        self._check_arrays()
        self._rows = self._x.shape[0]
        self._channels = self._x.shape[-1]
        # Chunks are sized for x as float64, the widest form it takes in memory.
        self._chunk_rows = max(1, block_bytes // (8 * int(np.prod(self._x.shape[1:]))))

    def _check_arrays(self) -> None:
        x, y = self._x, self._y
        if x.dtype.kind not in "biuf":
            raise invalid("chunk", f"x must hold numbers, not {x.dtype}")
        if len(x.shape) < 2 or 0 in x.shape[1:]:
            raise invalid("chunk", f"x must be examples x features (2 or more axes), got {x.shape}")
        if y.dtype.kind not in "biufU":
            raise invalid("chunk", f"y must hold numbers or text labels, not {y.dtype}")
        if len(y.shape) != 1:
            raise invalid("chunk", f"y must be one label per example (1 axis), got {y.shape}")
        if x.shape[0] != y.shape[0]:
            raise invalid(
                "chunk", f"x and y differ in length: x has {x.shape[0]} rows, y has {y.shape[0]}"
            )
        if x.shape[0] == 0:
            raise invalid("chunk", "x and y hold no rows")

    @contextmanager
    def _archive(self) -> Iterator[zipfile.ZipFile]:
        try:
            with zipfile.ZipFile(self._path) as archive:
                yield archive
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise invalid("chunk", f"not a readable NPZ (zip) archive: {error}") from None

    def _chunks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first row, x rows, y rows), `chunk_rows` at a time."""
        with (
            self._archive() as archive,
            archive.open("x.npy") as x_stream,
            archive.open("y.npy") as y_stream,
        ):
            _read_header(x_stream, "x")
            _read_header(y_stream, "y")
            for first in range(0, self._rows, self._chunk_rows):
                count = min(self._chunk_rows, self._rows - first)
                yield (
                    first,
                    _read_rows(x_stream, self._x, count),
                    _read_rows(y_stream, self._y, count),
                )

    def infer(self, reference: Schema | None) -> Inference:
        feature_shape = list(self._x.shape[1:])
        if reference is not None and reference.feature_shape != feature_shape:
            raise invalid(
                "header.reference_version",
                f"the reference's examples have shape {reference.feature_shape}; "
                f"this x's have {feature_shape}",
            )
        moments = Moments(self._channels)
        missing = np.zeros(self._channels, dtype=np.int64)
        infinite = np.zeros(self._channels, dtype=np.int64)
        labels: Counter[str] = Counter()
        for _, x, y in self._chunks():
            values = x.astype(np.float64).reshape(-1, self._channels)
            moments.add(values)
            missing += np.isnan(values).sum(axis=0)
            infinite += np.isinf(values).sum(axis=0)
            labels.update(text for text in _label_strings(y) if text is not None)
            check_label_counts(labels, self._max_categories)
        kind = FeatureKind.INT if self._x.dtype.kind in "biu" else FeatureKind.FLOAT
        statistics = [
            FeatureStatistics(
                name=_channel_name(c),
                kind=kind,
                count=int(moments.count[c]),
                missing=int(missing[c]),
                invalid=int(infinite[c]),
                mean=float(moments.mean[c]) if moments.count[c] else None,
                std=float(moments.std[c]) if moments.count[c] else None,
                min=finite_or_none(moments.min[c]),
                max=finite_or_none(moments.max[c]),
            )
            for c in range(self._channels)
        ]
        schema = reference or Schema(
            features=[
                FeatureSchema(name=s.name, kind=s.kind, min=s.min, max=s.max) for s in statistics
            ],
            feature_shape=feature_shape,
            label=LABEL,
            label_vocabulary=label_vocabulary(labels, self._max_categories),
        )
        return Inference(schema, self._rows, statistics)

    def encode(self, schema: Schema) -> Iterator[EncodedChunk]:
        codes = {label: i for i, label in enumerate(schema.label_vocabulary)}
        for first, x, y in self._chunks():
            values = x.astype(np.float64)
            texts = _label_strings(y)
            labels = np.array(
                [-1 if text is None else codes.get(text, -1) for text in texts], dtype=np.int64
            )
            problems = _feature_problems(values.reshape(len(x), -1, self._channels), schema)
            problems += _label_problems(texts, labels)
            yield EncodedChunk(
                first_row=first,
                features=np.where(np.isfinite(values), values, np.nan),
                labels=labels,
                row_hashes=hash_rows(
                    row.tobytes() + (text or "").encode()
                    for row, text in zip(x, texts, strict=True)
                ),
                problems=problems,
            )


def _feature_problems(values: np.ndarray, schema: Schema) -> list[Problem]:
    """Anomalies of a (rows, positions, channels) chunk of x."""
    problems = []
    for kind, mask, detail in (
        (AnomalyKind.MISSING_VALUE, np.isnan(values), "x holds NaN"),
        (AnomalyKind.NOT_FINITE, np.isinf(values), "x holds an infinite value"),
    ):
        rows = np.flatnonzero(mask.any(axis=(1, 2)))
        if rows.size:
            problems.append(Problem(kind, "x", rows, same_detail(detail)))
    for channel, feature in enumerate(schema.features):
        if feature.min is None or feature.max is None:
            continue
        present = values[:, :, channel]
        outside = np.isfinite(present) & ((present < feature.min) | (present > feature.max))
        rows = np.flatnonzero(outside.any(axis=1))
        if rows.size:
            detail = f"values outside the schema's range [{feature.min:g}, {feature.max:g}]"
            problems.append(
                Problem(AnomalyKind.OUT_OF_RANGE, feature.name, rows, same_detail(detail))
            )
    return problems


def _label_problems(texts: list[str | None], labels: np.ndarray) -> list[Problem]:
    missing = np.array([text is None for text in texts], dtype=bool)
    problems = []
    if missing.any():
        problems.append(
            Problem(
                AnomalyKind.MISSING_LABEL,
                LABEL,
                np.flatnonzero(missing),
                same_detail("missing label"),
            )
        )
    unknown = np.flatnonzero((labels < 0) & ~missing)
    if unknown.size:
        problems.append(
            Problem(
                AnomalyKind.UNKNOWN_LABEL,
                LABEL,
                unknown,
                lambda i: f"{texts[i]!r} is not in the schema's label set",
            )
        )
    return problems


def _channel_name(channel: int) -> str:
    return f"x[..., {channel}]"


def _label_strings(y: np.ndarray) -> list[str | None]:
    """Each label as text (the vocabulary's form), None where it is missing (NaN, empty)."""
    texts: list[str | None] = []
    for value in y.tolist():
        text = str(value).strip()
        texts.append(None if text in ("", "nan") else text)
    return texts


def _read_header(stream: IO[bytes], name: str) -> _ArrayHeader:
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as error:
        raise invalid("chunk", f"{name} is not a readable .npy array: {error}") from None
    if dtype.hasobject:
        raise invalid("chunk", f"{name} holds Python objects; only numbers and text are accepted")
    if fortran_order and len(shape) > 1:
        raise invalid("chunk", f"{name} is stored in Fortran order; save it C-contiguous")
    return _ArrayHeader(tuple(shape), dtype)


def _read_rows(stream: IO[bytes], header: _ArrayHeader, rows: int) -> np.ndarray:
    row_shape = header.shape[1:]
    size = rows * int(np.prod(row_shape, dtype=np.int64)) * header.dtype.itemsize
    data = stream.read(size)
    if len(data) != size:
        raise invalid("chunk", "the NPZ archive is truncated")
    return np.frombuffer(data, dtype=header.dtype).reshape((rows, *row_shape))
