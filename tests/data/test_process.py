"""The data service as a real process, killed with SIGKILL in the middle of an upload and
in the middle of an ingest: no partial version is ever visible, a restart cleans up what
the killed process left, and the same upload then succeeds."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable

import grpc
import pytest

from shared.blobstore import LocalBlobStore
from shared.channels import open_channel
from tests.data.conftest import numeric_table, upload_requests
from tests.support.processes import service_process
from tfmesh.data.v1 import data_pb2 as pb
from tfmesh.data.v1 import data_pb2_grpc

CHUNK = 256 * 1024
HEADER = pb.UploadHeader(dataset="big", format=pb.DATA_FORMAT_CSV, label_column="label")


@pytest.fixture
def data_process(tmp_path):
    # Tiny shards make an ingest write hundreds of blobs, so it is easy to kill half way.
    process = service_process(
        "services.data.server", "TFMESH_DATA_", tmp_path, TFMESH_DATA_SHARD_BYTES="4096"
    )
    yield process
    process.stop_quietly()


@pytest.fixture(scope="module")
def content() -> bytes:
    return numeric_table(60_000, features=6, seed=5)[2]


async def wait_for(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def committed(blobs: LocalBlobStore) -> list[str]:
    return list(blobs.digests())


async def check_clean_restart(data_process, tmp_path, content: bytes) -> None:
    home = tmp_path / "data"
    data_process.start()
    blobs = LocalBlobStore(home / "blobs")
    assert list(blobs.temp_dir.iterdir()) == [], "start-up sweeps unfinished uploads"
    assert committed(blobs) == [], "start-up deletes blobs no version names"
    with sqlite3.connect(home / "data.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    async with open_channel(data_process.address) as channel:
        stub = data_pb2_grpc.DataServiceStub(channel)
        listed = await stub.ListDatasetVersions(pb.ListDatasetVersionsRequest())
        assert list(listed.versions) == []
        response = await stub.UploadDataset(upload_requests(HEADER, content, CHUNK), timeout=120)
        assert response.created and response.version.rows.kept == 60_000
        rows = 0
        async for batch in stub.ReadBatches(
            pb.ReadBatchesRequest(
                version=response.version.name, split=pb.SPLIT_TRAIN, batch_size=8192
            )
        ):
            rows += batch.labels.shape[0]
        assert rows == response.version.rows.train
    assert data_process.terminate() == 0


async def test_sigkill_mid_upload_leaves_no_partial_version(data_process, tmp_path, content):
    data_process.start()
    temp_dir = tmp_path / "data" / "blobs" / "tmp"

    async def killed_half_way():
        yield pb.UploadDatasetRequest(header=HEADER)
        for offset in range(0, len(content), CHUNK):
            if offset == len(content) // 2 // CHUNK * CHUNK:
                # Kill once the server has written part of the upload (gRPC may buffer
                # the messages sent so far before the server reads them).
                await wait_for(lambda: any(f.stat().st_size for f in temp_dir.iterdir()))
                data_process.kill()
            yield pb.UploadDatasetRequest(chunk=content[offset : offset + CHUNK])

    async with open_channel(data_process.address) as channel:
        stub = data_pb2_grpc.DataServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as broken:
            await stub.UploadDataset(killed_half_way(), timeout=60)
        assert broken.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    leftovers = list(temp_dir.iterdir())
    assert leftovers, "the killed upload should have left its temp file behind"
    await check_clean_restart(data_process, tmp_path, content)


async def test_sigkill_mid_ingest_leaves_no_partial_version(data_process, tmp_path, content):
    data_process.start()
    blobs = LocalBlobStore(tmp_path / "data" / "blobs")
    async with open_channel(data_process.address) as channel:
        stub = data_pb2_grpc.DataServiceStub(channel)
        call = asyncio.ensure_future(
            stub.UploadDataset(upload_requests(HEADER, content, CHUNK), timeout=120)
        )
        # Shards committed: the ingest is writing them, not yet its source or metadata.
        await wait_for(lambda: len(committed(blobs)) >= 10 or call.done())
        assert not call.done(), "the ingest finished before it could be killed"
        data_process.kill()
        with pytest.raises(grpc.aio.AioRpcError):
            await call
    assert len(committed(blobs)) >= 10
    with sqlite3.connect(tmp_path / "data" / "data.db") as db:
        assert db.execute("SELECT count(*) FROM dataset_versions").fetchone() == (0,)
    await check_clean_restart(data_process, tmp_path, content)
