"""Tabular uploads (CSV, Parquet, JSON Lines) read as Apache Arrow record batches.

Each file type opens with its column names checked and yields record batches of every
column in order, in bounded memory, as often as `batches()` is called. CSV is read by
pyarrow's streaming reader with every column as text (the source decides what is a
number, so a bad value is a row's anomaly, not the file's), quoted newlines allowed, the
byte order mark skipped, each row within one parse block. The bytes Arrow reads pass
through a check that they are UTF-8 (naming the byte offset of the first that is not)
and that the quotes balance. A row with the wrong number of fields fails the upload,
naming up to ten such rows. Parquet and JSON Lines keep the types their files declare or
Arrow infers; JSON Lines whose column changes type between rows, or a line that is not a
JSON object, fail the upload with Arrow's message. A file that Arrow cannot read is
INVALID_ARGUMENT, never a server error."""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from services.data.entities import DataFormat
from shared.errors import FieldViolation, InvalidArgument, invalid

MAX_RAGGED_ROWS_REPORTED = 10
PARQUET_BATCH_ROWS = 64 * 1024
# Batches read ahead on a thread of their own while the source works on the last one.
READ_AHEAD = 2

T = TypeVar("T")


class TableFile(Protocol):
    # What the file is, as messages name it: "CSV", "Parquet", "JSON Lines".
    kind: str
    columns: list[str]

    def batches(self) -> Iterator[pa.RecordBatch]: ...


def open_table(data_format: DataFormat, path: Path, block_bytes: int) -> TableFile:
    if data_format is DataFormat.CSV:
        return CsvTable(path, block_bytes)
    if data_format is DataFormat.PARQUET:
        return ParquetTable(path)
    return JsonLinesTable(path, block_bytes)


def read_ahead(items: Iterator[T], depth: int = READ_AHEAD) -> Iterator[T]:
    """`items`, produced on another thread up to `depth` ahead of the consumer."""
    end = object()
    with ThreadPoolExecutor(1, thread_name_prefix="table-read") as pool:
        pending: deque[Future[object]] = deque(pool.submit(next, items, end) for _ in range(depth))
        while (item := pending.popleft().result()) is not end:
            pending.append(pool.submit(next, items, end))
            yield item  # type: ignore[misc]


def check_columns(kind: str, names: list[str]) -> list[str]:
    """The column names, stripped; INVALID_ARGUMENT when they cannot name features."""
    columns = [name.strip() for name in names]
    if len(columns) < 2:
        raise invalid("chunk", f"the {kind} header needs at least one feature and the label column")
    if "" in columns:
        raise invalid("chunk", f"the {kind} header has an empty column name: {names}")
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise invalid("chunk", f"the {kind} header repeats column names {duplicates}")
    return columns


class _CheckedReads:
    """The file object Arrow reads a CSV through: counts quotes, checks UTF-8."""

    def __init__(self, path: Path) -> None:
        self._handle = path.open("rb")
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._offset = 0
        self._quotes = 0
        self.closed = False
        self.problem: InvalidArgument | None = None

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        if self.problem is not None:
            return b""
        try:
            self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as error:
            where = self._offset + error.start
            self.problem = invalid(
                "chunk", f"the CSV is not UTF-8 text: {error.reason} at byte {where}"
            )
            return b""
        self._offset += len(data)
        self._quotes += data.count(b'"')
        if not data and self._quotes % 2:
            self.problem = invalid("chunk", "the CSV ends inside a quoted field (unbalanced '\"')")
        return data

    def close(self) -> None:
        self._handle.close()
        self.closed = True


