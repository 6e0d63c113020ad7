"""ReadArrow and Parquet files over a real grpc.aio server: a split as Arrow record batches
checked against ReadBatches' rows, for mixed-type tables (float, int, categorical, string
labels) and arrays (images), in messages of at most 4 MiB; the docs' pandas example run
as written; DuckDB reading a version's Parquet files where the blob store keeps them, its
count and mean equal to the version's statistics; bad requests."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from pathlib import Path

import duckdb
import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.data.conftest import csv_bytes, images, upload
from tests.data.test_service import read_split
from tests.support.status import expect_error
from tfmesh.data.v1 import data_pb2 as pb
from tfmesh.data.v1 import data_pb2_grpc

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


async def read_arrow(stub, version: str, split, batch_size: int = 0) -> list[bytes]:
    request = pb.ReadArrowRequest(version=version, split=split, batch_size=batch_size)
    return [message.arrow async for message in stub.ReadArrow(request)]


def mixed_table(rows: int, seed: int = 3) -> bytes:
    rng = np.random.default_rng(seed)
    colours = ["red", "green", "blue"]
    lines = [
        [f"{rng.normal():.6f}", int(rng.integers(0, 100)), colours[i % 3], ["cat", "dog"][i % 2]]
        for i in range(rows)
    ]
    return csv_bytes(["height", "age", "colour", "label"], lines)


async def test_a_tables_split_reads_as_typed_arrow_columns_equal_to_its_batches(stub):
    response = await upload(stub, mixed_table(300), dataset="mixed")
    version = response.version.name
    pieces = await read_arrow(stub, version, pb.SPLIT_TRAIN, batch_size=64)
    # The first piece alone is a readable stream start: the schema and a first batch.
    first = pa.ipc.open_stream(pieces[0])
    assert first.schema.metadata[b"tfmesh.version"] == version.encode()
    assert first.schema.metadata[b"tfmesh.split"] == b"train"
    table = pa.ipc.open_stream(b"".join(pieces)).read_all()
    assert table.column_names == ["height", "age", "colour", "label"]
    assert table.schema.field("height").type == pa.float32()
    assert table.schema.field("age").type == pa.int64()
    assert pa.types.is_dictionary(table.schema.field("colour").type)
    features, labels, _ = await read_split(stub, version, pb.SPLIT_TRAIN)
    x, y = np.concatenate(features), np.concatenate(labels)
    rows = table.num_rows
    assert rows == len(y) > 0 and table.to_batches()[0].num_rows == 64
    assert np.array_equal(table["height"].to_numpy(), x[:, 0])
    assert np.array_equal(table["age"].to_numpy(), x[:, 1].astype(np.int64))
    described = (await stub.GetDatasetVersion(pb.GetDatasetVersionRequest(version=version))).version
    schema = described.schema
    colours = schema.features[2].vocabulary
    assert table["colour"].to_pylist() == [colours[int(c)] for c in x[:, 2]]
    assert table["label"].to_pylist() == [schema.label_vocabulary[i] for i in y]


async def test_an_array_version_reads_as_fixed_size_lists_with_their_shape(stub):
    x, _, content = images(120, shape=(4, 3, 2))
    response = await upload(stub, content, dataset="pictures", format=pb.DATA_FORMAT_NPZ)
    version = response.version.name
    table = pa.ipc.open_stream(b"".join(await read_arrow(stub, version, pb.SPLIT_TEST))).read_all()
    assert table.schema.field("x").metadata[b"shape"] == b"[4, 3, 2]"
    features, _, _ = await read_split(stub, version, pb.SPLIT_TEST)
    stored = np.concatenate(features)
    values = table["x"].combine_chunks().flatten().to_numpy()
    assert np.array_equal(values.reshape(-1, 4, 3, 2), stored)


def example_code() -> str:
    """The Python example of docs/api.md's section on Arrow reads, as written."""
    section = DOCS.read_text().split("### Reading a version as Arrow", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL)[1]


