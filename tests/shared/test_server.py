"""`shared.server` bootstrap on real servers: health, reflection, /metrics, message limits,
TLS and mTLS, in-process stop, and graceful SIGTERM shutdown of a real subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client import REGISTRY

from shared.channels import open_channel
from shared.server import RunningServer
from shared.telemetry import Telemetry
from shared.tls import TlsFiles
from tests.shared.conftest import StartServer
from tests.support.certs import Pki, make_pki
from tests.support.probe import (
    PROBE_SERVICE,
    SERVING,
    Request,
    Response,
    register_probe,
    unary_method,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"


async def echo(request: Request, context: grpc.aio.ServicerContext) -> Response:
    return Response(status=SERVING)


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    answer = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=3
    )
    return answer.status


async def test_health_serves_overall_and_each_service(serve: StartServer) -> None:
    running = await serve(register_probe(unary={"Echo": echo}), [PROBE_SERVICE])
    async with grpc.aio.insecure_channel(running.address) as channel:
        assert await health_status(channel) == SERVING
        assert await health_status(channel, "liveness") == SERVING
        assert await health_status(channel, PROBE_SERVICE) == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health_status(channel, "tfmesh.nothing.v1.Nothing")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert (await unary_method(channel, "Echo")(Request(), timeout=3)).status == SERVING


async def test_health_watch_streams_status_changes(serve: StartServer) -> None:
    """Watch streams through `context.write`, which the shared interceptor must let through."""
    running = await serve(register_probe(), [PROBE_SERVICE])
    async with grpc.aio.insecure_channel(running.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=PROBE_SERVICE), timeout=5
        )
        updates = watch.__aiter__()
        assert (await updates.__anext__()).status == SERVING
        await running.health.set(PROBE_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert (await updates.__anext__()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()


def reflect(address: str) -> tuple[list[str], list[str]]:
    """The services reflection lists, and the Health service's methods it describes."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = list(database.get_services())
        health = descriptor_pool.DescriptorPool(database).FindServiceByName(HEALTH_SERVICE)
        return services, [method.name for method in health.methods]


async def test_reflection_lists_the_services(serve: StartServer) -> None:
    running = await serve(register_probe(), [PROBE_SERVICE])
    # The reflection client is synchronous; the server runs on this loop.
    services, health_methods = await asyncio.to_thread(reflect, running.address)
    assert sorted(services) == sorted([PROBE_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE])
    assert {"Check", "Watch"} <= set(health_methods)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.status == 200
        return answer.read().decode()


async def test_metrics_port_serves_prometheus_text(serve: StartServer) -> None:
    running = await serve(register_probe(unary={"Echo": echo}), [PROBE_SERVICE], metrics_port=0)
    assert running.metrics_port is not None and running.metrics_port > 0
    async with grpc.aio.insecure_channel(running.address) as channel:
        await unary_method(channel, "Echo")(Request(), timeout=3)
    text = await asyncio.to_thread(fetch, f"http://127.0.0.1:{running.metrics_port}/metrics")
    assert "# TYPE grpc_server_handled_total counter" in text
    labels = f'grpc_method="Echo",grpc_service="{PROBE_SERVICE}",grpc_type="unary"'
    assert f"grpc_server_started_total{{{labels}}}" in text
    assert f'grpc_server_handled_total{{grpc_code="OK",{labels}}}' in text
    assert f'grpc_server_handling_seconds_bucket{{{labels},le="0.005"}}' in text


def client_handled(method: str, code: str) -> float:
    labels = {
        "grpc_type": "unary",
        "grpc_service": PROBE_SERVICE,
        "grpc_method": method,
        "grpc_code": code,
    }
    return REGISTRY.get_sample_value("grpc_client_handled_total", labels) or 0.0


async def test_a_service_channel_counts_its_calls_by_code(
    serve: StartServer, telemetry: Telemetry
) -> None:
    running = await serve(register_probe(unary={"Echo": echo}), [PROBE_SERVICE])
    before = client_handled("Echo", "OK"), client_handled("Missing", "UNIMPLEMENTED")
    async with open_channel(running.address, telemetry) as channel:
        await unary_method(channel, "Echo")(Request(), timeout=3)
        with pytest.raises(grpc.aio.AioRpcError):
            await unary_method(channel, "Missing")(Request(), timeout=3)
        # The count is recorded by a callback the call's completion schedules.
        await asyncio.sleep(0.05)
    after = client_handled("Echo", "OK"), client_handled("Missing", "UNIMPLEMENTED")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


async def test_metrics_port_is_off_by_default(serve: StartServer) -> None:
    running = await serve(register_probe(), [PROBE_SERVICE])
    assert running.metrics_port is None