class CsvTable:
    """A CSV file with a header row."""

    kind = "CSV"

    def __init__(self, path: Path, block_bytes: int) -> None:
        self._path = path
        self._block_bytes = block_bytes
        # Only the names are wanted here: rows Arrow reads to type the columns are skipped
        # when ragged (the batches report them).
        header = self._read(pa_csv.ConvertOptions(), block_bytes, on_ragged=lambda _row: "skip")
        try:
            self._names = header.schema.names
        finally:
            header.close()
        self.columns = check_columns("CSV", self._names)

    def batches(self) -> Iterator[pa.RecordBatch]:
        ragged: list[pa_csv.InvalidRow] = []
        reads = _CheckedReads(self._path)

        def on_ragged(row: pa_csv.InvalidRow) -> str:
            ragged.append(row)
            return "skip"

        convert = pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in self._names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        reader = self._read(convert, self._block_bytes, reads, on_ragged)
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as error:
                    raise reads.problem or self._unreadable(error) from None
                _check_ragged(ragged, len(self.columns))
                yield batch
            if reads.problem is not None:
                raise reads.problem
            _check_ragged(ragged, len(self.columns))
        finally:
            reader.close()
            reads.close()

    def _read(
        self,
        convert: pa_csv.ConvertOptions,
        block_bytes: int,
        source: _CheckedReads | None = None,
        on_ragged: Callable[[pa_csv.InvalidRow], str] | None = None,
    ) -> pa_csv.CSVStreamingReader:
        try:
            return pa_csv.open_csv(
                source or self._path,
                # One thread: Arrow then numbers the rows it rejects. read_ahead overlaps
                # the reading with the source's work instead.
                read_options=pa_csv.ReadOptions(use_threads=False, block_size=block_bytes),
                parse_options=pa_csv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=on_ragged
                ),
                convert_options=convert,
            )
        except pa.ArrowInvalid as error:
            if source is not None and source.problem is not None:
                raise source.problem from None
            if "Empty CSV file" in str(error):
                raise invalid(
                    "chunk", "the CSV is empty: it needs a header row and data rows"
                ) from None
            raise self._unreadable(error) from None

    def _unreadable(self, error: pa.ArrowInvalid) -> InvalidArgument:
        if "straddles" in str(error):
            return invalid(
                "chunk",
                f"a CSV row is longer than the {self._block_bytes}-byte parse block "
                "(unbalanced '\"'? else raise the data service's parse_block_bytes)",
            )
        return _unreadable("CSV", error)


def _check_ragged(ragged: list[pa_csv.InvalidRow], width: int) -> None:
    if ragged:
        raise InvalidArgument(
            [
                # Arrow numbers the file's rows from 1, the header included.
                FieldViolation(
                    "chunk",
                    f"row {row.number - 2} has {row.actual_columns} fields, the header has {width}",
                )
                for row in ragged[:MAX_RAGGED_ROWS_REPORTED]
            ]
        )


class ParquetTable:
    """A Parquet file: its columns as the file types them."""

    kind = "Parquet"

    def __init__(self, path: Path) -> None:
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as error:
            raise _unreadable("Parquet", error) from None
        self.columns = check_columns("Parquet", self._file.schema_arrow.names)

    def batches(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._file.iter_batches(batch_size=PARQUET_BATCH_ROWS)
        except (pa.ArrowException, OSError) as error:
            raise _unreadable("Parquet", error) from None


class JsonLinesTable:
    """A JSON Lines file: one JSON object per line, its keys the columns."""

    kind = "JSON Lines"

    def __init__(self, path: Path, block_bytes: int) -> None:
        self._path = path
        self._block_bytes = block_bytes
        reader = self._open()
        try:
            self.columns = check_columns("JSON Lines", reader.schema.names)
        finally:
            reader.close()

    def _open(self) -> pa_json.JSONStreamingReader:
        try:
            return pa_json.open_json(
                self._path, read_options=pa_json.ReadOptions(block_size=self._block_bytes)
            )
        except pa.ArrowInvalid as error:
            if "Empty JSON" in str(error):
                raise invalid("chunk", "the JSON Lines file is empty: it needs rows") from None
            raise _unreadable("JSON Lines", error) from None

    def batches(self) -> Iterator[pa.RecordBatch]:
        reader = self._open()
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as error:
                    raise _unreadable("JSON Lines", error) from None
                yield batch
        finally:
            reader.close()


def _unreadable(kind: str, error: Exception) -> InvalidArgument:
    return invalid("chunk", f"unreadable {kind}: {error}")
