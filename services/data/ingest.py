"""One upload's way from its stored source file to shards, Parquet files, statistics and
anomalies.

The first pass (`Source.infer`) fixes the schema; the second encodes the rows chunk by
chunk, collects anomalies, assigns each row its split by hash, counts histograms and
labels, accumulates the train split's normalization statistics and streams the kept rows
into each split's shard and Parquet writers. Memory stays bounded by the chunk size and
one file's rows per split and format. When the bad rows are more than the upload's
policy allows, ingest raises InvalidArgument; the caller discards whatever files were
already written."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from services.data.entities import (
    SPLITS,
    Anomaly,
    AnomalyKind,
    AnomalyReport,
    DataFormat,
    FeatureKind,
    FeatureStatistics,
    Histogram,
    LabelCount,
    Normalization,
    ParquetFile,
    RowCounts,
    Schema,
    ShardInfo,
    Split,
    SplitRatios,
    Statistics,
)
from services.data.npz_source import NpzSource
from services.data.parquet_files import ParquetFiles
from services.data.shards import BlobSink, SplitWriter, record_dtype
from services.data.sources import EncodedChunk, Inference, Source
from services.data.splits import assign_splits
from services.data.stats import Histograms, Moments
from services.data.table_files import open_table
from services.data.table_source import TableSource
from shared.errors import DataLoss, FieldViolation, InvalidArgument, invalid

ANOMALIES_IN_ERRORS = 10
# Chunks waiting for the shard thread, and shard files (16 MiB each by default) waiting
# for the Parquet thread: what the writes may hold in memory beyond the one being written.
MAX_PENDING_CHUNKS = 8
MAX_PENDING_FILES = 2


@dataclass(frozen=True)
class IngestLimits:
    parse_block_bytes: int = 1024 * 1024
    shard_bytes: int = 16 * 1024 * 1024
    max_categories: int = 1000
    histogram_bins: int = 10
    max_anomaly_examples: int = 100


@dataclass(frozen=True)
class IngestResult:
    schema: Schema
    rows: RowCounts
    anomalies: AnomalyReport
    statistics: Statistics
    shards: list[ShardInfo]
    parquet_files: list[ParquetFile]


class _SplitWriters:
    """Each split's kept rows as .npy shards and as Parquet files of the same rows. The
    shards are written on a thread of their own, and each shard's Parquet file on
    another (numpy, Arrow, hashing and file writes let the parsing go on meanwhile),
    at most `MAX_PENDING_CHUNKS` and `MAX_PENDING_FILES` behind."""

    def __init__(self, sink: BlobSink, schema: Schema, shard_bytes: int) -> None:
        dtype = record_dtype(schema.feature_shape)
        self._parquet = [ParquetFiles(sink, split, schema) for split in SPLITS]
        self._writers = [
            SplitWriter(sink, split, dtype, shard_bytes, partial(self._write_parquet, parquet))
            for split, parquet in zip(SPLITS, self._parquet, strict=True)
        ]
        self._shard_pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-shards")
        self._parquet_pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-parquet")
        self._shard_writes: deque[Future[None]] = deque()
        self._parquet_writes: deque[Future[None]] = deque()

    def add(self, split_index: int, features: np.ndarray, labels: np.ndarray) -> None:
        writer = self._writers[split_index]
        pending = self._shard_writes
        _submit(self._shard_pool, pending, MAX_PENDING_CHUNKS, writer.add, features, labels)

    def _write_parquet(self, parquet: ParquetFiles, records: np.ndarray, index: int) -> None:
        pending = self._parquet_writes
        _submit(self._parquet_pool, pending, MAX_PENDING_FILES, parquet.write, records, index)

    def stop(self) -> None:
        """Wait for the writes under way and drop the queued ones (always called)."""
        self._shard_pool.shutdown(wait=True, cancel_futures=True)
        self._parquet_pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> tuple[list[ShardInfo], list[ParquetFile]]:
        _drain(self._shard_writes)
        shards = [shard for writer in self._writers for shard in writer.close()]
        _drain(self._parquet_writes)
        files = [file for parquet in self._parquet for file in parquet.files]
        if [(s.split, s.index, s.rows) for s in shards] != [
            (f.split, f.index, f.rows) for f in files
        ]:
            raise DataLoss("the Parquet files do not hold the shards' rows")
        return shards, files


def _submit(
    pool: ThreadPoolExecutor,
    pending: deque[Future[None]],
    most: int,
    write: Callable[..., None],
    *args: object,
) -> None:
    pending.append(pool.submit(write, *args))
    while len(pending) > most:
        pending.popleft().result()


def _drain(pending: deque[Future[None]]) -> None:
    while pending:
        pending.popleft().result()


def open_source(
    data_format: DataFormat, path: Path, label_column: str, limits: IngestLimits, spill_dir: Path
) -> Source:
    """The upload at `path` as a source; a tabular one sets batches aside in `spill_dir`."""
    if not data_format.tabular:
        return NpzSource(path, label_column, limits.parse_block_bytes, limits.max_categories)
    table = open_table(data_format, path, limits.parse_block_bytes, label_column)
    return TableSource(table, label_column, limits.max_categories, spill_dir)


def check_bad_rows(
    bad_rows: int, total_rows: int, max_fraction: float, examples: list[Anomaly]
) -> None:
    """The bad-row policy: InvalidArgument, with the first anomalies, above `max_fraction`."""
    if bad_rows / total_rows <= max_fraction:
        return
    summary = FieldViolation(
        "header.max_bad_row_fraction",
        f"{bad_rows} of {total_rows} rows ({bad_rows / total_rows:.1%}) are bad, more than "
        f"the {max_fraction:.1%} allowed; nothing was stored",
    )
    raise InvalidArgument(
        [summary]
        + [
            FieldViolation("chunk", f"row {a.row}, column {a.column!r}: {a.detail}")
            for a in examples[:ANOMALIES_IN_ERRORS]
        ]
    )


class _AnomalyLog:
    """Exact anomaly counts, and the first anomalies found as examples."""

    def __init__(self, max_examples: int) -> None:
        self._max_examples = max_examples
        self.counts: Counter[AnomalyKind] = Counter()
        self.examples: list[Anomaly] = []
        self.bad_rows = 0

    def add(self, chunk: EncodedChunk) -> np.ndarray:
        """Record the chunk's anomalies; returns which of its rows are bad."""
        bad = np.zeros(len(chunk.labels), dtype=bool)
        found: list[Anomaly] = []
        for problem in chunk.problems:
            bad[problem.rows] = True
            self.counts[problem.kind] += len(problem.rows)
            room = max(self._max_examples - len(self.examples) - len(found), 0)
            found += [
                Anomaly(
                    row=chunk.first_row + int(i),
                    column=problem.column,
                    kind=problem.kind,
                    detail=problem.describe(int(i)),
                )
                for i in problem.rows[:room]
            ]
        self.examples += sorted(found, key=lambda anomaly: (anomaly.row, anomaly.column))
        self.bad_rows += int(bad.sum())
        return bad

    def report(self) -> AnomalyReport:
        return AnomalyReport(
            bad_rows=self.bad_rows, counts=dict(self.counts), examples=self.examples
        )


