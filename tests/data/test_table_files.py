"""The table readers: a CSV read by Arrow holds the same rows as `csv.reader` whatever the
quoting, line endings or block boundaries; rows are numbered as the file has them; the
set-aside batches come back as written; reading ahead ends and fails as the reader does."""

from __future__ import annotations

import csv
import io

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.data.batch_spill import BatchSpill
from services.data.table_files import CsvTable, read_ahead
from shared.errors import InvalidArgument

BLOCK = 4096


def write(tmp_path, content: bytes):
    path = tmp_path / "upload.csv"
    path.write_bytes(content)
    return path


def rows_of(table: CsvTable) -> list[list[str]]:
    rows = []
    for batch in table.batches():
        assert batch.num_columns == len(table.columns)
        rows += [list(row.values()) for row in batch.to_pylist()]
    return rows


def as_csv(rows: list[list[str]], terminator: str = "\n") -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator=terminator).writerows(rows)
    return text.getvalue().encode()


field = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=40, deadline=None)
@given(table=st.lists(st.lists(field, min_size=3, max_size=3), min_size=1, max_size=300))
def test_batches_hold_the_same_rows_as_csv_reader(tmp_path_factory, table):
    # "\r\n" terminators make csv.writer quote fields holding either character.
    content = as_csv([["a", "b", "c"], *table], "\r\n")
    path = write(tmp_path_factory.mktemp("csv"), content)
    expected = [row for row in csv.reader(io.StringIO(content.decode(), newline="")) if row][1:]
    assert rows_of(CsvTable(path, BLOCK)) == expected


def test_quoted_newlines_and_commas_across_block_boundaries(tmp_path):
    long_field = "x" * 700 + '\nsecond line, with a comma and a "quote"\n' + "y" * 700
    table = [["id", "text", "label"]] + [[str(i), long_field, "a"] for i in range(20)]
    assert rows_of(CsvTable(write(tmp_path, as_csv(table)), BLOCK)) == table[1:]


def test_a_row_longer_than_the_parse_block_is_invalid_argument(tmp_path):
    long_field = "x" * 5 * BLOCK + "\n" + "y" * 10
    table = [["id", "text", "label"]] + [[str(i), long_field, "a"] for i in range(3)]
    with pytest.raises(InvalidArgument, match="longer than the 4096-byte parse block"):
        rows_of(CsvTable(write(tmp_path, as_csv(table)), BLOCK))


def test_crlf_and_lf_files_read_the_same(tmp_path):
    table = [["a", "b", "label"]] + [[str(i), str(i * 0.5), "cat"] for i in range(2000)]
    plain = CsvTable(write(tmp_path, as_csv(table)), BLOCK)
    crlf_path = tmp_path / "crlf.csv"
    crlf_path.write_bytes(as_csv(table, "\r\n"))
    assert rows_of(plain) == rows_of(CsvTable(crlf_path, BLOCK)) == table[1:]


def test_byte_order_mark_and_padded_header_names(tmp_path):
    table = CsvTable(write(tmp_path, "\ufeff a ,label\n1,x\n".encode()), BLOCK)
    assert table.columns == ["a", "label"]


def test_ragged_rows_are_reported_with_their_row_numbers(tmp_path):
    lines = ["a,b,label"] + [f"{i},{i},x" for i in range(3000)]
    lines[2501] = "1,2"
    lines[2801] = "1,2,3,4"
    table = CsvTable(write(tmp_path, "\n".join(lines).encode()), BLOCK)
    with pytest.raises(InvalidArgument) as error:
        rows_of(table)
    assert [(v.field, v.description) for v in error.value.violations] == [
        ("chunk", "row 2500 has 2 fields, the header has 3")
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"only_one_column\n1\n", "at least one feature"),
        (b"a,a,label\n1,2,3\n", "repeats column names ['a']"),
        (b"a,,label\n1,2,3\n", "empty column name"),
        (b'a,label\n1,"unterminated\n2,x\n', "unbalanced"),
        (b"a,label\n1,x\n2,\xff\xfe\n", "not UTF-8 text: invalid start byte at byte 14"),
    ],
)
def test_unreadable_csv_is_invalid_argument(tmp_path, content, message):
    with pytest.raises(InvalidArgument) as error:
        rows_of(CsvTable(write(tmp_path, content), BLOCK))
    assert message in str(error.value)


def test_set_aside_batches_come_back_as_written_whatever_their_types(tmp_path):
    spill = BatchSpill(tmp_path)
    written = [
        pa.record_batch({"a": pa.array([1.5, None]), "label": ["x", "y"]}),
        pa.record_batch({"a": pa.array(["n/a", " 2"]), "label": ["y", "x"]}),
    ]
    for batch in written:
        spill.write(batch)
    assert list(tmp_path.iterdir()) == [], "the spill file has no name"
    assert [batch.to_pydict() for batch in spill.batches()] == [b.to_pydict() for b in written]
    assert [batch.schema for batch in spill.batches()] == [b.schema for b in written]
    spill.close()


def test_read_ahead_keeps_order_and_raises_where_the_reader_does():
    def numbers():
        yield from range(10)
        raise InvalidArgument([])

    found = []
    with pytest.raises(InvalidArgument):
        for number in read_ahead(numbers()):
            found.append(number)
    assert found == list(range(10))
    assert list(read_ahead(iter(()))) == []
