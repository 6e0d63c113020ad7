"""Malformed requests against the four services, started as processes: at least 2,000 of
them across every method (garbage bytes, truncated messages, deep, huge and negative
shapes, names of thousands of characters, oversized and deeply nested REST bodies). No
answer may be UNKNOWN or INTERNAL, no HTTP answer a 5xx other than 503, and every service
must still be SERVING afterwards. The cases come from a seeded generator, so a failure
names a case that replays."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

from inference import grpc_predict_v2_pb2 as v2
from tests.support.processes import ServiceProcess, platform_processes, started
from tests.support.stack import raw_call_code
from tfmesh.common.v1 import common_pb2
from tfmesh.data.v1 import data_pb2
from tfmesh.inference.v1 import inference_pb2 as ipb
from tfmesh.registry.v1 import registry_pb2 as rpb
from tfmesh.training.v1 import training_pb2

# Imported for their descriptors: the methods are looked up by name in the default pool.
DESCRIBED = (data_pb2, training_pb2, prediction_service_pb2, model_service_pb2)
SEED = 20261202
SERVER_FAULTS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
SERVICES = {
    "data": ["tfmesh.data.v1.DataService"],
    "training": ["tfmesh.training.v1.TrainingService"],
    "registry": ["tfmesh.registry.v1.RegistryService"],
    "inference": [
        "tfmesh.inference.v1.InferenceService",
        "inference.GRPCInferenceService",
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
    ],
}
GARBAGE_PER_METHOD = 40
LONG = "m" * 5000


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    home: Path = tmp_path_factory.mktemp("fuzz")
    with started(platform_processes(home, TFMESH_INFERENCE_MODELS="digits")) as processes:
        yield processes


def garbage(rng: random.Random) -> bytes:
    """Bytes that are mostly not a valid message: random, or a valid prefix cut short."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 2048))
    if kind == 1:
        # A length-delimited field that claims more bytes than follow.
        return bytes([0x0A, 0xFF, 0xFF, 0x03]) + rng.randbytes(rng.randrange(0, 16))
    if kind == 2:
        # A varint that never ends.
        return bytes([0x08]) + b"\xff" * rng.randrange(10, 64)
    # A group start tag with no end, and an invalid wire type.
    return bytes([0x0B, 0x0F]) + rng.randbytes(8)


def structured_cases(rng: random.Random) -> list[tuple[str, bytes]]:
    """Messages that parse but carry what the services must refuse."""
    cases: list[tuple[str, bytes]] = []
    shapes = [[1] * 300, [2**40], [-1, 3], [1, 2**31], [0], [], [1, 64] * 20]
    for shape in shapes:
        tensor = common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=shape, content=b"\0" * 16)
        request = ipb.PredictRequest(model="digits", inputs={"x": tensor})
        cases.append(("/tfmesh.inference.v1.InferenceService/Predict", request.SerializeToString()))
        infer = v2.ModelInferRequest(
            model_name="digits",
            inputs=[v2.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=shape)],
            raw_input_contents=[b"\0" * 16],
        )
        cases.append(("/inference.GRPCInferenceService/ModelInfer", infer.SerializeToString()))
    for _ in range(60):
        name = rng.choice([LONG, "\x00bad", "a/b", " ", "x" * rng.randrange(1, 9000)])
        cases += [
            (
                "/tfmesh.registry.v1.RegistryService/GetModel",
                rpb.GetModelRequest(name=name).SerializeToString(),
            ),
            (
                "/tfmesh.registry.v1.RegistryService/SetAlias",
                rpb.SetAliasRequest(
                    model=name, alias=name, version=rng.randrange(-5, 5)
                ).SerializeToString(),
            ),
            (
                "/tfmesh.inference.v1.InferenceService/GetModelStatus",
                ipb.GetModelStatusRequest(model=name).SerializeToString(),
            ),
            (
                "/inference.GRPCInferenceService/ModelMetadata",
                v2.ModelMetadataRequest(name=name, version=name).SerializeToString(),
            ),
        ]
    return cases


def methods_of(service: str) -> list[str]:
    found = descriptor_pool.Default().FindServiceByName(service)
    return [f"/{service}/{method.name}" for method in found.methods]


def test_two_thousand_malformed_rpcs_get_no_server_fault(platform) -> None:
    rng = random.Random(SEED)
    cases: list[tuple[str, str, bytes]] = []
    for name, services in SERVICES.items():
        for service in services:
            for method in methods_of(service):
                cases += [(name, method, garbage(rng)) for _ in range(GARBAGE_PER_METHOD)]
    owner = {m: n for n, services in SERVICES.items() for s in services for m in methods_of(s)}
    cases += [(owner[method], method, body) for method, body in structured_cases(rng)]
    assert len(cases) >= 2000

    async def run_all() -> list[tuple[str, grpc.StatusCode]]:
        codes = []
        for index, (name, method, body) in enumerate(cases):
            code = await raw_call_code(platform[name].address, method, body)
            codes.append((f"case {index} {method}", code))
        return codes

    codes = asyncio.run(run_all())
    faults = [f"{case}: {code.name}" for case, code in codes if code in SERVER_FAULTS]
    assert not faults, f"{len(faults)} server faults, first: {faults[:10]}"
    counted = Counter(code.name for _, code in codes)
    assert counted["INVALID_ARGUMENT"] > len(cases) // 2, counted
    for process in platform.values():
        assert process.process is not None and process.process.poll() is None
        assert asyncio.run(health(process.address)) == health_pb2.HealthCheckResponse.SERVING


async def health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return reply.status


def rest_bodies(rng: random.Random) -> Iterator[tuple[str, str, bytes]]:
    """(method, path, body) cases for the inference REST port."""
    for _ in range(60):
        yield "POST", "/v2/models/digits/infer", rng.randbytes(rng.randrange(1, 4096))
        yield "POST", "/v1/models/digits:predict", rng.randbytes(rng.randrange(1, 512))
    deep = b"[" * 50_000 + b"]" * 50_000
    yield "POST", "/v2/models/digits/infer", b'{"inputs": ' + deep + b"}"
    yield "POST", "/v1/models/digits:predict", b'{"instances": ' + deep + b"}"
    for shape in ([1] * 300, [2**40], [-3], [2**31, 2**31]):
        tensor = {"name": "x", "datatype": "FP32", "shape": shape, "data": [1.0]}
        body = json.dumps({"inputs": [tensor]}).encode()
        yield "POST", "/v2/models/digits/infer", body
    yield "GET", "/v2/models/" + LONG, b""
    yield "GET", "/v1/models/" + LONG + "/versions/99999999999999999999", b""
    # Past the service's message limit: 413, not a reset connection.
    yield "POST", "/v2/models/digits/infer", b"[" * (65 * 1024 * 1024)


def test_malformed_rest_bodies_get_no_5xx_but_503(platform) -> None:
    base = platform["inference"].http_url
    rng = random.Random(SEED)
    statuses = []
    for method, path, body in rest_bodies(rng):
        request = urllib.request.Request(
            base + path, body or None, {"content-type": "application/json"}, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                statuses.append((path[:60], answer.status))
        except urllib.error.HTTPError as error:
            statuses.append((path[:60], error.code))
    faults = [(path, status) for path, status in statuses if status >= 500 and status != 503]
    assert not faults, faults[:10]
    assert (statuses[-1][1]) == 413
    assert len(statuses) >= 120
