"""Training reads a dataset version's splits straight from its Parquet files, against a
real data service on loopback: the arrays equal the ones streamed through the service
(a table of float, INT and categorical features with text labels, an image version and
an NPZ of 1-D rows, over several files each); a file deleted from the disk, rotten, or
in a layout that does not decode falls back to the service, with the same arrays, a log
line and the fallback counted."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import REGISTRY

from services.data.server import start_data
from services.data.settings import DataSettings
from services.training.data_service_source import DataServiceSource
from services.training.datasource import TrainingData
from shared.channels import open_channel
from shared.telemetry import setup_telemetry
from tests.data.conftest import csv_bytes, images, npz_bytes, upload
from tfmesh.data.v1 import data_pb2 as pb
from tfmesh.data.v1 import data_pb2_grpc

TINY = 4096
ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std")


def mixed_table(rows: int) -> bytes:
    rng = np.random.default_rng(3)
    colors = ["red", "green", "blue"]
    return csv_bytes(
        ["size", "count", "color", "label"],
        [
            [repr(float(rng.normal())), int(rng.integers(-5, 50)), colors[i % 3], f"k{i % 4}"]
            for i in range(rows)
        ],
    )


def reads(path: str) -> float:
    value = REGISTRY.get_sample_value("tfmesh_training_dataset_split_reads_total", {"path": path})
    return value or 0.0


def assert_same(direct: TrainingData, streamed: TrainingData) -> None:
    assert direct.info == streamed.info
    for name in ARRAYS:
        a, b = getattr(direct, name), getattr(streamed, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.fixture
async def data_stub(tmp_path: Path):
    settings = DataSettings(home=tmp_path, port=0, parse_block_bytes=TINY, shard_bytes=TINY)
    running = await start_data(settings, setup_telemetry("data-test", configure_logging=False))
    try:
        async with open_channel(running.address) as channel:
            yield data_pb2_grpc.DataServiceStub(channel), channel
    finally:
        await running.stop(0)


async def parquet_files(stub, version: str) -> list[pb.Shard]:
    request = pb.GetShardsRequest(version=version, format=pb.SHARD_FORMAT_PARQUET)
    return list((await stub.GetShards(request)).shards)


async def test_splits_read_from_the_files_equal_the_service_stream(data_stub) -> None:
    stub, channel = data_stub
    table = (await upload(stub, mixed_table(900), dataset="mixed")).version
    _, _, npz = images(300)
    array = (await upload(stub, npz, dataset="pictures", format=pb.DATA_FORMAT_NPZ)).version
    rng = np.random.default_rng(4)
    rows = npz_bytes(rng.normal(size=(300, 4)).astype(np.float32), rng.integers(0, 3, 300))
    flat = (await upload(stub, rows, dataset="vectors", format=pb.DATA_FORMAT_NPZ)).version
    kinds = [f.type for f in table.schema.features]
    assert kinds == [pb.FEATURE_TYPE_FLOAT, pb.FEATURE_TYPE_INT, pb.FEATURE_TYPE_CATEGORICAL]
    assert list(flat.schema.feature_shape) == [4]
    for version in (table, array, flat):
        files = await parquet_files(stub, version.name)
        assert len([f for f in files if f.split == pb.SPLIT_TRAIN]) > 1, "several files a split"
        before = reads("files"), reads("service")
        direct = await DataServiceSource(channel).load(version.name)
        assert (reads("files"), reads("service")) == (before[0] + 3, before[1])
        streamed = await DataServiceSource(channel, direct_reads=False).load(version.name)
        assert reads("service") == before[1] + 3
        assert_same(direct, streamed)
        rows = version.rows
        held = len(direct.x_train) + len(direct.x_val) + len(direct.x_test)
        assert held == rows.train + rows.validation + rows.test


@pytest.mark.parametrize("damage", ["deleted", "rotten", "relabelled"])
async def test_a_file_out_of_reach_is_read_through_the_service(data_stub, damage, caplog) -> None:
    stub, channel = data_stub
    version = (await upload(stub, mixed_table(600), dataset="mixed")).version
    streamed = await DataServiceSource(channel, direct_reads=False).load(version.name)
    train = [f for f in await parquet_files(stub, version.name) if f.split == pb.SPLIT_TRAIN]
    path = Path(urlparse(train[-1].uri).path)
    if damage == "deleted":
        path.unlink()
    elif damage == "rotten":
        path.write_bytes(path.read_bytes()[:-1] + b"!")
    else:
        # A whole Parquet file under its own digest whose label is numbers, not text:
        # stands for a layout this reader does not know.
        table = pq.read_table(path)
        table = table.set_column(3, "label", pa.array(np.arange(table.num_rows)))
        out = pa.BufferOutputStream()
        pq.write_table(table, out)
        content = out.getvalue().to_pybytes()
        path.write_bytes(content)
        files = [f for f in train if f.uri != train[-1].uri]
        files.append(rebuilt(train[-1], content))
        train = files
    before = reads("files"), reads("service")
    with caplog.at_level(logging.WARNING, "services.training.data_service_source"):
        direct = await read_with_files(channel, version.name, train)
    assert_same(direct, streamed)
    # The train split through the service; validation and test from their files.
    assert (reads("files"), reads("service")) == (before[0] + 2, before[1] + 1)
    logged = {r.levelname: r.getMessage() for r in caplog.records}
    reason = {"deleted": "not readable here", "rotten": "does not hold"}.get(damage, "not text")
    level = "ERROR" if damage == "rotten" else "WARNING"
    assert train[-1].uri in logged[level] and reason in logged[level]


def rebuilt(file: pb.Shard, content: bytes) -> pb.Shard:
    changed = pb.Shard()
    changed.CopyFrom(file)
    changed.sha256 = hashlib.sha256(content).hexdigest()
    changed.size_bytes = len(content)
    return changed


async def read_with_files(channel, version: str, train: list[pb.Shard]):
    """Load `version` with the train split's file list replaced by `train` (how a file
    under its own digest in an unknown layout reaches the reader)."""
    source = DataServiceSource(channel)
    listed = source._parquet_files

    async def files(version_message, split):
        return train if split == pb.SPLIT_TRAIN else await listed(version_message, split)

    source._parquet_files = files  # type: ignore[method-assign]
    return await source.load(version)
