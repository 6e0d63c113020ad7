"""Replicas of the stateful services on one real PostgreSQL and one real S3 server
(SeaweedFS): two registry and two data processes, clients spreading their calls over both
(gRPC's round robin over the address list), a random replica SIGKILLed ten times under
upload, alias and ingest load, and restarted. Afterwards: every acknowledged write is
there, every blob reads back whole, no idempotency key made two versions, and nothing
partial is in the bucket."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from cli.postgres import PostgresServer
from cli.seaweedfs import LocalObjectStore
from services.registry.client import ArtifactFile, NewVersion, RegistryClient
from shared.channels import open_channel
from shared.retries import TRANSIENT_CODES
from shared.tensors import from_tensor
from tests.data.conftest import numeric_table, upload
from tests.scale.test_object_storage import assert_every_object_whole
from tests.support.processes import ServiceProcess, service_process
from tfmesh.data.v1 import data_pb2 as dpb
from tfmesh.data.v1 import data_pb2_grpc
from tfmesh.registry.v1 import registry_pb2 as rpb
from tfmesh.registry.v1 import registry_pb2_grpc

T = TypeVar("T")
MODEL = "replicated"
KILLS = 10


@dataclass
class Fleet:
    registries: list[ServiceProcess]
    data: list[ServiceProcess]
    prefix: str

    @property
    def processes(self) -> list[ServiceProcess]:
        return [*self.registries, *self.data]

    @staticmethod
    def addresses(replicas: list[ServiceProcess]) -> str:
        return ",".join(replica.address for replica in replicas)


@dataclass
class Acknowledged:
    versions: dict[str, tuple[int, str]] = field(default_factory=dict)  # key -> (version, sha)
    aliases: list[int] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    retries: int = 0


@pytest.fixture
def fleet(tmp_path: Path, postgres_server: PostgresServer, object_store: LocalObjectStore) -> Fleet:
    registry_db, data_db = postgres_server.create_database(), postgres_server.create_database()
    prefix = os.environ["TFMESH_BLOB_URL"]  # this test's prefix of the bucket
    registries = [
        service_process(
            "services.registry.server",
            "TFMESH_REGISTRY_",
            tmp_path / f"registry-{i}",
            TFMESH_REGISTRY_DATABASE_URL=postgres_server.url(registry_db),
            TFMESH_REGISTRY_BLOB_URL=f"{prefix}/registry",
        )
        for i in range(2)
    ]
    data = [
        service_process(
            "services.data.server",
            "TFMESH_DATA_",
            tmp_path / f"data-{i}",
            TFMESH_DATA_DATABASE_URL=postgres_server.url(data_db),
            TFMESH_DATA_BLOB_URL=f"{prefix}/data",
            TFMESH_DATA_REGISTRY_ADDR=Fleet.addresses(registries),
            TFMESH_DATA_SHARD_BYTES="4096",
        )
        for i in range(2)
    ]
    for replica in [*registries, *data]:
        replica.log_path.parent.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(registries, data, prefix.removeprefix(f"s3://{object_store.bucket}/"))
    try:
        for replica in fleet.processes:
            replica.start()
        yield fleet
    finally:
        for replica in fleet.processes:
            replica.stop_quietly()
        postgres_server.drop_database(registry_db)
        postgres_server.drop_database(data_db)


async def until_acknowledged(call: Callable[[], Awaitable[T]], acked: Acknowledged) -> T:
    """Repeat a write that is safe to repeat until a replica acknowledges it."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() not in TRANSIENT_CODES or time.monotonic() > deadline:
                raise
            acked.retries += 1
            await asyncio.sleep(0.1)


async def upload_versions(
    channel: grpc.aio.Channel, worker: int, acked: Acknowledged, stop: asyncio.Event, root: Path
) -> None:
    client = RegistryClient(channel, deadline_s=20)
    rng = random.Random(worker)
    number = 0
    while not stop.is_set():
        number += 1
        key = f"worker-{worker}-{number}"
        # Every fifth artifact is larger than a part: a multipart upload to the bucket.
        size = 9 * 1024 * 1024 if number % 5 == 0 else rng.randint(1, 300_000)
        artifact = root / f"{key}.bin"
        artifact.write_bytes(rng.randbytes(size))
        new = NewVersion(MODEL, [ArtifactFile("weights.bin", artifact)], idempotency_key=key)
        answer = await until_acknowledged(lambda new=new: client.upload_version(new), acked)
        await asyncio.sleep(0.3)
        acked.versions[key] = (
            answer.version.version,
            hashlib.sha256(artifact.read_bytes()).hexdigest(),
        )
        artifact.unlink()


