"""Fixtures for the data service: settings -> core (no sockets), and settings -> a real
grpc.aio server on port 0 -> stub; plus builders of CSV and NPZ uploads (the other
tabular formats are built with pyarrow where a test needs them).

Uploads a test expects refused go over a blocking channel, from a thread, as the CLI and the
gateway send them: when the server refuses a client-streamed call while the client is
still writing, grpc.aio may report `INTERNAL: Internal error from Core` in place of the
server's status (grpc/grpc#36066).

Parse blocks and shards are made tiny (4 KiB) so that even small test files cross block
and shard boundaries."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterable
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.data.core import DataCore
from services.data.entities import SPLITS, DatasetVersion, UploadSpec
from services.data.samples import npz_bytes
from services.data.server import core_config, start_data
from services.data.settings import DataSettings
from services.data.store import MetadataStore
from shared.blobstore import LocalBlobStore
from shared.channels import open_channel
from shared.db import make_engine, sqlite_url
from shared.telemetry import setup_telemetry
from tfmesh.data.v1 import data_pb2 as pb
from tfmesh.data.v1 import data_pb2_grpc

TINY = 4096


@pytest.fixture
def settings(tmp_path: Path) -> DataSettings:
    return DataSettings(home=tmp_path, port=0, parse_block_bytes=TINY, shard_bytes=TINY)


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "data" / "blobs")


@pytest.fixture
def store(settings: DataSettings) -> MetadataStore:
    return MetadataStore(make_engine(sqlite_url(settings.home / "data" / "data.db")))


@pytest.fixture
def core(settings: DataSettings, store: MetadataStore, blobs: LocalBlobStore) -> DataCore:
    return DataCore(store, blobs, core_config(settings))


@pytest.fixture
async def server(settings: DataSettings):
    running = await start_data(settings, setup_telemetry("data-test", configure_logging=False))
    yield running
    await running.stop(0)


@pytest.fixture
async def channel(server):
    async with open_channel(server.address) as channel:
        yield channel


@pytest.fixture
def stub(channel) -> data_pb2_grpc.DataServiceStub:
    return data_pb2_grpc.DataServiceStub(channel)


@pytest.fixture
def refused_upload(server):
    """`await refused_upload(requests)`: send an upload that the server refuses, over a
    blocking channel from a thread; the call's `grpc.RpcError`."""
    channel = grpc.insecure_channel(server.address)

    def send(requests: Iterable[pb.UploadDatasetRequest]) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            data_pb2_grpc.DataServiceStub(channel).UploadDataset(iter(requests), timeout=30)
        return caught.value

    async def refused(requests: Iterable[pb.UploadDatasetRequest]) -> grpc.RpcError:
        return await asyncio.to_thread(send, requests)

    yield refused
    channel.close()


def csv_bytes(columns: list[str], rows: list[list[object]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return text.getvalue().encode()


def numeric_table(rows: int, features: int = 3, classes: int = 3, seed: int = 0):
    """Random float features (with repr-exact text) and integer labels, as arrays and CSV."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=np.arange(features), scale=1 + np.arange(features), size=(rows, features))
    y = rng.integers(0, classes, size=rows)
    content = csv_bytes(
        [f"f{j}" for j in range(features)] + ["label"],
        [[repr(v) for v in row] + [int(label)] for row, label in zip(x.tolist(), y, strict=True)],
    )
    return x, y, content


def images(rows: int, seed: int = 0, shape=(6, 5, 2)) -> tuple[np.ndarray, np.ndarray, bytes]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(rows, *shape), dtype=np.uint8)
    y = rng.integers(0, 4, size=rows)
    return x, y, npz_bytes(x, y)


def ingest(core: DataCore, content: bytes, **spec) -> tuple[DatasetVersion, bool]:
    """Upload `content` through the core in 1000-byte chunks."""
    spec.setdefault("dataset", "table")
    spec.setdefault("format", "csv")
    if spec["format"] != "npz":
        spec.setdefault("label_column", "label")
    upload = core.start_upload(UploadSpec(**spec))
    for start in range(0, len(content), 1000):
        upload.write(content[start : start + 1000])
    return upload.finish()


def read_split(core: DataCore, name: str, split) -> tuple[np.ndarray, np.ndarray]:
    batches = list(core.read_batches(name, split, 97))
    shape = core.get_version(name).schema.feature_shape
    if not batches:
        return np.zeros((0, *shape), np.float32), np.zeros(0, np.int64)
    return (
        np.concatenate([b.features for b in batches]),
        np.concatenate([b.labels for b in batches]),
    )


def read_all(core: DataCore, name: str) -> dict:
    return {split: read_split(core, name, split) for split in SPLITS}


def stacked(core: DataCore, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Every stored row of a version (splits one after the other): features, labels."""
    parts = read_all(core, name).values()
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def stored_files(blobs: LocalBlobStore) -> list[Path]:
    """Every file in the blob store, committed or temp."""
    return sorted(p for p in blobs.root.rglob("*") if p.is_file())


def upload_requests(header: pb.UploadHeader, content: bytes, chunk_bytes: int = 1000):
    yield pb.UploadDatasetRequest(header=header)
    for start in range(0, len(content), chunk_bytes):
        yield pb.UploadDatasetRequest(chunk=content[start : start + chunk_bytes])


async def upload(stub, content: bytes, **header) -> pb.UploadDatasetResponse:
    header.setdefault("dataset", "table")
    header.setdefault("format", pb.DATA_FORMAT_CSV)
    if header["format"] != pb.DATA_FORMAT_NPZ:
        header.setdefault("label_column", "label")
    return await stub.UploadDataset(upload_requests(pb.UploadHeader(**header), content))
