"""Tabular uploads (CSV, Parquet, JSON Lines) read as Apache Arrow record batches.

Each file type opens with its column names checked and yields record batches of every
column in order, in bounded memory, as often as `batches()` is called. CSV is read by
pyarrow's streaming reader with every column as text (the source decides what is a
number, so a bad value is a row's anomaly, not the file's), quoted newlines allowed, the
byte order mark skipped, each row within one parse block. The bytes Arrow reads pass
through a check that they are UTF-8 (naming the byte offset of the first that is not)
and that the quotes balance. A row with the wrong number of fields fails the upload,
naming up to ten such rows. Parquet and JSON Lines keep the types their files declare or
Arrow infers (JSON Lines widened, see `JsonLinesTable`); JSON Lines whose column changes
type between rows, or a line that is not a JSON object, fail the upload with Arrow's
message. A file that Arrow cannot read is INVALID_ARGUMENT, never a server error."""

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
# Parquet bytes read at a time from a column chunk.
PARQUET_BUFFER_BYTES = 1024 * 1024
# Batches read ahead on a thread of their own while the source works on the last one.
READ_AHEAD = 2

T = TypeVar("T")


class TableFile(Protocol):
    # What the file is, as messages name it: "CSV", "Parquet", "JSON Lines".
    kind: str
    # Whether the reader has checked that its text columns hold UTF-8.
    text_checked: bool
    columns: list[str]

    def batches(self) -> Iterator[pa.RecordBatch]: ...


def open_table(
    data_format: DataFormat, path: Path, block_bytes: int, label_column: str
) -> TableFile:
    if data_format is DataFormat.CSV:
        return CsvTable(path, block_bytes)
    if data_format is DataFormat.PARQUET:
        return ParquetTable(path, block_bytes)
    return JsonLinesTable(path, block_bytes, label_column)


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
        # Bytes the decoder holds from the last read (a character cut in two) come first.
        held = len(self._decoder.getstate()[0])
        try:
            self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as error:
            where = self._offset - held + error.start
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
    text_checked = True

    def __init__(self, path: Path, block_bytes: int) -> None:
        self._path = path
        self._block_bytes = block_bytes
        # Only the names are wanted here: rows Arrow reads to type the columns are skipped
        # when ragged (the batches report them).
        header, reads = self._open(pa_csv.ConvertOptions(), lambda _row: "skip")
        try:
            self._names = header.schema.names
        except UnicodeDecodeError:
            raise invalid("chunk", "the CSV header is not UTF-8 text") from None
        finally:
            header.close()
            reads.close()
        self.columns = check_columns("CSV", self._names)

    def batches(self) -> Iterator[pa.RecordBatch]:
        ragged: list[pa_csv.InvalidRow] = []

        def on_ragged(row: pa_csv.InvalidRow) -> str:
            ragged.append(row)
            return "skip"

        convert = pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in self._names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        reader, reads = self._open(convert, on_ragged)
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as error:
                    raise reads.problem or self._unreadable(error) from None
                # Text cut short by a problem reads as a ragged row: the problem first.
                if reads.problem is not None:
                    raise reads.problem
                _check_ragged(ragged, len(self.columns))
                yield batch
            if reads.problem is not None:
                raise reads.problem
            _check_ragged(ragged, len(self.columns))
        finally:
            reader.close()
            reads.close()

    def _open(
        self,
        convert: pa_csv.ConvertOptions,
        on_ragged: Callable[[pa_csv.InvalidRow], str],
    ) -> tuple[pa_csv.CSVStreamingReader, _CheckedReads]:
        reads = _CheckedReads(self._path)
        try:
            reader = pa_csv.open_csv(
                reads,
                # One thread: Arrow then numbers the rows it rejects. read_ahead overlaps
                # the reading with the source's work instead.
                read_options=pa_csv.ReadOptions(use_threads=False, block_size=self._block_bytes),
                parse_options=pa_csv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=on_ragged
                ),
                convert_options=convert,
            )
        except pa.ArrowInvalid as error:
            reads.close()
            if reads.problem is not None:
                raise reads.problem from None
            if "Empty CSV file" in str(error):
                raise invalid(
                    "chunk", "the CSV is empty: it needs a header row and data rows"
                ) from None
            raise self._unreadable(error) from None
        except BaseException:
            reads.close()
            raise
        return reader, reads

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
    """A Parquet file: its columns as the file types them, read in batches of about
    `block_bytes` of numbers, a page at a time rather than a column chunk at a time."""

    kind = "Parquet"
    text_checked = False

    def __init__(self, path: Path, block_bytes: int) -> None:
        self._path = path
        file = self._open()
        try:
            names = file.schema_arrow.names
        except UnicodeDecodeError:
            raise invalid("chunk", "the Parquet file's column names are not UTF-8") from None
        except (pa.ArrowException, OSError) as error:
            raise _unreadable("Parquet", error) from None
        finally:
            file.close()
        self.columns = check_columns("Parquet", names)
        self._batch_rows = max(1, block_bytes // (8 * len(names)))

    def _open(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self._path, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
        except UnicodeDecodeError:
            raise invalid("chunk", "the Parquet file's column names are not UTF-8") from None
        except (pa.ArrowException, OSError) as error:
            raise _unreadable("Parquet", error) from None

    def batches(self) -> Iterator[pa.RecordBatch]:
        file = self._open()
        try:
            yield from file.iter_batches(batch_size=self._batch_rows)
        except (pa.ArrowException, OSError) as error:
            raise _unreadable("Parquet", error) from None
        finally:
            file.close()


class JsonLinesTable:
    """A JSON Lines file: one JSON object per line, its keys the columns. The types Arrow
    infers from the first block are widened (a feature's whole numbers and nulls to
    float64, dates and times to text) and held for the whole file, so a feature may hold
    whole numbers first and fractions later, or nulls first; the label keeps its type
    (whole-number classes keep their exact text). A key the first block lacks, or a
    column whose JSON type changes, fails the upload."""

    kind = "JSON Lines"
    text_checked = False

    def __init__(self, path: Path, block_bytes: int, label_column: str) -> None:
        self._path = path
        self._block_bytes = block_bytes
        reader = self._open(None)
        try:
            inferred = reader.schema
            names = inferred.names
        except UnicodeDecodeError:
            raise invalid("chunk", "the JSON Lines keys are not UTF-8 text") from None
        finally:
            reader.close()
        self.columns = check_columns("JSON Lines", names)
        self._schema = pa.schema(
            [
                pa.field(f.name, f.type if f.name == label_column else _widened(f.type))
                for f in inferred
            ]
        )

    def _open(self, schema: pa.Schema | None) -> pa_json.JSONStreamingReader:
        parse = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        try:
            return pa_json.open_json(
                self._path,
                read_options=pa_json.ReadOptions(block_size=self._block_bytes),
                parse_options=parse,
            )
        except pa.ArrowInvalid as error:
            if "Empty JSON" in str(error):
                raise invalid("chunk", "the JSON Lines file is empty: it needs rows") from None
            raise _unreadable("JSON Lines", error) from None

    def batches(self) -> Iterator[pa.RecordBatch]:
        reader = self._open(self._schema)
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


def _widened(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_integer(kind) or pa.types.is_null(kind):
        return pa.float64()
    if pa.types.is_temporal(kind):
        return pa.string()
    return kind


def _unreadable(kind: str, error: Exception) -> InvalidArgument:
    return invalid("chunk", f"unreadable {kind}: {error}")
