"""What the tests that start the whole local stack share: its environment on free ports, a
handle on the running services with a stub for each, a training job run to its end, a
JSON call over HTTP(S), and any gRPC method called with raw bytes as its shape requires."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool

from cli.stack import ServiceSpec
from shared.channels import open_channel
from shared.ports import free_ports
from shared.tls import TlsFiles
from tfmesh.data.v1 import data_pb2_grpc
from tfmesh.inference.v1 import inference_pb2_grpc
from tfmesh.registry.v1 import registry_pb2_grpc
from tfmesh.training.v1 import training_pb2 as tpb
from tfmesh.training.v1 import training_pb2_grpc

PREFIXES = ("REGISTRY", "DATA", "TRAINING", "INFERENCE", "GATEWAY")
Metadata = tuple[tuple[str, str], ...]


def stack_environment(home: Path, **extra: str) -> dict[str, str]:
    """`TFMESH_HOME` and a free port for every listener of the stack (all different)."""
    ports = iter(free_ports(14))
    environment = {
        "TFMESH_HOME": str(home),
        "TFMESH_INFERENCE_HTTP_PORT": str(next(ports)),
        "TFMESH_PROMETHEUS_PORT": str(next(ports)),
        "TFMESH_TRAINING_WORKER_PORT": str(next(ports)),
        "TFMESH_TRAINING_WORKER_METRICS_PORT": str(next(ports)),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    for prefix in PREFIXES:
        environment[f"TFMESH_{prefix}_PORT"] = str(next(ports))
        environment[f"TFMESH_{prefix}_METRICS_PORT"] = str(next(ports))
    return {**environment, **extra}


@dataclass
class RunningStack:
    home: Path
    services: list[ServiceSpec]
    environment: dict[str, str]

    def address(self, name: str) -> str:
        return next(s.address for s in self.services if s.name == name)


@dataclass
class Stubs:
    data: data_pb2_grpc.DataServiceStub
    training: training_pb2_grpc.TrainingServiceStub
    registry: registry_pb2_grpc.RegistryServiceStub
    inference: inference_pb2_grpc.InferenceServiceStub


@asynccontextmanager
async def service_stubs(stack: RunningStack, tls: TlsFiles | None = None) -> AsyncIterator[Stubs]:
    """A stub on its own channel for each gRPC service of the stack, closed on exit."""
    async with AsyncExitStack() as channels:

        async def channel(name: str):  # type: ignore[no-untyped-def]
            return await channels.enter_async_context(open_channel(stack.address(name), tls=tls))

        yield Stubs(
            data_pb2_grpc.DataServiceStub(await channel("data")),
            training_pb2_grpc.TrainingServiceStub(await channel("training")),
            registry_pb2_grpc.RegistryServiceStub(await channel("registry")),
            inference_pb2_grpc.InferenceServiceStub(await channel("inference")),
        )


def http_json(
    url: str,
    body: object = None,
    *,
    method: str | None = None,
    token: str | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict]:
    """The status and JSON body of a call (an error status's JSON body too)."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


async def train(
    training: training_pb2_grpc.TrainingServiceStub, spec: tpb.JobSpec, timeout_s: float = 180
) -> int:
    """Submit a job, wait for its end; the version it registered."""
    job = (await training.SubmitJob(tpb.SubmitJobRequest(spec=spec))).job
    deadline = time.monotonic() + timeout_s
    while job.state not in (tpb.JOB_STATE_SUCCEEDED, tpb.JOB_STATE_FAILED):
        assert time.monotonic() < deadline, f"job {job.name} still {job.state}"
        await asyncio.sleep(0.5)
        job = (await training.GetJob(tpb.GetJobRequest(name=job.name))).job
    assert job.state == tpb.JOB_STATE_SUCCEEDED, job.error
    return job.registration.version


async def raw_call_code(
    address: str, full_method: str, body: bytes, metadata: Metadata = ()
) -> grpc.StatusCode:
    """The status of `body` sent to `full_method` (a request stream sends it twice)."""
    service, name = full_method.strip("/").split("/")
    descriptor = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    if descriptor.client_streaming:
        # The blocking API: grpc.aio can report INTERNAL instead of the server's status
        # when the server ends a call while the client is still writing (grpc/grpc#36066).
        return await asyncio.to_thread(
            _request_stream_code, address, full_method, descriptor, body, metadata
        )
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            if descriptor.server_streaming:
                call = channel.unary_stream(full_method)(body, metadata=metadata, timeout=2)
                async for _ in call:
                    pass
            else:
                await channel.unary_unary(full_method)(body, metadata=metadata, timeout=2)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def _request_stream_code(address, full_method, descriptor, body, metadata):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(address) as channel:
        try:
            if descriptor.server_streaming:
                call = channel.stream_stream(full_method)
                for _ in call(iter([body, body]), metadata=metadata, timeout=2):
                    pass
            else:
                channel.stream_unary(full_method)(iter([body, body]), metadata=metadata, timeout=2)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[attr-defined]
    return grpc.StatusCode.OK