async def move_alias(channel: grpc.aio.Channel, acked: Acknowledged, stop: asyncio.Event) -> None:
    stub = registry_pb2_grpc.RegistryServiceStub(channel)
    while not stop.is_set():
        await asyncio.sleep(0.2)
        if not acked.versions:
            continue
        version = max(v for v, _ in acked.versions.values())
        request = rpb.SetAliasRequest(
            model=MODEL, alias="production", version=version, override_gate=True, reason="load"
        )
        await until_acknowledged(lambda r=request: stub.SetAlias(r, timeout=10), acked)
        acked.aliases.append(version)


async def ingest(
    channel: grpc.aio.Channel, worker: int, acked: Acknowledged, stop: asyncio.Event
) -> None:
    stub = data_pb2_grpc.DataServiceStub(channel)
    seed = worker * 100_000
    while not stop.is_set():
        seed += 1
        _, _, content = numeric_table(300, features=3, classes=3, seed=seed)
        answer = await until_acknowledged(
            lambda c=content: upload(stub, c, dataset="replicated"), acked
        )
        acked.datasets.append(answer.version.name)


def kill_and_restart(fleet: Fleet, rng: random.Random) -> str:
    victim = rng.choice(fleet.processes)
    victim.kill()
    time.sleep(0.3)
    victim.start()
    return victim.module


async def test_ten_replica_kills_lose_no_acknowledged_write(
    fleet: Fleet, object_store: LocalObjectStore, tmp_path: Path
) -> None:
    acked = Acknowledged()
    stop = asyncio.Event()
    rng = random.Random(7)
    async with (
        open_channel(Fleet.addresses(fleet.registries)) as registry,
        open_channel(Fleet.addresses(fleet.data)) as data,
    ):
        load = [
            asyncio.create_task(upload_versions(registry, 1, acked, stop, tmp_path)),
            asyncio.create_task(upload_versions(registry, 2, acked, stop, tmp_path)),
            asyncio.create_task(move_alias(registry, acked, stop)),
            asyncio.create_task(ingest(data, 1, acked, stop)),
            asyncio.create_task(ingest(data, 2, acked, stop)),
        ]
        killed = []
        for _ in range(KILLS):
            await asyncio.sleep(1.0)
            killed.append(await asyncio.to_thread(kill_and_restart, fleet, rng))
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*load)
        assert {"services.registry.server", "services.data.server"} <= set(killed)
        assert acked.retries > 0, "no write met a killed replica"
        assert len(acked.versions) >= 10 and len(acked.aliases) >= 5
        assert len(acked.datasets) >= 5

        stub = registry_pb2_grpc.RegistryServiceStub(registry)
        listed = await stub.ListVersions(rpb.ListVersionsRequest(model=MODEL, page_size=1000))
        numbers = sorted(v.version for v in listed.versions)
        # One version per idempotency key, however often its upload was retried.
        assert numbers == sorted(v for v, _ in acked.versions.values())
        client = RegistryClient(registry)
        for key, (version, sha) in acked.versions.items():
            copy = tmp_path / f"check-{key}"
            artifact = await client.download_artifact(MODEL, version, "weights.bin", copy)
            assert artifact.sha256 == sha
            copy.unlink()
        aliases = await stub.ListAliases(rpb.ListAliasesRequest(model=MODEL))
        assert [(a.name, a.version) for a in aliases.aliases] == [("production", acked.aliases[-1])]

        data_stub = data_pb2_grpc.DataServiceStub(data)
        for name in set(acked.datasets):
            version = (
                await data_stub.GetDatasetVersion(dpb.GetDatasetVersionRequest(version=name))
            ).version
            rows = 0
            async for batch in data_stub.ReadBatches(
                dpb.ReadBatchesRequest(version=name, split=dpb.SPLIT_TRAIN)
            ):
                rows += len(from_tensor(batch.labels, "labels"))
            assert rows == version.rows.train
    assert assert_every_object_whole(object_store, fleet.prefix) > len(acked.versions)
