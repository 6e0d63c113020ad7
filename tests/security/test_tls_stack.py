"""The whole local stack on mutual TLS (`tfmesh up --tls`), as processes on free ports.

One module-scoped stack: a local CA and a certificate per service under the test's
TFMESH_HOME. Over it: the lifecycle (import digits, train, register, promote, predict over
gRPC and through the gateway's HTTPS, the CLI), then what must be refused: plaintext on
every port, a client whose certificate another CA signed, a client with no certificate;
and a service started with the wrong CA stops at once naming the setting."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli.demo_calls import read_split, wait_for_labels
from cli.stack import LocalStack, stack_tls
from shared.aliases import PRODUCTION
from shared.channels import open_channel
from shared.ports import free_port
from shared.tensors import to_tensor
from shared.tls import TlsFiles
from tests.support.certs import make_pki
from tests.support.processes import REPO
from tests.support.stack import RunningStack, http_json, service_stubs, stack_environment, train
from tfmesh.data.v1 import data_pb2 as dpb
from tfmesh.inference.v1 import inference_pb2 as ipb
from tfmesh.registry.v1 import registry_pb2 as rpb
from tfmesh.training.v1 import training_pb2 as tpb

MODEL = "digits"


@dataclass
class TlsStack(RunningStack):
    tls: TlsFiles = field(default_factory=TlsFiles)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    home = tmp_path_factory.mktemp("tls-stack")
    environment = stack_environment(home, TFMESH_INFERENCE_MODELS=MODEL)
    patch = pytest.MonkeyPatch()
    for name, value in environment.items():
        patch.setenv(name, value)
    local = LocalStack(home)
    try:
        services = local.up(tls=True)
        yield TlsStack(home, services, environment, stack_tls(home))
    finally:
        local.down()
        patch.undo()


async def lifecycle(stack: TlsStack) -> tuple[int, str, np.ndarray]:
    async with service_stubs(stack, stack.tls) as stubs:
        data, training = stubs.data, stubs.training
        dataset = (await data.ImportSample(dpb.ImportSampleRequest(sample="digits"))).version
        x_test, _ = await read_split(data, dataset.name, dpb.SPLIT_TEST)
        spec = tpb.JobSpec(
            dataset_version=dataset.name,
            model_name=MODEL,
            model=tpb.ModelSpec(mlp=tpb.MlpTemplate(hidden_units=[16])),
            hyperparameters=tpb.Hyperparameters(epochs=2, batch_size=64),
        )
        # Training calls the data service and the registry over mutual TLS to finish.
        version = await train(training, spec)
        await stubs.registry.SetAlias(
            rpb.SetAliasRequest(
                model=MODEL,
                alias=PRODUCTION,
                version=version,
                actor="test",
                reason="tls test",
                override_gate=True,
            )
        )
        inference = stubs.inference
        # Inference followed the registry and downloaded the version over mutual TLS.
        status = await wait_for_labels(inference, {PRODUCTION: version})
        input_name = status.versions[0].inputs[0].name
        rows = x_test[:4].astype(np.float32)
        answer = await inference.Predict(
            ipb.PredictRequest(model=MODEL, inputs={input_name: to_tensor(rows)})
        )
        assert answer.version == version
        return version, input_name, rows


def test_the_lifecycle_runs_on_mutual_tls(stack: TlsStack) -> None:
    version, input_name, rows = asyncio.run(lifecycle(stack))
    gateway = stack.address("gateway")
    context = stack.tls.client_context()
    own = {"inputs": {input_name: {"dtype": "float32", "data": rows.tolist()}}}
    status, body = http_json(
        f"https://{gateway}/api/v1/models/{MODEL}/predict", own, context=context
    )
    assert (status, body["version"]) == (200, version)
    # KServe v2 REST: the gateway forwards to the inference REST port over HTTPS.
    v2 = {
        "inputs": [
            {
                "name": input_name,
                "datatype": "FP32",
                "shape": list(rows.shape),
                "data": rows.ravel().tolist(),
            }
        ]
    }
    status, body = http_json(f"https://{gateway}/v2/models/{MODEL}/infer", v2, context=context)
    assert status == 200 and len(body["outputs"][0]["data"]) > 0
    # The CLI finds the stack's TLS by itself (TFMESH_HOME), as after `tfmesh up --tls`.
    environment = {**os.environ, **stack.environment}
    for name in ("registry", "data", "training", "inference"):
        environment[f"TFMESH_{name.upper()}_ADDR"] = stack.address(name)
    listed = subprocess.run(
        [sys.executable, "-m", "cli", "models", "list", "--json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert listed.returncode == 0, listed.stderr
    assert MODEL in listed.stdout


async def health_code(address: str, tls: TlsFiles | None) -> grpc.StatusCode:
    async with open_channel(address, tls=tls) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_plaintext_and_strangers_are_refused_on_every_port(stack: TlsStack, tmp_path: Path) -> None:
    stranger = make_pki(tmp_path / "stranger", organisation="stranger")
    # Trusts the stack's CA, but presents a certificate that another CA signed.
    impostor = TlsFiles(stack.tls.ca_file, stranger.client_cert, stranger.client_key)
    anonymous = TlsFiles(stack.tls.ca_file)
    for spec in stack.services:
        if spec.http:
            continue
        assert asyncio.run(health_code(spec.address, stack.tls)) == grpc.StatusCode.OK
        for client in (None, impostor, anonymous):
            code = asyncio.run(health_code(spec.address, client))
            assert code == grpc.StatusCode.UNAVAILABLE, (spec.name, client)
    gateway = stack.address("gateway")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{gateway}/healthz", timeout=5)
    with pytest.raises(OSError):
        urllib.request.urlopen(
            f"https://{gateway}/healthz", timeout=5, context=impostor.client_context()
        )
    with urllib.request.urlopen(
        f"https://{gateway}/healthz", timeout=5, context=stack.tls.client_context()
    ) as answer:
        assert answer.status == 200


def test_a_service_given_the_wrong_ca_stops_at_start_naming_the_setting(
    stack: TlsStack, tmp_path: Path
) -> None:
    stranger = make_pki(tmp_path / "stranger", organisation="stranger")
    identity = stack.home / "tls"
    environment = {
        **os.environ,
        "TFMESH_HOME": str(tmp_path / "home"),
        "TFMESH_DATA_PORT": str(free_port()),
        "TFMESH_DATA_REGISTRY_ADDR": stack.address("registry"),
        "TFMESH_TLS_CA_FILE": str(stranger.ca_cert),
        "TFMESH_DATA_TLS_CERT_FILE": str(identity / "data.pem"),
        "TFMESH_DATA_TLS_KEY_FILE": str(identity / "data-key.pem"),
    }
    started = subprocess.run(
        [sys.executable, "-m", "services.data.server"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert started.returncode != 0
    assert "TFMESH_TLS_CA_FILE" in started.stderr
    assert "registry" in started.stderr