async def test_message_size_limit_applies(serve: StartServer) -> None:
    running = await serve(
        register_probe(unary={"Echo": echo}), [PROBE_SERVICE], max_message_bytes=4096
    )
    async with grpc.aio.insecure_channel(running.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await unary_method(channel, "Echo")(Request(service="x" * 8192), timeout=3)
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await unary_method(channel, "Echo")(Request(service="x" * 100))).status == SERVING


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates from an unrelated CA."""
    return make_pki(tmp_path_factory.mktemp("stranger"), organisation="stranger")


async def check_fails(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await health_status(channel)
    return failed.value.code()


async def test_tls_server_accepts_clients_that_trust_its_ca(
    serve: StartServer, pki: Pki, stranger: Pki
) -> None:
    running = await serve(
        register_probe(),
        [PROBE_SERVICE],
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
    )
    async with open_channel(running.address, tls=TlsFiles(pki.ca_cert)) as channel:
        assert await health_status(channel) == SERVING
    async with grpc.aio.insecure_channel(running.address) as plaintext:
        assert await check_fails(plaintext) == grpc.StatusCode.UNAVAILABLE
    async with open_channel(running.address, tls=TlsFiles(stranger.ca_cert)) as wrong_ca:
        assert await check_fails(wrong_ca) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_server_requires_a_client_certificate_from_its_ca(
    serve: StartServer, pki: Pki, stranger: Pki
) -> None:
    running = await serve(
        register_probe(),
        [PROBE_SERVICE],
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca_cert,
    )
    identity = TlsFiles(pki.ca_cert, pki.client_cert, pki.client_key)
    async with open_channel(running.address, tls=identity) as channel:
        assert await health_status(channel) == SERVING
    async with open_channel(running.address, tls=TlsFiles(pki.ca_cert)) as anonymous:
        assert await check_fails(anonymous) == grpc.StatusCode.UNAVAILABLE
    impostor_identity = TlsFiles(pki.ca_cert, stranger.client_cert, stranger.client_key)
    async with open_channel(running.address, tls=impostor_identity) as impostor:
        assert await check_fails(impostor) == grpc.StatusCode.UNAVAILABLE


async def test_stop_reports_not_serving_drains_then_runs_callbacks(serve: StartServer) -> None:
    finished: list[str] = []

    async def slow(request: Request, context: grpc.aio.ServicerContext) -> Response:
        await asyncio.sleep(0.3)
        finished.append("call")
        return Response(status=SERVING)

    running: RunningServer = await serve(register_probe(unary={"Slow": slow}), [PROBE_SERVICE])

    async def close_store() -> None:
        finished.append("close store")

    async def stop_workers() -> None:
        finished.append("stop workers")

    running.on_stop(close_store)
    running.on_stop(stop_workers)
    async with grpc.aio.insecure_channel(running.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        updates = watch.__aiter__()
        assert (await updates.__anext__()).status == SERVING
        in_flight = asyncio.ensure_future(unary_method(channel, "Slow")(Request(), timeout=5))
        await asyncio.sleep(0.1)
        stopping = asyncio.ensure_future(running.stop(grace_s=5))
        assert (await updates.__anext__()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # An open Watch is an in-flight call too: it would hold the stop for the whole grace.
        watch.cancel()
        assert (await in_flight).status == SERVING
        await asyncio.wait_for(stopping, 2)
    # Callbacks run after the drain, last registered first.
    assert finished == ["call", "stop workers", "close store"]


async def read_line(stream: asyncio.StreamReader, timeout_s: float = 30) -> str:
    line = await asyncio.wait_for(stream.readline(), timeout_s)
    assert line, "the service process closed its stdout"
    return line.decode().strip()


async def test_sigterm_drains_in_flight_calls_and_exits_zero() -> None:
    environment = {**os.environ, "TFMESH_PORT": "0", "TFMESH_SHUTDOWN_GRACE_S": "5"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.slow_service",
        cwd=REPO_ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        port_line = await read_line(process.stdout)
        assert port_line.startswith("port ")
        address = f"127.0.0.1:{port_line.split()[1]}"
        async with grpc.aio.insecure_channel(address) as channel:
            slow_call = asyncio.ensure_future(unary_method(channel, "Slow")(Request(), timeout=10))
            assert await read_line(process.stdout) == "started"
            process.send_signal(signal.SIGTERM)

            # New clients are turned away while the slow call drains: a call that races the
            # shutdown is CANCELLED or left unanswered (DEADLINE_EXCEEDED), and once the
            # listener is closed connections are refused (UNAVAILABLE). A call answered
            # before the server's loop has even seen the signal is allowed.
            outcomes: list[grpc.StatusCode] = []
            while grpc.StatusCode.UNAVAILABLE not in outcomes and not slow_call.done():
                async with grpc.aio.insecure_channel(address) as new_client:
                    try:
                        await unary_method(new_client, "Ping")(Request(), timeout=0.25)
                        outcomes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as error:
                        outcomes.append(error.code())
                await asyncio.sleep(0.02)
            refusals = [code != grpc.StatusCode.OK for code in outcomes]
            assert any(refusals), f"new calls were accepted during the drain: {outcomes}"
            assert set(outcomes[refusals.index(True) :]) <= {
                grpc.StatusCode.CANCELLED,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNAVAILABLE,
            }
            assert (await slow_call).status == SERVING

        assert await asyncio.wait_for(process.wait(), 15) == 0
        assert await read_line(process.stdout) == "stopped"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
