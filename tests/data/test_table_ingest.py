"""Tabular ingest through Apache Arrow: the CSV parser's recorded results still hold, the
same table as CSV, Parquet or JSON Lines makes the same version content and splits, and
bad files of each format are INVALID_ARGUMENT with nothing stored."""

from __future__ import annotations

import contextlib
import decimal
import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.data.entities import SPLITS, AnomalyKind, FeatureKind, Split
from shared.errors import InvalidArgument
from tests.data.conftest import csv_bytes, ingest, read_all, stored_files
from tests.data.table_fixtures import fixtures

GOLDEN = Path(__file__).parent / "golden" / "inference.json"


def _approx_floats(value):
    """`value` with every float compared to 1e-12 (batches merge moments in another
    order than the recording's)."""
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-12, abs=1e-300)
    if isinstance(value, list):
        return [_approx_floats(item) for item in value]
    if isinstance(value, dict):
        return {key: _approx_floats(item) for key, item in value.items()}
    return value


def test_schema_statistics_and_anomalies_match_the_recorded_csv_parser(core):
    # golden/inference.json was written by the Python CSV parser this ingest replaced.
    golden = json.loads(GOLDEN.read_text())
    for name, (content, label) in fixtures().items():
        version, _ = ingest(
            core, content, dataset=name, label_column=label, max_bad_row_fraction=0.5
        )
        statistics = core.statistics(version.name)
        found = {
            "schema": version.schema.model_dump(mode="json"),
            "rows": [version.rows.total, version.rows.kept, version.rows.dropped],
            "anomalies": {
                "bad_rows": version.anomalies.bad_rows,
                "counts": {kind.value: n for kind, n in version.anomalies.counts.items()},
                "examples": [a.model_dump(mode="json") for a in version.anomalies.examples],
            },
            "features": [f.model_dump(mode="json") for f in statistics.features],
            "labels": [[c.label, c.index, c.count] for c in statistics.labels],
        }
        assert found == _approx_floats(golden[name]), name


def _mixed_table(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "size": rng.integers(-50, 50, rows),
            "weight": np.round(rng.normal(size=rows) * 10, 4),
            "color": rng.choice(["red", "green", "blue"], rows),
            "label": rng.choice(["cat", "dog"], rows),
        }
    )


def _as(table: pa.Table, data_format: str) -> bytes:
    out = io.BytesIO()
    if data_format == "parquet":
        pq.write_table(table, out, row_group_size=700)
        return out.getvalue()
    rows = table.to_pylist()
    if data_format == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows).encode()
    return csv_bytes(table.column_names, [list(row.values()) for row in rows])


def _rows_by_split(core, name: str) -> dict[tuple, str]:
    found = {}
    for split, (x, y) in read_all(core, name).items():
        for features, label in zip(x.tolist(), y.tolist(), strict=True):
            found[(*features, label)] = split
    return found


def test_the_same_table_as_csv_parquet_or_json_lines_makes_the_same_content(core):
    table = _mixed_table(3000)
    versions = {
        data_format: ingest(core, _as(table, data_format), dataset=data_format, format=data_format)[
            0
        ]
        for data_format in ("csv", "parquet", "jsonl")
    }
    schemas = {v.schema.model_dump_json() for v in versions.values()}
    assert len(schemas) == 1
    schema = versions["csv"].schema
    assert [f.kind for f in schema.features] == [
        FeatureKind.INT,
        FeatureKind.FLOAT,
        FeatureKind.CATEGORICAL,
    ]
    assert schema.label_vocabulary == ["cat", "dog"]
    statistics = [core.statistics(v.name).model_dump(mode="json") for v in versions.values()]
    assert statistics[1:] == [_approx_floats(statistics[0])] * 2
    # Rows hash by value, so each row lands in the same split whatever the format.
    splits = {name: _rows_by_split(core, v.name) for name, v in versions.items()}
    assert splits["csv"] == splits["parquet"] == splits["jsonl"]
    assert len(splits["csv"]) == len(set(map(tuple, table.to_pandas().values.tolist())))
    assert {v.rows.train for v in versions.values()} == {versions["csv"].rows.train}


