"""Shard files: a split's stored rows as .npy files of fixed-length records.

A record is the structured dtype [("x", "<f4", feature_shape), ("y", "<i8")], packed,
so a shard is an npy header followed by raw little-endian records: `numpy.load` reads it
as is, and tf.data reads it with `FixedLengthRecordDataset` (header_bytes, record_bytes)
with no Python in the loop. Shards hold a fixed number of rows (the last one of a split
fewer), so the same rows always make the same shard files, whatever the parse blocks."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import numpy as np

from services.data.entities import ShardInfo, Split
from shared.errors import DataLoss

FEATURES = "x"
LABELS = "y"


def record_dtype(feature_shape: list[int]) -> np.dtype:
    return np.dtype([(FEATURES, "<f4", tuple(feature_shape)), (LABELS, "<i8")])


class BlobSink(Protocol):
    def put(self, parts: Iterable[bytes | memoryview]) -> tuple[str, int]:
        """Store the concatenated parts as one blob; returns its sha256 and size."""
        ...


class SplitWriter:
    """Buffers one split's rows as records, at most one file's worth, and writes each
    `rows_per_file` of them (the last ones, fewer, at `close`) as a shard, then hands
    them to `on_file` (the split's Parquet files), so both formats hold the same rows per
    file."""

    def __init__(
        self,
        sink: BlobSink,
        split: Split,
        dtype: np.dtype,
        shard_bytes: int,
        on_file: Callable[[np.ndarray, int], None],
    ) -> None:
        self._sink = sink
        self._split = split
        self._dtype = dtype
        self._on_file = on_file
        self.rows_per_file = max(1, shard_bytes // dtype.itemsize)
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self.shards: list[ShardInfo] = []

    def add(self, features: np.ndarray, labels: np.ndarray) -> None:
        if not len(labels):
            return
        records = np.empty(len(labels), dtype=self._dtype)
        records[FEATURES] = features
        records[LABELS] = labels
        self._pending.append(records)
        self._pending_rows += len(records)
        while self._pending_rows >= self.rows_per_file:
            joined = np.concatenate(self._pending)
            self._write(joined[: self.rows_per_file])
            rest = joined[self.rows_per_file :]
            self._pending = [rest] if len(rest) else []
            self._pending_rows = len(rest)

    def close(self) -> list[ShardInfo]:
        if self._pending_rows:
            self._write(np.concatenate(self._pending))
            self._pending, self._pending_rows = [], 0
        return self.shards

    def _write(self, records: np.ndarray) -> None:
        index = len(self.shards)
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, np.lib.format.header_data_from_array_1_0(records)
        )
        digest, size = self._sink.put([header.getvalue(), records.tobytes()])
        self.shards.append(
            ShardInfo(
                split=self._split,
                index=index,
                sha256=digest,
                rows=len(records),
                size_bytes=size,
                header_bytes=len(header.getvalue()),
            )
        )
        self._on_file(records, index)


def read_records(
    content: Iterable[bytes], header_bytes: int, dtype: np.dtype
) -> Iterator[np.ndarray]:
    """The records of a shard whose content arrives in chunks of any size."""
    to_skip = header_bytes
    remainder = b""
    for chunk in content:
        if to_skip:
            skipped = min(to_skip, len(chunk))
            chunk = chunk[skipped:]
            to_skip -= skipped
        data = remainder + chunk
        whole = len(data) - len(data) % dtype.itemsize
        if whole:
            yield np.frombuffer(data[:whole], dtype=dtype)
        remainder = data[whole:]
    if remainder or to_skip:
        raise DataLoss("a shard ends inside a record")


def rebatch(records: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """The same records regrouped into batches of `batch_size` (the last one shorter)."""
    pending: list[np.ndarray] = []
    pending_rows = 0
    for chunk in records:
        pending.append(chunk)
        pending_rows += len(chunk)
        if pending_rows < batch_size:
            continue
        joined = np.concatenate(pending)
        full = len(joined) - len(joined) % batch_size
        for start in range(0, full, batch_size):
            yield joined[start : start + batch_size]
        rest = joined[full:]
        pending, pending_rows = ([rest], len(rest)) if len(rest) else ([], 0)
    if pending_rows:
        yield np.concatenate(pending)
