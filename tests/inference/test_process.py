"""The inference service as processes (a supervisor, a model owner and two front ends)
following a registry process: hot swap under gRPC and REST load spread over both front
ends, the canary's share over both protocols, and a registry that dies (SIGKILL) and
comes back."""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import pytest

from services.registry.client import ArtifactFile, NewVersion, RegistryClient
from shared.tensors import to_tensor
from tests.inference.models import digits_rows
from tests.support.processes import service_process
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc
from tfmesh.registry.v1 import registry_pb2 as rpb
from tfmesh.registry.v1 import registry_pb2_grpc

MODEL = "digits"


async def upload_versions(address: str, artifacts) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        client = RegistryClient(channel)
        for version, accuracy in ((1, 0.90), (2, 0.95), (1, 0.96)):
            files = [ArtifactFile(name, path) for name, path in artifacts[version].items()]
            await client.upload_version(NewVersion(MODEL, files, metrics={"accuracy": accuracy}))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, artifacts):
    """A registry process with versions 1-3 of `digits` (3 has v1's files), production at 1,
    and an inference process following it."""
    home = tmp_path_factory.mktemp("stack")
    registry = service_process(
        "services.registry.server",
        "TFMESH_REGISTRY_",
        home,
        TFMESH_REGISTRY_WATCH_POLL_INTERVAL_S="0.2",
    ).start()
    asyncio.run(upload_versions(registry.address, artifacts))
    set_alias(registry.address, "production", 1)
    inference = service_process(
        "services.inference.server",
        "TFMESH_INFERENCE_",
        home,
        TFMESH_INFERENCE_MODELS=MODEL,
        TFMESH_INFERENCE_REGISTRY_ADDR=registry.address,
        TFMESH_INFERENCE_REGISTRY_MAX_BACKOFF_S="0.5",
        TFMESH_INFERENCE_MAX_BATCH_SIZE="16",
        TFMESH_INFERENCE_FRONTENDS="2",
    ).start(timeout_s=120)
    wait_for_labels(inference.address, {"production": 1})
    yield registry, inference
    inference.stop_quietly()
    registry.stop_quietly()


def set_alias(address: str, alias: str, version: int, weight: int = 0) -> None:
    with grpc.insecure_channel(address) as channel:
        registry_pb2_grpc.RegistryServiceStub(channel).SetAlias(
            rpb.SetAliasRequest(
                model=MODEL,
                alias=alias,
                version=version,
                traffic_weight=weight,
                override_gate=True,
                reason="inference process test",
            ),
            timeout=10,
        )


def delete_alias(address: str, alias: str) -> None:
    with grpc.insecure_channel(address) as channel:
        registry_pb2_grpc.RegistryServiceStub(channel).DeleteAlias(
            rpb.DeleteAliasRequest(model=MODEL, alias=alias), timeout=10
        )


def model_status(address: str) -> pb.ModelStatus:
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return stub.GetModelStatus(pb.GetModelStatusRequest(model=MODEL), timeout=5).status


def labels(status: pb.ModelStatus) -> dict[str, int]:
    return {label: v.version for v in status.versions for label in v.labels}


def wait_for_labels(address: str, expected: dict[str, int], timeout_s: float = 60) -> float:
    """Poll until the served labels are `expected`; returns the time it was first seen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = model_status(address)
        if labels(status) == expected:
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"labels stayed {labels(status)}, wanted {expected}: {status}")


def ensure_state(stack, production: int, canary: tuple[int, int] | None = None) -> None:
    registry, inference = stack
    set_alias(registry.address, "production", production)
    expected = {"production": production}
    if canary is None:
        try:
            delete_alias(registry.address, "canary")
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.NOT_FOUND
    else:
        set_alias(registry.address, "canary", *canary)
        expected["canary"] = canary[0]
    wait_for_labels(inference.address, expected)


def connections(address: str, count: int) -> list[grpc.aio.Channel]:
    """Channels that each open a connection of their own, so calls spread over the front
    ends (the kernel hands each connection to one of them)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    return [grpc.aio.insecure_channel(address, options=options) for _ in range(count)]


