"""`tfmesh up --scaled` end to end on loopback, as a user runs it: the stack's own real
PostgreSQL and SeaweedFS, two replicas of data, registry and training, two training
workers, inference and the gateway. A dataset imported through one data replica is read
through the other; a job submitted to the second training API is trained by a worker and
registered; the version promoted through one registry replica is seen by the other and
served; the dataset's and the model's blobs are whole objects in the stack's bucket and
none is on a service's disk; `down` stops every process and both backing services."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cli.demo_calls import read_split, wait_for_labels
from cli.scaled import object_store
from cli.stack import LocalStack
from shared.aliases import PRODUCTION
from shared.channels import open_channel
from shared.tensors import from_tensor, to_tensor
from tests.support.stack import RunningStack, stack_environment, train
from tfmesh.data.v1 import data_pb2 as dpb
from tfmesh.data.v1 import data_pb2_grpc
from tfmesh.inference.v1 import inference_pb2 as ipb
from tfmesh.inference.v1 import inference_pb2_grpc
from tfmesh.registry.v1 import registry_pb2 as rpb
from tfmesh.registry.v1 import registry_pb2_grpc
from tfmesh.training.v1 import training_pb2 as tpb
from tfmesh.training.v1 import training_pb2_grpc

MODEL = "digits"


@pytest.fixture
def scaled(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningStack]:
    # Not pytest's tmp_path: its parent is 0700, and the stack's PostgreSQL runs as the
    # postgres user when the tests run as root.
    home = Path(tempfile.mkdtemp(prefix="tfmesh-scaled-"))
    home.chmod(0o755)
    environment = stack_environment(home, TFMESH_INFERENCE_MODELS=MODEL)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    stack = LocalStack(home)
    try:
        try:
            yield RunningStack(home, stack.up(timeout_s=120, scaled=True), environment)
        finally:
            stack.down()
        assert not stack.is_scaled()
        assert not object_store(home).running(), "down stops SeaweedFS"
        assert not (home / "postgres" / "data" / "postmaster.pid").exists(), "and PostgreSQL"
    finally:
        shutil.rmtree(home, ignore_errors=True)


# Thirteen processes start one after another on two cores, then a job trains.
@pytest.mark.timeout(600)
def test_the_scaled_stack_runs_the_lifecycle_across_replicas(scaled: RunningStack) -> None:
    names = {spec.name for spec in scaled.services}
    assert {"data-2", "registry-2", "training-2", "worker-1", "worker-2"} <= names
    version = asyncio.run(lifecycle(scaled))
    store = object_store(scaled.home)
    assert store.running()
    client = store.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix="stack/")
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    services = {key.split("/")[1] for key in keys}
    assert {"data", "registry"} <= services, keys
    for key in keys:
        if "/sha256/" in key:
            content = client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
            assert key.rsplit("/", 1)[1] == hashlib.sha256(content).hexdigest(), key
    on_disk = [path for path in scaled.home.rglob("blobs/**/*") if path.is_file()]
    assert on_disk == [], f"blobs on a service's disk: {on_disk[:5]}"
    assert version == 1


async def lifecycle(stack: RunningStack) -> int:
    """Import, train, promote and predict, each step on a different replica than the last;
    the version served."""
    async with (
        open_channel(stack.address("data")) as data_1,
        open_channel(stack.address("data-2")) as data_2,
        open_channel(stack.address("training-2")) as training_2,
        open_channel(stack.address("registry")) as registry_1,
        open_channel(stack.address("registry-2")) as registry_2,
        open_channel(stack.address("inference")) as inference_channel,
    ):
        imported = await data_pb2_grpc.DataServiceStub(data_2).ImportSample(
            dpb.ImportSampleRequest(sample="digits")
        )
        dataset = imported.version.name
        x_test, y_test = await read_split(
            data_pb2_grpc.DataServiceStub(data_1), dataset, dpb.SPLIT_TEST
        )
        assert len(x_test) == imported.version.rows.test
        spec = tpb.JobSpec(
            dataset_version=dataset,
            model_name=MODEL,
            model=tpb.ModelSpec(mlp=tpb.MlpTemplate(hidden_units=[32])),
            hyperparameters=tpb.Hyperparameters(epochs=3, batch_size=32, learning_rate=0.01),
            seed=1,
        )
        version = await train(training_pb2_grpc.TrainingServiceStub(training_2), spec)
        await registry_pb2_grpc.RegistryServiceStub(registry_1).SetAlias(
            rpb.SetAliasRequest(
                model=MODEL,
                alias=PRODUCTION,
                version=version,
                actor="test",
                reason="scaled stack test",
                override_gate=True,
            )
        )
        seen = await registry_pb2_grpc.RegistryServiceStub(registry_2).ListAliases(
            rpb.ListAliasesRequest(model=MODEL)
        )
        assert [(a.name, a.version) for a in seen.aliases] == [(PRODUCTION, version)]
        inference = inference_pb2_grpc.InferenceServiceStub(inference_channel)
        status = await wait_for_labels(inference, {PRODUCTION: version})
        input_name = status.versions[0].inputs[0].name
        reply = await inference.Predict(
            ipb.PredictRequest(
                model=MODEL, inputs={input_name: to_tensor(x_test[:64].astype(np.float32))}
            )
        )
        assert reply.version == version
        predicted = from_tensor(next(iter(reply.outputs.values()))).argmax(axis=1)
        assert np.mean(predicted == y_test[:64]) > 0.5, "a trained model, not noise"
        return version
