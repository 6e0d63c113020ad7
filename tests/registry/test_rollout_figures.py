"""The controller's figures from two real inference servers that one name stands for, as a
Kubernetes headless Service names every pod: both read, their counts added up. The servers
run in this process on 127.0.0.1 and 127.0.0.2 (the same port); only the name's resolution
is given by the test (no DNS server to point at them here)."""

from __future__ import annotations

import socket

import grpc
import numpy as np

from services.inference.server import start_inference
from services.inference.settings import InferenceSettings
from services.registry.rollouts.figures import InferenceFigures, every_ip
from shared.telemetry import setup_telemetry
from shared.tensors import to_tensor
from tests.inference.conftest import slow_model_entry, write_model_config
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc

HOSTS = ("127.0.0.1", "127.0.0.2")


def port_free_on_both() -> int:
    while True:
        with socket.socket() as first, socket.socket() as second:
            first.bind((HOSTS[0], 0))
            port = first.getsockname()[1]
            try:
                second.bind((HOSTS[1], port))
            except OSError:
                continue
            return port


async def predict(address: str, times: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        inputs = {"x": to_tensor(np.zeros((1, 4), np.float32))}
        for _ in range(times):
            await stub.Predict(pb.PredictRequest(model="slow", inputs=inputs), timeout=10)


async def test_fan_out_reads_every_endpoint_a_name_stands_for(tmp_path):
    entry = slow_model_entry(delay_ms=1)
    entry["runtime_options"]["inputs"] = [{"name": "x", "dtype": "float32", "shape": [4]}]
    config = write_model_config(tmp_path, [entry])
    port = port_free_on_both()
    telemetry = setup_telemetry("figures-test", configure_logging=False)
    servers = []
    try:
        for host in HOSTS:
            settings = InferenceSettings(
                home=tmp_path, host=host, port=port, http_port=-1, model_config_file=config
            )
            servers.append((await start_inference(settings, telemetry))[0])
        await predict(f"{HOSTS[0]}:{port}", 3)
        await predict(f"{HOSTS[1]}:{port}", 5)

        async def pods(name: str) -> list[str]:
            assert name == "inference-pods"
            return list(HOSTS)

        figures = InferenceFigures(
            [f"inference-pods:{port}"], grpc.aio.insecure_channel, fan_out=True, resolve=pods
        )
        assert await figures.endpoints() == [f"{h}:{port}" for h in HOSTS]
        assert (await figures.figures("slow"))[1].requests == 8
        single = InferenceFigures([f"{HOSTS[1]}:{port}"], grpc.aio.insecure_channel)
        assert (await single.figures("slow"))[1].requests == 5
        await figures.close()
        await single.close()
    finally:
        for server in servers:
            await server.stop(0)


async def test_a_name_resolves_to_one_family_so_localhost_is_read_once():
    assert await every_ip("localhost") == ["127.0.0.1"]
    assert await every_ip("127.0.0.2") == ["127.0.0.2"]