async def load(address: str, clients: int, stop: asyncio.Event, log: list) -> None:
    """`clients` closed-loop clients, four to a connection, sending one-row unpinned
    requests until `stop`."""
    request = pb.PredictRequest(model=MODEL, inputs={"x": to_tensor(digits_rows(1))})
    channels = connections(address, max(1, clients // 4))

    async def client(channel: grpc.aio.Channel) -> None:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        while not stop.is_set():
            started = time.monotonic()
            try:
                answer = await stub.Predict(request, timeout=10)
                log.append((started, answer.version, None))
            except grpc.aio.AioRpcError as error:
                log.append((started, 0, error.code()))

    try:
        await asyncio.gather(*(client(channels[i % len(channels)]) for i in range(clients)))
    finally:
        for channel in channels:
            await channel.close()


async def test_hot_swap_under_load_fails_nothing_and_ends_on_v2(stack):
    ensure_state(stack, production=1)
    registry, inference = stack
    stop = asyncio.Event()
    log: list = []
    loading = asyncio.create_task(load(inference.address, 16, stop, log))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(set_alias, registry.address, "production", 2)
    swapped_at = await asyncio.to_thread(wait_for_labels, inference.address, {"production": 2})
    await asyncio.sleep(1.0)
    stop.set()
    await loading
    failures = [entry for entry in log if entry[2] is not None]
    assert not failures, failures[:5]
    before = [version for started, version, _ in log if started < swapped_at]
    after = [version for started, version, _ in log if started > swapped_at]
    assert 1 in before and len(after) > 50
    assert set(after) == {2}
    # Each front end routes with its own copy of the catalog, which the owner sends to all of
    # them at once: they switch within moments of each other, not at the same instant.
    first_v2 = min(started for started, version, _ in log if version == 2)
    assert {version for started, version, _ in log if started > first_v2 + 0.5} == {2}
    status = model_status(inference.address)
    states = {v.version: v.state for v in status.versions}
    assert states[1] == pb.VersionStatus.STATE_END


async def rest_load(url: str, clients: int, stop: asyncio.Event, log: list) -> None:
    """`clients` closed-loop REST clients (KServe v2 JSON, one row, unpinned), one
    connection each, until `stop`; logs (start, version or 0, error or None)."""
    body = {
        "inputs": [
            {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": digits_rows(1).tolist()}
        ]
    }

    async def client() -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as http:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    answer = await http.post(f"/v2/models/{MODEL}/infer", json=body)
                except httpx.HTTPError as error:
                    log.append((started, 0, type(error).__name__))
                    continue
                if answer.status_code == 200:
                    log.append((started, int(answer.json()["model_version"]), None))
                else:
                    log.append((started, 0, answer.status_code))

    await asyncio.gather(*(client() for _ in range(clients)))


async def test_hot_swap_under_rest_load_fails_nothing(stack):
    ensure_state(stack, production=2)
    registry, inference = stack
    stop = asyncio.Event()
    log: list = []
    loading = asyncio.create_task(rest_load(inference.http_url, 8, stop, log))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(set_alias, registry.address, "production", 3)
    swapped_at = await asyncio.to_thread(wait_for_labels, inference.address, {"production": 3})
    await asyncio.to_thread(set_alias, registry.address, "canary", 2, 50)
    await asyncio.to_thread(wait_for_labels, inference.address, {"production": 3, "canary": 2})
    await asyncio.sleep(1.0)
    stop.set()
    await loading
    failures = [entry for entry in log if entry[2] is not None]
    assert not failures, failures[:5]
    assert {version for started, version, _ in log if started < swapped_at} >= {2}
    assert {version for started, version, _ in log if started > swapped_at + 1.0} == {2, 3}


async def test_canary_weight_20_serves_15_to_25_percent(stack):
    ensure_state(stack, production=2, canary=(3, 20))
    _, inference = stack
    assert model_status(inference.address).canary_weight == 20
    request = pb.PredictRequest(model=MODEL, inputs={"x": to_tensor(digits_rows(1))})
    channels = connections(inference.address, 4)
    semaphore = asyncio.Semaphore(16)

    async def one(index: int) -> int:
        stub = inference_pb2_grpc.InferenceServiceStub(channels[index % len(channels)])
        async with semaphore:
            return (await stub.Predict(request, timeout=10)).version

    try:
        versions = await asyncio.gather(*(one(i) for i in range(2000)))
    finally:
        for channel in channels:
            await channel.close()
    share = versions.count(3) / len(versions)
    assert set(versions) == {2, 3}
    assert 0.15 <= share <= 0.25, share
    pinned = pb.PredictRequest(model=MODEL, version=2, inputs=request.inputs)
    async with grpc.aio.insecure_channel(inference.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        assert {(await stub.Predict(pinned)).version for _ in range(50)} == {2}


async def test_with_the_registry_down_models_keep_serving_and_changes_resume(stack):
    ensure_state(stack, production=2, canary=(3, 20))
    registry, inference = stack
    registry.kill()
    request = pb.PredictRequest(
        model=MODEL, label="production", inputs={"x": to_tensor(digits_rows(2))}
    )
    async with grpc.aio.insecure_channel(inference.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for _ in range(3):
            answers = await asyncio.gather(*(stub.Predict(request, timeout=5) for _ in range(50)))
            assert {a.version for a in answers} == {2}
            await asyncio.sleep(0.5)
    assert labels(model_status(inference.address)) == {"production": 2, "canary": 3}
    registry.start()
    await asyncio.to_thread(delete_alias, registry.address, "canary")
    await asyncio.to_thread(wait_for_labels, inference.address, {"production": 2})
    assert model_status(inference.address).canary_weight == 0


async def test_a_version_that_cannot_load_keeps_production_where_it_was(stack, tmp_path):
    ensure_state(stack, production=2)
    registry, inference = stack
    broken = tmp_path / "saved_model.tar"
    broken.write_bytes(b"not a tar archive")
    async with grpc.aio.insecure_channel(registry.address) as channel:
        uploaded = await RegistryClient(channel).upload_version(
            NewVersion(MODEL, [ArtifactFile("saved_model.tar", broken)])
        )
    version = uploaded.version.version
    set_alias(registry.address, "production", version)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        records = {v.version: v for v in model_status(inference.address).versions}
        if version in records and records[version].state == pb.VersionStatus.STATE_FAILED:
            break
        await asyncio.sleep(0.05)
    assert records[version].reason.startswith("load failed"), records[version]
    assert labels(model_status(inference.address)) == {"production": 2}
    request = pb.PredictRequest(model=MODEL, inputs={"x": to_tensor(digits_rows(1))})
    with grpc.insecure_channel(inference.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        assert stub.Predict(request, timeout=5).version == 2
