"""The data and registry services keeping their blobs in a real S3 server (SeaweedFS on
loopback): uploads and reads through the bucket, corruption answered with DATA_LOSS, and
an object store stopped for 10 s under uploads: every upload completes or fails with a
retryable code, nothing partial is ever readable, health says NOT_SERVING meanwhile; and
training reading a version's Parquet files straight from the bucket."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from cli.seaweedfs import LocalObjectStore
from services.data.server import start_data
from services.data.settings import DataSettings
from services.registry.client import ArtifactFile, NewVersion, RegistryClient
from services.training.data_service_source import DataServiceSource
from shared.channels import open_channel
from shared.telemetry import setup_telemetry
from tests.data.conftest import numeric_table, upload
from tests.support.registry import registry_settings, running_registry
from tests.support.status import expect_error
from tfmesh.data.v1 import data_pb2 as pb
from tfmesh.data.v1 import data_pb2_grpc
from tfmesh.registry.v1 import registry_pb2

TINY = 4096
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


def bucket_objects(store: LocalObjectStore, prefix: str) -> dict[str, bytes]:
    client = store.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return {key: client.get_object(Bucket=store.bucket, Key=key)["Body"].read() for key in keys}


def assert_every_object_whole(store: LocalObjectStore, prefix: str) -> int:
    """Every object under `prefix` holds exactly the content its name is the digest of."""
    objects = bucket_objects(store, prefix)
    for key, content in objects.items():
        assert key.rsplit("/", 1)[1] == hashlib.sha256(content).hexdigest(), key
    return len(objects)


def blob_prefix(service: str) -> str:
    """Where a service keeps its blobs under this test's TFMESH_BLOB_URL."""
    return os.environ["TFMESH_BLOB_URL"].removeprefix("s3://tfmesh/") + f"/{service}/"


async def health(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)).status