def test_a_number_written_another_way_keeps_its_split(core):
    values = np.arange(-400, 400) / 8
    plain = csv_bytes(["v", "label"], [[f"{v:.3f}", "a" if v > 0 else "b"] for v in values])
    spelled = csv_bytes(["v", "label"], [[f" {v:.6e}", "a" if v > 0 else "b"] for v in values])
    first, _ = ingest(core, plain, dataset="plain")
    second, _ = ingest(core, spelled, dataset="spelled")
    assert first.name != second.name
    assert _rows_by_split(core, first.name) == _rows_by_split(core, second.name)


def test_parquet_nulls_and_json_nulls_are_missing_values_at_their_rows(core):
    table = pa.table(
        {"a": pa.array([1.5, None, 3.0, 4.0]), "label": pa.array(["x", "y", None, "x"])}
    )
    for data_format in ("parquet", "jsonl"):
        version, _ = ingest(
            core,
            _as(table, data_format),
            dataset=data_format,
            format=data_format,
            max_bad_row_fraction=0.5,
        )
        assert [(a.row, a.column, a.kind) for a in version.anomalies.examples] == [
            (1, "a", AnomalyKind.MISSING_VALUE),
            (2, "label", AnomalyKind.MISSING_LABEL),
        ]
        assert version.rows.kept == 2


def _parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def _parquet_named_badly() -> bytes:
    """A Parquet file whose first column's name is not UTF-8 (bytes patched in place)."""
    out = io.BytesIO()
    pq.write_table(pa.table({"aQZ": [1.0], "label": ["x"]}), out, store_schema=False)
    return out.getvalue().replace(b"aQZ", b"a\xff\xfe")


