"""Fixtures for the registry: settings -> real grpc.aio server -> stub, the core on each
store with no sockets, and upload helpers."""

from __future__ import annotations

import hashlib

import pytest

from services.registry import entities as e
from services.registry.core import Registry
from services.registry.settings import RegistrySettings
from shared.blobstore import LocalBlobStore
from shared.channels import open_channel
from shared.db import make_engine
from tests.support.registry import registry_settings, running_registry
from tfmesh.registry.v1 import registry_pb2 as pb
from tfmesh.registry.v1 import registry_pb2_grpc

ACCURACY_RULE = e.PromotionRule("accuracy", 0.01, True)


@pytest.fixture
def settings(tmp_path) -> RegistrySettings:
    return registry_settings(tmp_path)


@pytest.fixture
async def server(settings):
    async with running_registry(settings) as running:
        yield running


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


@pytest.fixture
def core(database_url, tmp_path) -> Registry:
    engine = make_engine(database_url)
    yield Registry(
        engine,
        LocalBlobStore(tmp_path / "blobs"),
        default_rule=ACCURACY_RULE,
        max_artifact_bytes=1024 * 1024,
    )
    engine.dispose()


def add_version(core: Registry, model: str, data: bytes, **fields) -> tuple[e.ModelVersion, bool]:
    spec = e.ArtifactSpec("model.keras", len(data), hashlib.sha256(data).hexdigest())
    upload = core.begin_upload(e.UploadHeader(model, [spec], create_model=True, **fields))
    if upload.existing is not None:
        return upload.existing, False
    upload.write(data)
    return upload.finish()
