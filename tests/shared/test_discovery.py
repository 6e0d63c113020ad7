"""`shared.discovery`: static addresses, and Consul registration and resolution through real
py-consul against the fake agent, with real gRPC health checks deciding what is passing:
blocking queries that answer when the set changes, and a registry instance killed under a
client that reads through Consul, without a failed idempotent call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import consul
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.registry.settings import RegistrySettings
from shared.channels import open_channel, peer_channel
from shared.discovery import ConsulDiscovery, ConsulWatch
from shared.errors import Unavailable
from shared.retries import retry_idempotent
from tests.shared.conftest import StartServer
from tests.support.fake_consul import FakeConsul
from tests.support.probe import PROBE_SERVICE, register_probe
from tests.support.processes import service_process
from tfmesh.registry.v1 import registry_pb2, registry_pb2_grpc

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def fake_consul() -> Iterator[FakeConsul]:
    agent = FakeConsul()
    agent.start()
    yield agent
    agent.stop()


def discovery_for(agent: FakeConsul) -> ConsulDiscovery:
    return ConsulDiscovery(consul.Consul(host="127.0.0.1", port=agent.port))


async def test_registered_service_resolves_to_a_working_address(
    serve: StartServer, fake_consul: FakeConsul
) -> None:
    running = await serve(register_probe(), [PROBE_SERVICE])
    own = discovery_for(fake_consul)
    service_id = await own.register("registry", "127.0.0.1", running.port, interval="1s")

    registered = fake_consul.services[service_id]
    assert (registered.name, registered.port) == ("registry", running.port)
    assert registered.grpc_target == f"127.0.0.1:{running.port}"

    peer = discovery_for(fake_consul)
    address = await peer.resolve("registry")
    assert address == f"127.0.0.1:{running.port}"
    async with open_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=PROBE_SERVICE), timeout=5
        )
    assert answer.status == SERVING

    await own.deregister_all()
    assert fake_consul.services == {}
    with pytest.raises(Unavailable, match="registry"):
        await peer.resolve("registry")


async def test_instance_that_is_not_serving_is_not_resolved(
    serve: StartServer, fake_consul: FakeConsul
) -> None:
    running = await serve(register_probe(), [PROBE_SERVICE])
    await discovery_for(fake_consul).register("data", "127.0.0.1", running.port)
    peer = discovery_for(fake_consul)

    await running.health.set("", NOT_SERVING)
    with pytest.raises(Unavailable):
        await peer.resolve("data")

    await running.health.set("", SERVING)
    assert await peer.resolve("data") == f"127.0.0.1:{running.port}"


async def test_stopped_server_no_longer_resolves(
    serve: StartServer, fake_consul: FakeConsul
) -> None:
    running = await serve(register_probe(), [PROBE_SERVICE])
    await discovery_for(fake_consul).register("training", "127.0.0.1", running.port)
    peer = discovery_for(fake_consul)
    assert await peer.resolve("training") == f"127.0.0.1:{running.port}"

    await running.stop(0)
    # Still registered (no deregistration on a crash), but its health check now fails.
    assert len(fake_consul.services) == 1
    with pytest.raises(Unavailable):
        await peer.resolve("training")


async def test_resolution_spreads_over_passing_instances_only(
    serve: StartServer, fake_consul: FakeConsul
) -> None:
    first = await serve(register_probe(), [PROBE_SERVICE])
    second = await serve(register_probe(), [PROBE_SERVICE])
    third = await serve(register_probe(), [PROBE_SERVICE])
    own = discovery_for(fake_consul)
    for running in (first, second, third):
        await own.register("inference", "127.0.0.1", running.port)
    await third.health.set("", NOT_SERVING)

    peer = discovery_for(fake_consul)
    seen = {await peer.resolve("inference") for _ in range(24)}
    assert seen == {first.address, second.address}


async def test_from_env_uses_consul_http_addr(
    monkeypatch: pytest.MonkeyPatch, serve: StartServer, fake_consul: FakeConsul
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
    assert ConsulDiscovery.from_env() is None

    monkeypatch.setenv("CONSUL_HTTP_ADDR", fake_consul.address)
    discovery = ConsulDiscovery.from_env()
    assert discovery is not None
    running = await serve(register_probe(), [PROBE_SERVICE])
    await discovery.register("gateway", "127.0.0.1", running.port)
    assert [s.name for s in fake_consul.services.values()] == ["gateway"]
    assert await discovery.resolve("gateway") == running.address


async def test_a_blocking_query_answers_when_the_set_changes(
    serve: StartServer, fake_consul: FakeConsul
) -> None:
    running = await serve(register_probe(), [PROBE_SERVICE])
    watch = ConsulWatch(consul.Consul(host="127.0.0.1", port=fake_consul.port), "data", "5s")
    await watch.refresh()
    assert watch.addresses == []
    waiting = asyncio.ensure_future(watch.refresh())
    await asyncio.sleep(0.3)
    assert not waiting.done(), "a blocking query returns only when the index moves"
    await discovery_for(fake_consul).register("data", "127.0.0.1", running.port, interval="1s")
    await asyncio.wait_for(waiting, 5)
    assert watch.addresses == [f"127.0.0.1:{running.port}"]
    # The interval check finds it NOT_SERVING and the next blocking answer drops it.
    await running.health.set("", NOT_SERVING)
    await asyncio.wait_for(watch.refresh(), 5)
    assert watch.addresses == []


async def test_a_killed_instance_costs_no_idempotent_call(
    tmp_path, fake_consul: FakeConsul, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two registry processes on one database, each registering itself in the agent.
    instances = [
        service_process(
            "services.registry.server",
            "TFMESH_REGISTRY_",
            tmp_path,
            CONSUL_HTTP_ADDR=fake_consul.address,
        )
        for _ in range(2)
    ]
    try:
        for instance in instances:
            instance.start()
        deadline = time.monotonic() + 10
        while len(fake_consul.services) < 2:
            assert time.monotonic() < deadline, "the instances did not register"
            await asyncio.sleep(0.1)
        monkeypatch.setenv("TFMESH_DISCOVERY", "consul")
        monkeypatch.setenv("CONSUL_HTTP_ADDR", fake_consul.address)
        channel = peer_channel("registry", "unused:0", RegistrySettings(), None)
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        await channel.wait_ready(5)  # type: ignore[attr-defined]
        await stub.CreateModel(registry_pb2.CreateModelRequest(name="kept"), timeout=5)

        async def read(_: int) -> str:
            reply = await retry_idempotent(
                lambda t: stub.GetModel(registry_pb2.GetModelRequest(name="kept"), timeout=t),
                deadline_s=10,
            )
            return reply.model.name

        answers = [await read(i) for i in range(20)]
        assert len(channel._channels) == 2, "calls went to both instances in turn"
        instances[0].kill()
        answers += [await read(i) for i in range(60)]
        assert answers == ["kept"] * 80
        await channel.close()
    finally:
        for instance in instances:
            instance.stop_quietly()