GOOD_PARQUET = _parquet(pa.table({"a": [1.0, 2.0], "label": ["x", "y"]}))
BAD_FILES = {
    "csv ragged row": ("csv", b"a,b,label\n1,2,x\n3,y\n", "row 1 has 2 fields, the header has 3"),
    "csv empty": ("csv", b"\n\n", "the CSV is empty"),
    "csv header only": ("csv", b"a,label\n", "the CSV has a header but no data rows"),
    "csv not utf-8": (
        "csv",
        b"a,label\n1,x\n2,\xff\n",
        "not UTF-8 text: invalid start byte at byte 14",
    ),
    "csv unbalanced quote": ("csv", b'a,label\n1,"x\n2,y\n', "ends inside a quoted field"),
    "csv no label column": ("csv", b"a,b\n1,2\n", "column 'label' is not in the header"),
    "parquet truncated": ("parquet", GOOD_PARQUET[: len(GOOD_PARQUET) // 2], "unreadable Parquet"),
    "parquet corrupt": (
        "parquet",
        GOOD_PARQUET[:8] + bytes(len(GOOD_PARQUET) - 16) + GOOD_PARQUET[-8:],
        "unreadable Parquet",
    ),
    "parquet not parquet": ("parquet", b"a,label\n1,x\n", "unreadable Parquet"),
    "parquet nested column": (
        "parquet",
        _parquet(pa.table({"a": [[1, 2], [3]], "label": ["x", "y"]})),
        "column 'a' holds list<element: int64>; a feature or label is a number or text",
    ),
    "parquet no label column": ("parquet", GOOD_PARQUET, "column 'target' is not in the header"),
    "jsonl broken line": (
        "jsonl",
        b'{"a": 1, "label": "x"}\n{"a": 2, "label": \n',
        "unreadable JSON Lines: JSON parse error",
    ),
    "jsonl mixed types": (
        "jsonl",
        b'{"a": 1, "label": "x"}\n{"a": "two", "label": "y"}\n',
        "Column(/a) changed from number to string in row 1",
    ),
    "jsonl not objects": ("jsonl", b"[1, 2]\n[3, 4]\n", "unreadable JSON Lines"),
    "jsonl blank": ("jsonl", b"\n\n", "the JSON Lines file is empty"),
    "jsonl one column": ("jsonl", b'{"label": "x"}\n', "at least one feature and the label"),
    "csv header not utf-8": (
        "csv",
        b"a\xff,label\n1,x\n",
        "not UTF-8 text: invalid start byte at byte 1",
    ),
    "csv utf-16": ("csv", "a,label\n1,x\n".encode("utf-16"), "not UTF-8 text"),
    "jsonl key not utf-8": ("jsonl", b'{"a\xff": 1, "label": "x"}\n', "not UTF-8"),
    "jsonl value not utf-8": (
        "jsonl",
        b'{"a": 1, "label": "x\xff"}\n',
        "column 'label' holds text that is not UTF-8",
    ),
    "parquet value not utf-8": (
        "parquet",
        _parquet(
            pa.table({"a": [1.0, 2.0], "label": pa.array([b"x", b"y\xff"]).view(pa.string())})
        ),
        "column 'label' holds text that is not UTF-8",
    ),
    "parquet name not utf-8": ("parquet", _parquet_named_badly(), "column names are not UTF-8"),
    "jsonl key after the first block": (
        "jsonl",
        b'{"a": 1, "label": "x"}\n' * 300 + b'{"a": 1, "label": "x", "b": 2}\n',
        "unexpected field",
    ),
}


@pytest.mark.parametrize(("data_format", "content", "message"), BAD_FILES.values(), ids=BAD_FILES)
def test_a_bad_file_is_invalid_argument_and_nothing_is_stored(
    core, blobs, data_format, content, message
):
    label = "target" if "'target'" in message else "label"
    with pytest.raises(InvalidArgument) as error:
        ingest(core, content, format=data_format, label_column=label)
    assert message in str(error.value)
    assert core.list_versions("", 0, "").items == []
    assert stored_files(blobs) == []


def test_json_lines_widen_whole_numbers_nulls_and_dates_across_blocks(core):
    lines = [{"a": None, "b": 1, "when": "2021-01-01", "label": "x"}] * 300
    lines += [{"a": 2.5, "b": 1.5, "when": "later", "label": "y"}] * 300
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    version, _ = ingest(core, content, format="jsonl", max_bad_row_fraction=0.5)
    kinds = {f.name: f.kind for f in version.schema.features}
    assert kinds == {
        "a": FeatureKind.FLOAT,
        "b": FeatureKind.FLOAT,
        "when": FeatureKind.CATEGORICAL,
    }
    assert version.schema.features[2].vocabulary == ["2021-01-01", "later"]
    assert version.anomalies.counts == {AnomalyKind.MISSING_VALUE: 300}


def test_json_lines_whole_number_labels_keep_their_text_and_split_like_csv(core):
    labels = [10_000_000_000, 20_000_000_000, 2**53, 2**53 + 1]
    rows = [{"a": i / 4, "label": labels[i % 4]} for i in range(200)]
    table = pa.Table.from_pylist(rows)
    versions = [
        ingest(core, _as(table, data_format), dataset=data_format, format=data_format)[0]
        for data_format in ("csv", "jsonl")
    ]
    assert [v.schema.label_vocabulary for v in versions] == [[str(n) for n in labels]] * 2
    assert _rows_by_split(core, versions[0].name) == _rows_by_split(core, versions[1].name)


def test_parquet_dictionaries_and_decimals_are_text_and_numbers(core):
    colors = pa.array(["red", "green", "blue"] * 10).dictionary_encode()
    labels = pa.array([decimal.Decimal(i % 2) for i in range(30)], pa.decimal32(3, 0))
    table = pa.table({"a": range(30), "color": colors, "label": labels})
    version, _ = ingest(core, _as(table, "parquet"), format="parquet")
    assert [f.kind for f in version.schema.features] == [FeatureKind.INT, FeatureKind.CATEGORICAL]
    assert version.schema.features[1].vocabulary == ["blue", "green", "red"]
    assert version.schema.label_vocabulary == ["0", "1"]
    top = core.statistics(version.name).features[1].top_values
    assert sorted(top) == [("blue", 10), ("green", 10), ("red", 10)]


def test_a_version_s_own_parquet_file_uploads_again_as_the_same_table(core, blobs):
    first, _ = ingest(core, _as(_mixed_table(500), "csv"))
    stored = core.shards(first.name, Split.TRAIN, parquet=True).locations[0].shard
    content = blobs.path_for(stored.sha256).read_bytes()
    again, _ = ingest(core, content, format="parquet", dataset="again")
    assert [f.kind for f in again.schema.features] == [f.kind for f in first.schema.features]
    assert again.schema.label_vocabulary == first.schema.label_vocabulary
    assert again.rows.total == stored.rows


def test_anomaly_details_quote_the_text_wherever_the_row_is(core):
    rows = [[f"{i}.25", "x"] for i in range(2000)]
    for row, value in ((10, "Infinity"), (1500, "1e999"), (1600, "-Infinity")):
        rows[row][0] = value
    version, _ = ingest(core, csv_bytes(["a", "label"], rows))
    assert [(a.row, a.detail) for a in version.anomalies.examples] == [
        (10, "not a finite number: 'Infinity'"),
        (1500, "not a finite number: '1e999'"),
        (1600, "not a finite number: '-Infinity'"),
    ]


def test_problems_past_the_first_block_are_named_as_such(core):
    lines = [f"{i},{i},{i}" for i in range(3000)]
    content = ("a,b,label\n" + "\n".join(lines[:2500])).encode() + b"\n\xff"
    content += "\n".join(lines[2500:]).encode()
    with pytest.raises(InvalidArgument, match="not UTF-8 text: invalid start byte at byte"):
        ingest(core, content)
    with pytest.raises(InvalidArgument, match="ends inside a quoted field"):
        ingest(core, b'a,b,label\n1,2,3\n4,"5\n')
    cut = b"a,label\n1,x\n" + "é".encode()[:1]
    with pytest.raises(InvalidArgument, match="at byte 12"):
        ingest(core, cut)


def test_a_failed_ingest_leaves_no_spill_open(core, blobs):
    def spills() -> list[str]:
        # The spill has no name (O_TMPFILE): its descriptor points into the temp folder.
        found = []
        for fd in Path("/proc/self/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).startswith(str(blobs.temp_dir)):
                    found.append(fd.name)
        return found

    before = spills()
    # Too many labels: found while the first pass reads, batches already set aside.
    rows = [[i, f"class{i}"] for i in range(1200)]
    with pytest.raises(InvalidArgument, match="more than 1000 distinct values") as caught:
        ingest(core, csv_bytes(["a", "label"], rows))
    # Closed at once, not when the error's traceback (held here) lets the source go.
    assert caught.traceback and spills() == before


def test_a_range_too_narrow_for_bins_has_no_histogram(core):
    content = b"a,label\n10000000000000000,x\n10000000000000002,y\n"
    version, _ = ingest(core, content)
    (feature,) = core.statistics(version.name).features
    assert feature.histogram is None and feature.min < feature.max


def test_a_mostly_text_column_with_too_many_values_is_refused(core):
    rows = [[f"word{i}", "x"] for i in range(1200)]
    with pytest.raises(InvalidArgument, match="mostly text but has more than 1000 distinct"):
        ingest(core, csv_bytes(["a", "label"], rows))


def test_blank_lines_and_a_byte_order_mark_leave_rows_numbered(core):
    content = "\ufeff a ,label\n1,x\n\nbad,y\n\n\n3,x\n".encode()
    version, _ = ingest(core, content, max_bad_row_fraction=0.5)
    assert [f.name for f in version.schema.features] == ["a"]
    assert [(a.row, a.detail) for a in version.anomalies.examples] == [(1, "not a number: 'bad'")]
    assert sum(len(y) for _, y in read_all(core, version.name).values()) == 2
    assert set(read_all(core, version.name)) == set(SPLITS)
