"""The multi-process server as processes: a supervisor, a model owner and two front ends on
one port. Under load (gRPC, and REST), a front end killed with SIGKILL costs only the calls
it had in flight and comes back; a killed model owner makes the front ends answer UNAVAILABLE with
a retry delay and report not ready until it is back, without restarting them; the
processes' metrics add up on one port; SIGTERM stops everything and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from inference import grpc_predict_v2_pb2 as v2
from inference import grpc_predict_v2_pb2_grpc
from shared.ports import free_port
from shared.tensors import to_tensor
from tests.inference.conftest import write_model_config
from tests.inference.models import digits_rows
from tests.support.processes import ServiceProcess, service_process
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc

FRONTENDS = 2


def children(parent: int) -> dict[str, int]:
    """The supervisor's children by role (`owner`, `frontend 0`, ...), from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) != parent or b"services.inference.server" not in command:
            continue
        words = [part.decode() for part in command]
        role = words[words.index("services.inference.server") + 1]
        index = words[words.index("--index") + 1]
        found[role if role == "owner" else f"{role} {index}"] = int(stat.parent.name)
    return found


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie waiting for a parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_children(parent: int, expected: set[str], timeout_s: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = children(parent)
        if set(found) == expected:
            return found
        time.sleep(0.1)
    raise AssertionError(f"children {found}, wanted {expected}")


def split_service(
    home: Path, models: list[dict], timeout_s: float = 60, **env: str
) -> tuple[ServiceProcess, dict[str, int]]:
    """A started multi-process server of `models`, and its children's pids by name."""
    process = service_process(
        "services.inference.server",
        "TFMESH_INFERENCE_",
        home,
        TFMESH_INFERENCE_MODEL_CONFIG_FILE=str(write_model_config(home, models)),
        TFMESH_INFERENCE_FRONTENDS=str(FRONTENDS),
        **env,
    ).start(timeout_s=timeout_s)
    assert process.process is not None
    expected = {"owner", *(f"frontend {i}" for i in range(FRONTENDS))}
    return process, wait_for_children(process.process.pid, expected)


@pytest.fixture(scope="module")
def service(tmp_path_factory, artifacts):
    digits = {
        "name": "digits",
        "runtime": "tensorflow",
        "versions": [{"version": 1, "path": str(artifacts[1]["saved_model.tar"])}],
        "batching": {"max_batch_size": 16, "batch_timeout_micros": 500},
    }
    process, _ = split_service(
        tmp_path_factory.mktemp("frontends"),
        [digits],
        timeout_s=120,
        TFMESH_INFERENCE_METRICS_PORT=str(free_port()),
    )
    yield process
    process.stop_quietly()


REQUEST = pb.PredictRequest(model="digits", inputs={"x": to_tensor(digits_rows(1))})


LOST = "lost"  # what a client logs for a request its connection's process took down


async def grpc_load(service, clients: int, stop: asyncio.Event, log: list) -> None:
    """`clients` closed-loop gRPC clients, each on a connection of its own (so they spread
    over the front ends), logging (client, start, None or what went wrong)."""
    channels = [
        grpc.aio.insecure_channel(service.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(clients)
    ]

    async def client(index: int, channel: grpc.aio.Channel) -> None:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        while not stop.is_set():
            started = time.monotonic()
            try:
                await stub.Predict(REQUEST, timeout=10, wait_for_ready=True)
                log.append((index, started, None))
            except grpc.aio.AioRpcError as error:
                lost = error.code() == grpc.StatusCode.UNAVAILABLE
                log.append((index, started, LOST if lost else error.code().name))
                await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(client(i, c) for i, c in enumerate(channels)))
    finally:
        for channel in channels:
            await channel.close()


async def rest_load(service, clients: int, stop: asyncio.Event, log: list) -> None:
    """`clients` closed-loop REST clients with one connection each (so a client is a
    connection), posting KServe v2 JSON; logs like `grpc_load`."""
    body = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}

    async def client(index: int) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=service.http_url, limits=limits, timeout=10) as http:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    answer = await http.post("/v2/models/digits/infer", json=body)
                    failed = answer.status_code != 200
                    log.append((index, started, f"HTTP {answer.status_code}" if failed else None))
                except httpx.TransportError:
                    log.append((index, started, LOST))
                    await asyncio.sleep(0.01)

    await asyncio.gather(*(client(i) for i in range(clients)))