async def test_the_docs_pandas_example_runs_as_written(stub, server):
    response = await upload(stub, mixed_table(200), dataset="mixed")
    code = example_code().replace("localhost:50051", server.address)
    code = code.replace("mixed@3f2a9c0d1e4b", response.version.name)
    scope: dict = {"print": lambda *_: None}
    # The example makes its own blocking channel: run it off the event loop.
    await asyncio.to_thread(exec, code, scope)
    frame = scope["frame"]
    assert list(frame.columns) == ["height", "age", "colour", "label"]
    assert str(frame["colour"].dtype) == "category" and len(frame) > 100


async def test_a_wide_stream_comes_in_messages_a_default_client_takes(stub, server):
    columns = [f"c{j}" for j in range(400)]
    rng = np.random.default_rng(5)
    lines = [[*rng.integers(0, 1000, 400).tolist(), i % 2] for i in range(2000)]
    response = await upload(stub, csv_bytes([*columns, "label"], lines), dataset="wide")
    # A channel with gRPC's default 4 MiB receive limit, as the docs' example opens.
    async with grpc.aio.insecure_channel(server.address) as channel:
        plain = data_pb2_grpc.DataServiceStub(channel)
        pieces = await read_arrow(plain, response.version.name, pb.SPLIT_TRAIN, batch_size=2000)
    assert len(pieces) > 2
    table = pa.ipc.open_stream(b"".join(pieces)).read_all()
    assert table.schema.field("c0").type == pa.int64() and table.num_rows > 1000


async def test_duckdb_reads_a_versions_parquet_files_in_place(stub):
    response = await upload(stub, mixed_table(400), dataset="lake")
    version = response.version.name
    found = await stub.GetShards(
        pb.GetShardsRequest(version=version, format=pb.SHARD_FORMAT_PARQUET)
    )
    assert {s.format for s in found.shards} == {pb.SHARD_FORMAT_PARQUET}
    assert sum(s.rows for s in found.shards) == response.version.rows.kept
    paths = [urllib.parse.urlparse(s.uri).path for s in found.shards]
    count, mean, colours = (
        duckdb.connect()
        .execute(
            "select count(*), avg(height), count(distinct colour) from read_parquet(?)", [paths]
        )
        .fetchone()
    )
    statistics = await stub.GetStatistics(pb.GetStatisticsRequest(version=version))
    height = next(f for f in statistics.features if f.name == "height")
    assert count == height.count == 400
    # Stored as float32: the mean agrees to float32's precision.
    assert mean == pytest.approx(height.mean, rel=1e-6, abs=1e-6)
    assert colours == 3
    # The schema travels in the files' metadata; the .npy shards are still the default.
    metadata = pq.read_schema(paths[0]).metadata
    assert json.loads(metadata[b"tfmesh.schema"])["label"] == "label"
    npy = await stub.GetShards(pb.GetShardsRequest(version=version))
    assert {s.format for s in npy.shards} == {pb.SHARD_FORMAT_NPY} and npy.record_bytes > 0


async def test_unknown_versions_and_oversized_batches_are_refused(stub):
    response = await upload(stub, mixed_table(50), dataset="mixed")
    await expect_error(
        read_arrow(stub, response.version.name, pb.SPLIT_TRAIN, batch_size=65537),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await expect_error(
        read_arrow(stub, "mixed@000000000000", pb.SPLIT_TRAIN), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        read_arrow(stub, response.version.name, pb.SPLIT_TRAIN, batch_size=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_a_split_without_rows_is_a_stream_without_batches(stub):
    response = await upload(stub, mixed_table(3), dataset="tiny")
    counts = response.version.rows
    splits = {pb.SPLIT_VALIDATION: counts.validation, pb.SPLIT_TEST: counts.test}
    # Three rows split 80/10/10 by their hashes: these land all in train.
    empty = next((split for split, rows in splits.items() if rows == 0), None)
    assert empty is not None, f"no split of three rows is empty: {counts}"
    pieces = await read_arrow(stub, response.version.name, empty)
    assert pa.ipc.open_stream(b"".join(pieces)).read_all().num_rows == 0
