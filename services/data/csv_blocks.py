"""A CSV file read as blocks of whole records, in bounded memory.

A block is about `block_bytes` of the file, extended to the end of a line and, while it
holds an odd number of quote characters, to the end of the quoted field (RFC 4180
doubles quotes inside fields, so the parity tells whether a newline is quoted). Blocks
without quotes or carriage returns are split with two `str` calls, several times faster
than `csv.reader`, after checking that every line has the header's number of fields;
any other block goes through `csv.reader`, which also names the rows that have the wrong
number of fields. Each row's key (its fields joined by commas) feeds the split hash."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.errors import FieldViolation, InvalidArgument, invalid

MAX_RAGGED_ROWS_REPORTED = 10


@dataclass(frozen=True)
class CsvBlock:
    first_row: int
    # One list of raw field values per column, in header order.
    columns: list[list[str]]
    keys: list[str]

    @property
    def rows(self) -> int:
        return len(self.keys)


class CsvFile:
    """The header and the data blocks of one CSV file; `blocks()` may be iterated again."""

    def __init__(self, path: Path, block_bytes: int, max_block_bytes: int) -> None:
        self._path = path
        self._block_bytes = block_bytes
        self._max_block_bytes = max_block_bytes
        with path.open("rb") as handle:
            raw = self._read_records(handle, b"")
            self._data_offset = handle.tell()
        if not raw.strip():
            raise invalid("chunk", "the CSV is empty: it needs a header row and data rows")
        text = _decode(raw, 0, encoding="utf-8-sig")
        header = next(csv.reader(io.StringIO(text, newline="")), [])
        self.columns = [name.strip() for name in header]
        if len(self.columns) < 2:
            raise invalid("chunk", "the CSV header needs at least one feature and the label column")
        if "" in self.columns:
            raise invalid("chunk", f"the CSV header has an empty column name: {header}")
        duplicates = sorted({name for name in self.columns if self.columns.count(name) > 1})
        if duplicates:
            raise invalid("chunk", f"the CSV header repeats column names {duplicates}")

    def blocks(self) -> Iterator[CsvBlock]:
        first_row = 0
        offset = self._data_offset
        with self._path.open("rb") as handle:
            handle.seek(offset)
            while raw := handle.read(self._block_bytes):
                raw = self._read_records(handle, raw)
                block = self._split(_decode(raw, offset), first_row)
                offset += len(raw)
                first_row += block.rows
                if block.rows:
                    yield block

    def _read_records(self, handle: io.BufferedReader, raw: bytes) -> bytes:
        """`raw` extended to the end of its last record (a line, or a quoted field's end)."""
        if not raw.endswith(b"\n"):
            raw += handle.readline()
        inside_quotes = raw.count(b'"') % 2 == 1
        while inside_quotes:
            line = handle.readline()
            if not line:
                raise invalid("chunk", "the CSV ends inside a quoted field (unbalanced '\"')")
            raw += line
            inside_quotes ^= line.count(b'"') % 2 == 1
            if len(raw) > self._max_block_bytes:
                raise invalid(
                    "chunk",
                    f"a quoted CSV field spans more than {self._max_block_bytes} bytes "
                    "(unbalanced '\"'?)",
                )
        return raw

    def _split(self, text: str, first_row: int) -> CsvBlock:
        width = len(self.columns)
        if '"' not in text and "\r" not in text:
            body = text.removesuffix("\n")
            lines = body.split("\n")
            separators = width - 1
            if all(line.count(",") == separators for line in lines):
                fields = body.replace("\n", ",").split(",")
                return CsvBlock(first_row, [fields[j::width] for j in range(width)], lines)
        try:
            rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
        except csv.Error as error:
            raise invalid("chunk", f"unreadable CSV after row {first_row}: {error}") from None
        ragged = [(first_row + i, len(row)) for i, row in enumerate(rows) if len(row) != width]
        if ragged:
            raise InvalidArgument(
                [
                    FieldViolation("chunk", f"row {row} has {count} fields, the header has {width}")
                    for row, count in ragged[:MAX_RAGGED_ROWS_REPORTED]
                ]
            )
        columns = [list(values) for values in zip(*rows, strict=True)] if rows else []
        return CsvBlock(
            first_row, columns or [[] for _ in range(width)], [",".join(r) for r in rows]
        )


def _decode(raw: bytes, offset: int, encoding: str = "utf-8") -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as error:
        raise invalid(
            "chunk", f"the CSV is not UTF-8 text: {error.reason} at byte {offset + error.start}"
        ) from None