@pytest.mark.parametrize(
    ("loader", "killed"),
    [(grpc_load, "frontend 0"), (rest_load, "frontend 1")],
    ids=["grpc", "rest"],
)
async def test_a_killed_front_end_costs_only_its_requests_in_flight_and_comes_back(
    service, loader, killed
):
    supervisor = service.process.pid
    before = wait_for_children(supervisor, {"owner", "frontend 0", "frontend 1"})
    stop = asyncio.Event()
    log: list = []
    clients = 12
    loading = asyncio.create_task(loader(service, clients, stop, log))
    await asyncio.sleep(1.5)
    killed_at = time.monotonic()
    os.kill(before[killed], signal.SIGKILL)
    await asyncio.sleep(0.2)
    after = await asyncio.to_thread(wait_for_children, supervisor, set(before), 30)
    assert after[killed] != before[killed]
    assert all(after[name] == pid for name, pid in before.items() if name != killed)
    await asyncio.sleep(1.5)
    stop.set()
    await loading
    failures = [entry for entry in log if entry[2] is not None]
    # Each client had one call in flight at most: the calls the killed process held.
    per_client = {index: 0 for index in range(clients)}
    for index, _, _ in failures:
        per_client[index] += 1
    assert max(per_client.values()) <= 1, failures
    assert {error for _, _, error in failures} <= {LOST}, failures
    late = [entry for entry in log if entry[1] > killed_at + 0.5]
    assert late and all(error is None for _, _, error in late)
    assert {index for index, _, _ in late} == set(range(clients))


async def test_a_killed_owner_means_unavailable_then_back_without_new_front_ends(service):
    supervisor = service.process.pid
    before = children(supervisor)
    os.kill(before["owner"], signal.SIGKILL)
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            for _ in range(100):
                await stub.Predict(REQUEST, timeout=5)
                await asyncio.sleep(0.01)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        status = rpc_status.from_call(failure.value)
        retry = error_details_pb2.RetryInfo()
        assert any(detail.Unpack(retry) for detail in status.details)
        assert retry.retry_delay.ToNanoseconds() > 0
        checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert checked.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # Not ready, but alive: a liveness probe must not restart the pod for this.
        alive = await health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5)
        assert alive.status == health_pb2.HealthCheckResponse.SERVING
        assert not (await kserve.ServerReady(v2.ServerReadyRequest(), timeout=5)).ready
        assert (await kserve.ServerLive(v2.ServerLiveRequest(), timeout=5)).live
        deadline = time.monotonic() + 90
        while True:
            try:
                answer = await stub.Predict(REQUEST, timeout=5)
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() < deadline, "the owner did not come back"
                await asyncio.sleep(0.2)
        assert answer.version == 1
        checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert checked.status == health_pb2.HealthCheckResponse.SERVING
    after = children(supervisor)
    assert after["owner"] != before["owner"]
    assert {k: v for k, v in after.items() if k != "owner"} == {
        k: v for k, v in before.items() if k != "owner"
    }


def test_metrics_of_every_process_add_up_on_one_port(service):
    counted = 40
    with grpc.insecure_channel(service.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        scraped_before = scrape(service)
        for _ in range(counted):
            stub.Predict(REQUEST, timeout=10)
    scraped = scrape(service)
    key = 'tfmesh_inference_requests_total{code="OK",model="digits",version="1"}'
    assert scraped[key] - scraped_before.get(key, 0) == counted
    # Batches are counted by the owner, requests by the front ends: both are there.
    assert scraped['tfmesh_inference_batch_rows_count{model="digits",version="1"}'] >= 1


def scrape(service) -> dict[str, float]:
    port = service.env["TFMESH_INFERENCE_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


NOOP = [{"name": "noop", "runtime": "noop", "versions": [{"version": 1}]}]


def test_sigterm_stops_every_process_and_exits_zero(tmp_path):
    process, pids = split_service(tmp_path, NOOP)
    assert process.terminate(timeout_s=60) == 0
    assert not [pid for pid in pids.values() if alive(pid)]


def test_a_killed_supervisor_takes_its_processes_with_it(tmp_path):
    process, pids = split_service(tmp_path, NOOP)
    process.kill()
    deadline = time.monotonic() + 30
    while [pid for pid in pids.values() if alive(pid)]:
        assert time.monotonic() < deadline, "orphans outlived the supervisor"
        time.sleep(0.1)
