"""The CSV tokenizer: whole records per block, whatever the quoting, line endings or block
boundaries, and the same fields as `csv.reader` over the whole file."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.data.csv_blocks import CsvFile
from shared.errors import InvalidArgument

BLOCK = 4096


def write(tmp_path, content: bytes):
    path = tmp_path / "upload.csv"
    path.write_bytes(content)
    return path


def rows_of(csv_file: CsvFile) -> list[list[str]]:
    rows = []
    for block in csv_file.blocks():
        assert len(block.columns) == len(csv_file.columns)
        assert all(len(column) == block.rows for column in block.columns)
        assert block.first_row == len(rows)
        rows += [list(fields) for fields in zip(*block.columns, strict=True)]
    return rows


def as_csv(rows: list[list[str]], terminator: str = "\n") -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator=terminator).writerows(rows)
    return text.getvalue().encode()


field = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=40, deadline=None)
@given(table=st.lists(st.lists(field, min_size=3, max_size=3), min_size=1, max_size=300))
def test_blocks_hold_the_same_rows_as_csv_reader(tmp_path_factory, table):
    # "\r\n" terminators make csv.writer quote fields holding either character.
    content = as_csv([["a", "b", "c"], *table], "\r\n")
    path = write(tmp_path_factory.mktemp("csv"), content)
    expected = [row for row in csv.reader(io.StringIO(content.decode(), newline="")) if row][1:]
    assert rows_of(CsvFile(path, BLOCK, BLOCK * 64)) == expected


def test_quoted_newlines_and_commas_across_block_boundaries(tmp_path):
    long_field = "x" * 3000 + '\nsecond line, with a comma and a "quote"\n' + "y" * 3000
    table = [["id", "text", "label"]] + [[str(i), long_field, "a"] for i in range(5)]
    csv_file = CsvFile(write(tmp_path, as_csv(table)), BLOCK, BLOCK * 64)
    assert rows_of(csv_file) == table[1:]


def test_fast_and_quoted_paths_agree_and_keys_are_the_fields(tmp_path):
    table = [["a", "b", "label"]] + [[str(i), str(i * 0.5), "cat"] for i in range(2000)]
    plain = CsvFile(write(tmp_path, as_csv(table)), BLOCK, BLOCK * 64)
    crlf_path = tmp_path / "crlf.csv"
    crlf_path.write_bytes(as_csv(table, "\r\n"))
    crlf = CsvFile(crlf_path, BLOCK, BLOCK * 64)
    assert rows_of(plain) == rows_of(crlf) == table[1:]
    keys = [key for block in crlf.blocks() for key in block.keys]
    assert keys == [",".join(row) for row in table[1:]]


def test_blank_lines_are_skipped_and_rows_stay_numbered(tmp_path):
    csv_file = CsvFile(write(tmp_path, b"a,label\n1,x\n\n2,y\n\n\n3,z\n"), BLOCK, BLOCK * 64)
    assert rows_of(csv_file) == [["1", "x"], ["2", "y"], ["3", "z"]]


def test_byte_order_mark_and_padded_header_names(tmp_path):
    csv_file = CsvFile(write(tmp_path, "\ufeff a ,label\n1,x\n".encode()), BLOCK, BLOCK * 64)
    assert csv_file.columns == ["a", "label"]


def test_ragged_row_is_reported_with_its_row_number(tmp_path):
    lines = ["a,b,label"] + [f"{i},{i},x" for i in range(3000)]
    lines[2501] = "1,2"
    csv_file = CsvFile(write(tmp_path, "\n".join(lines).encode()), BLOCK, BLOCK * 64)
    with pytest.raises(InvalidArgument) as error:
        rows_of(csv_file)
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
        rows_of(CsvFile(write(tmp_path, content), BLOCK, BLOCK * 64))
    assert message in str(error.value)