def _histogram_range(statistics: FeatureStatistics) -> tuple[float, float] | None:
    if statistics.kind is FeatureKind.CATEGORICAL or statistics.min is None:
        return None
    assert statistics.max is not None
    return (statistics.min, statistics.max)


def ingest(
    source: Source,
    ratios: SplitRatios,
    max_bad_row_fraction: float,
    reference: Schema | None,
    limits: IngestLimits,
    sink: BlobSink,
) -> IngestResult:
    inference = source.infer(reference)
    schema = inference.schema
    channels = schema.feature_shape[-1]
    classes = len(schema.label_vocabulary)
    histograms = Histograms(
        [_histogram_range(s) for s in inference.statistics], limits.histogram_bins
    )
    normalization = Moments(channels)
    # Row 0: all rows of the upload with a valid label; then the kept rows per split.
    label_counts = np.zeros((1 + len(SPLITS), classes), dtype=np.int64)
    log = _AnomalyLog(limits.max_anomaly_examples)
    writers = _SplitWriters(sink, schema, limits.shard_bytes)
    try:
        for chunk in source.encode(schema):
            kept = ~log.add(chunk)
            splits = assign_splits(chunk.row_hashes, ratios)
            histograms.add(chunk.features.reshape(-1, channels))
            labelled = chunk.labels[chunk.labels >= 0]
            label_counts[0] += np.bincount(labelled, minlength=classes)
            for index, split in enumerate(SPLITS):
                rows = kept & (splits == index)
                writers.add(index, chunk.features[rows], chunk.labels[rows])
                label_counts[index + 1] += np.bincount(chunk.labels[rows], minlength=classes)
                if split is Split.TRAIN:
                    normalization.add(chunk.features[rows].reshape(-1, channels))
        total = inference.total_rows
        check_bad_rows(log.bad_rows, total, max_bad_row_fraction, log.examples)
        if log.bad_rows == total:
            raise invalid("chunk", f"all {total} rows are bad; nothing was stored")
        shards, parquet_files = writers.close()
    finally:
        writers.stop()
    per_split = label_counts[1:].sum(axis=1)
    rows = RowCounts(
        total=total,
        kept=total - log.bad_rows,
        dropped=log.bad_rows,
        train=int(per_split[0]),
        validation=int(per_split[1]),
        test=int(per_split[2]),
    )
    statistics = _statistics(inference, histograms, label_counts, normalization, rows)
    return IngestResult(schema, rows, log.report(), statistics, shards, parquet_files)


def _statistics(
    inference: Inference,
    histograms: Histograms,
    label_counts: np.ndarray,
    normalization: Moments,
    rows: RowCounts,
) -> Statistics:
    """The version's statistics: each feature's with its histogram, the label counts of
    the upload and of each split, and the train split's normalization."""
    features = [
        statistics.model_copy(
            update={"histogram": Histogram(edges=edges.tolist(), counts=counts.tolist())}
        )
        if edges is not None
        else statistics
        for statistics, edges, counts in zip(
            inference.statistics, histograms.edges, histograms.counts, strict=True
        )
    ]
    labels = [
        LabelCount(
            label=label,
            index=i,
            count=int(label_counts[0, i]),
            train=int(label_counts[1, i]),
            validation=int(label_counts[2, i]),
            test=int(label_counts[3, i]),
        )
        for i, label in enumerate(inference.schema.label_vocabulary)
    ]
    return Statistics(
        features=features,
        labels=labels,
        normalization=Normalization(
            mean=normalization.mean.tolist(), std=normalization.std.tolist(), rows=rows.train
        ),
    )