@contextlib.asynccontextmanager
async def bucket_data_service(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    """A data service on this test's bucket prefix, with tiny blocks and shards; a channel
    to it."""
    settings = DataSettings(home=tmp_path, port=0, parse_block_bytes=TINY, shard_bytes=TINY)
    running = await start_data(settings, setup_telemetry("data-test", configure_logging=False))
    try:
        async with open_channel(running.address) as channel:
            yield channel
    finally:
        await running.stop(0)


async def test_data_versions_live_in_the_bucket_and_corruption_is_data_loss(
    object_store: LocalObjectStore, tmp_path: Path
) -> None:
    async with bucket_data_service(tmp_path) as channel:
        stub = data_pb2_grpc.DataServiceStub(channel)
        x, y, content = numeric_table(300, features=3, classes=3, seed=5)
        version = (await upload(stub, content, dataset="lake")).version
        shards = await stub.GetShards(pb.GetShardsRequest(version=version.name))
        assert shards.shards and all(s.uri.startswith("s3://tfmesh/") for s in shards.shards)
        rows = 0
        async for batch in stub.ReadBatches(
            pb.ReadBatchesRequest(version=version.name, split=pb.SPLIT_TRAIN)
        ):
            rows += len(np.frombuffer(batch.labels.content, dtype=np.int64))
        assert rows == version.rows.train
        # Nothing of the service's is on its own disk beyond the database.
        assert not (tmp_path / "data" / "blobs").exists()
        assert assert_every_object_whole(object_store, blob_prefix("data")) >= len(shards.shards)

        first = shards.shards[0]
        key = first.uri.removeprefix("s3://tfmesh/")
        object_store.client().put_object(Bucket="tfmesh", Key=key, Body=b"rotten")
        error = await expect_error(
            _read_all(stub, version.name, first.split), grpc.StatusCode.DATA_LOSS
        )
        assert first.sha256 in (error.details() or "")
        assert (await health(channel)) == health_pb2.HealthCheckResponse.SERVING


async def test_training_reads_a_versions_files_from_the_bucket(
    object_store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with bucket_data_service(tmp_path) as channel:
        stub = data_pb2_grpc.DataServiceStub(channel)
        _, _, content = numeric_table(400, features=4, classes=3, seed=8)
        version = (await upload(stub, content, dataset="lake")).version
        streamed = await DataServiceSource(channel, direct_reads=False).load(version.name)
        before = split_reads("files")
        direct = await DataServiceSource(channel).load(version.name)
        assert split_reads("files") == before + 3
        for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            a, b = getattr(direct, name), getattr(streamed, name)
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        # Credentials the bucket refuses: read through the data service, same rows.
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
        before = split_reads("service")
        refused = await DataServiceSource(channel).load(version.name)
        assert split_reads("service") == before + 3
        np.testing.assert_array_equal(refused.x_train, streamed.x_train)


def split_reads(path: str) -> float:
    labels = {"path": path}
    return REGISTRY.get_sample_value("tfmesh_training_dataset_split_reads_total", labels) or 0.0


async def _read_all(stub, version: str, split) -> None:
    async for _ in stub.ReadBatches(pb.ReadBatchesRequest(version=version, split=split)):
        pass


async def test_registry_artifacts_live_in_the_bucket(
    object_store: LocalObjectStore, tmp_path: Path
) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(300_000))
    async with (
        running_registry(registry_settings(tmp_path / "home")) as registry,
        open_channel(registry.address) as channel,
    ):
        client = RegistryClient(channel)
        created = await client.upload_version(
            NewVersion("lake-model", [ArtifactFile("weights.bin", weights)])
        )
        version = created.version.version
        copy = tmp_path / "copy.bin"
        await client.download_artifact("lake-model", version, "weights.bin", copy)
        assert copy.read_bytes() == weights.read_bytes()
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        key = f"{blob_prefix('registry')}sha256/{digest[:2]}/{digest}"
        object_store.client().put_object(Bucket="tfmesh", Key=key, Body=b"x" * 300_000)
        request = registry_pb2.DownloadArtifactRequest(
            model="lake-model", version=version, artifact="weights.bin"
        )

        async def download() -> None:
            async for _ in client.stub.DownloadArtifact(request, timeout=10):
                pass

        error = await expect_error(download(), grpc.StatusCode.DATA_LOSS)
        assert digest in (error.details() or "")


async def test_an_object_store_away_for_10_s_loses_no_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server of its own: this test stops it.
    store = LocalObjectStore(tmp_path / "seaweedfs")
    store.start()
    try:
        for name, value in store.environment("outage").items():
            monkeypatch.setenv(name, value)
        settings = DataSettings(
            home=tmp_path / "home",
            port=0,
            parse_block_bytes=TINY,
            shard_bytes=TINY,
            blob_check_interval_s=0.5,
        )
        running = await start_data(settings, setup_telemetry("data-test", configure_logging=False))
        try:
            async with open_channel(running.address) as channel:
                await _uploads_across_an_outage(store, channel)
        finally:
            await running.stop(0)
    finally:
        store.stop()


async def _uploads_across_an_outage(store: LocalObjectStore, channel: grpc.aio.Channel) -> None:
    stub = data_pb2_grpc.DataServiceStub(channel)
    outcomes: dict[str, list[str]] = {"ok": [], "retryable": []}
    stop_uploading = asyncio.Event()

    async def keep_uploading() -> None:
        seed = 0
        while not stop_uploading.is_set():
            seed += 1
            _, _, content = numeric_table(200, features=2, classes=2, seed=seed)
            try:
                answer = await upload(stub, content, dataset="outage")
                outcomes["ok"].append(answer.version.name)
            except grpc.aio.AioRpcError as error:
                assert error.code() in RETRYABLE, (error.code(), error.details())
                outcomes["retryable"].append(error.details() or "")
                await asyncio.sleep(0.2)

    uploader = asyncio.create_task(keep_uploading())
    await asyncio.sleep(2)
    await asyncio.to_thread(store.stop)
    stopped_at = time.monotonic()
    not_serving = False
    while time.monotonic() - stopped_at < 10:
        if await health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING:
            not_serving = True
        await asyncio.sleep(0.5)
    await asyncio.to_thread(store.start)
    back_at = time.monotonic()
    while await health(channel) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() - back_at < 20, "health never came back to SERVING"
        await asyncio.sleep(0.5)
    ok_before = len(outcomes["ok"])
    while len(outcomes["ok"]) < ok_before + 2:
        assert time.monotonic() - back_at < 60, "no upload completed after the store came back"
        await asyncio.sleep(0.2)
    stop_uploading.set()
    await uploader

    assert not_serving, "health never said NOT_SERVING while the store was away"
    assert outcomes["retryable"], "no upload was attempted while the store was away"
    # Every acknowledged version reads back whole; every object in the bucket is whole.
    for name in outcomes["ok"]:
        await _read_all(stub, name, pb.SPLIT_TRAIN)
    assert assert_every_object_whole(store, "outage/data/") > 0
