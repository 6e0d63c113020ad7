"""Fixtures for the registry: settings -> real grpc.aio server -> stub, and upload helpers."""

from __future__ import annotations

import hashlib

import pytest

from services.registry import entities as e
from services.registry.settings import RegistrySettings
from shared.channels import open_channel
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
