"""Fixtures for the registry: settings -> core, and settings -> real grpc.aio server -> stub."""

from __future__ import annotations

import hashlib

import pytest

from services.registry import entities as e
from services.registry.core import Registry
from services.registry.server import start_registry
from services.registry.settings import RegistrySettings
from shared.blobstore import BlobStore
from shared.channels import open_channel
from shared.db import make_engine
from shared.telemetry import setup_telemetry
from tfmesh.registry.v1 import registry_pb2 as pb
from tfmesh.registry.v1 import registry_pb2_grpc

ACCURACY_RULE = e.PromotionRule("accuracy", 0.01, True)


@pytest.fixture
def registry(tmp_path) -> Registry:
    """A core on SQLite, for tests that need no second database."""
    return Registry(
        make_engine(f"sqlite+pysqlite:///{tmp_path / 'registry.db'}"),
        BlobStore(tmp_path / "blobs"),
        default_rule=ACCURACY_RULE,
        max_artifact_bytes=10 * 1024 * 1024,
    )


@pytest.fixture
def settings(tmp_path) -> RegistrySettings:
    return RegistrySettings(
        home=tmp_path,
        port=0,
        max_artifact_bytes=10 * 1024 * 1024,
        default_min_improvement=0.01,
        watch_poll_interval_s=0.2,
    )


@pytest.fixture
async def server(settings):
    telemetry = setup_telemetry("registry-test", configure_logging=False)
    running = await start_registry(settings, telemetry)
    yield running
    await running.stop(0)


@pytest.fixture
async def channel(server):
    async with open_channel(server.address) as channel:
        yield channel


@pytest.fixture
def stub(channel) -> registry_pb2_grpc.RegistryServiceStub:
    return registry_pb2_grpc.RegistryServiceStub(channel)


def header_for(model: str, blobs: dict[str, bytes], **fields) -> pb.UploadVersionHeader:
    return pb.UploadVersionHeader(
        model=model,
        artifacts=[
            pb.Artifact(name=name, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
            for name, data in blobs.items()
        ],
        **fields,
    )


def upload_messages(header: pb.UploadVersionHeader, blobs: dict[str, bytes], chunk: int = 7):
    """The request stream of one upload; small chunks so artifacts span chunk boundaries."""
    messages = [pb.UploadVersionRequest(header=header)]
    data = b"".join(blobs.values())
    messages += [
        pb.UploadVersionRequest(chunk=data[i : i + chunk]) for i in range(0, len(data), chunk)
    ]
    return messages


async def upload(stub, model: str, blobs: dict[str, bytes], **fields) -> pb.UploadVersionResponse:
    header = header_for(model, blobs, create_model=True, **fields)

    async def stream():
        for message in upload_messages(header, blobs):
            yield message

    return await stub.UploadVersion(stream())
