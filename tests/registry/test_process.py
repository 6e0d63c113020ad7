"""The registry as a real process: SIGKILL in the middle of a 50 MB upload, then restart."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import grpc
import pytest

from services.registry.client import ArtifactFile, NewVersion, RegistryClient
from shared.channels import open_channel
from tests.support.processes import service_process
from tfmesh.registry.v1 import registry_pb2 as pb
from tfmesh.registry.v1 import registry_pb2_grpc

SIZE = 50 * 1024 * 1024
CHUNK = 1024 * 1024


@pytest.fixture
def registry_process(tmp_path):
    process = service_process("services.registry.server", "TFMESH_REGISTRY_", tmp_path)
    yield process
    process.stop_quietly()


async def test_sigkill_mid_upload_leaves_no_partial_version(registry_process, tmp_path):
    payload = os.urandom(SIZE)
    digest = hashlib.sha256(payload).hexdigest()
    header = pb.UploadVersionHeader(
        model="big",
        create_model=True,
        artifacts=[pb.Artifact(name="model.bin", size_bytes=SIZE, sha256=digest)],
    )
    registry_process.start()

    async def killed_half_way():
        yield pb.UploadVersionRequest(header=header)
        for offset in range(0, SIZE, CHUNK):
            if offset == SIZE // 2:
                registry_process.kill()
            yield pb.UploadVersionRequest(chunk=payload[offset : offset + CHUNK])

    async with open_channel(registry_process.address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as broken:
            await stub.UploadVersion(killed_half_way(), timeout=60)
        assert broken.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

    home = tmp_path / "registry"
    leftovers = list((home / "blobs" / "tmp").iterdir())
    assert leftovers, "the killed upload should have left a temp file behind"
    registry_process.start()
    assert list((home / "blobs" / "tmp").iterdir()) == [], "start-up sweeps unfinished uploads"
    assert not (home / "blobs" / "sha256" / digest[:2] / digest).exists()
    with sqlite3.connect(home / "registry.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    artifact = tmp_path / "model.bin"
    artifact.write_bytes(payload)
    async with open_channel(registry_process.address) as channel:
        client = RegistryClient(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await client.stub.GetVersion(pb.GetVersionRequest(model="big", version=1))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        created = await client.upload_version(
            NewVersion("big", [ArtifactFile("model.bin", artifact)], idempotency_key="retry-1")
        )
        assert created.created and created.version.version == 1
        fetched = await client.download_artifact("big", 1, "model.bin", tmp_path / "back.bin")
        assert fetched.sha256 == digest
        assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == digest
    assert registry_process.terminate() == 0
