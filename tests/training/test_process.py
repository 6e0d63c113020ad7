"""The training service as a real process beside real data and registry processes: SIGKILL it
in the middle of a job, restart it, and the job resumes from its checkpoint and registers
exactly one version."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.channels import open_channel
from tests.support.processes import service_process
from tfmesh.data.v1 import data_pb2, data_pb2_grpc
from tfmesh.registry.v1 import registry_pb2, registry_pb2_grpc
from tfmesh.training.v1 import training_pb2 as pb
from tfmesh.training.v1 import training_pb2_grpc

EPOCHS = 12


@pytest.fixture
def stack(tmp_path):
    registry = service_process("services.registry.server", "TFMESH_REGISTRY_", tmp_path)
    data = service_process("services.data.server", "TFMESH_DATA_", tmp_path)
    training = service_process(
        "services.training.server",
        "TFMESH_TRAINING_",
        tmp_path,
        TFMESH_TRAINING_DATA_ADDR=data.address,
        TFMESH_TRAINING_REGISTRY_ADDR=registry.address,
        TFMESH_TRAINING_IDLE_POLL_S="0.2",
        # Every epoch, so that the kill lands after some checkpoint.
        TFMESH_TRAINING_CHECKPOINT_INTERVAL_S="0",
    )
    yield registry, data, training
    for process in (training, data, registry):
        process.stop_quietly()


async def _get(address: str, name: str) -> pb.Job:
    async with open_channel(address) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        return (await stub.GetJob(pb.GetJobRequest(name=name))).job


async def _wait(address: str, name: str, done, timeout_s: float) -> pb.Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = await _get(address, name)
        if done(job):
            return job
        await asyncio.sleep(0.05)
    raise TimeoutError(f"job {name} did not get there in {timeout_s} s: {job}")


async def test_sigkill_mid_job_resumes_from_the_checkpoint_and_registers_once(stack, tmp_path):
    registry, data, training = stack
    await asyncio.to_thread(registry.start)
    await asyncio.to_thread(data.start)
    async with open_channel(data.address) as channel:
        imported = await data_pb2_grpc.DataServiceStub(channel).ImportSample(
            data_pb2.ImportSampleRequest(sample="digits")
        )
    dataset = imported.version.name
    await asyncio.to_thread(training.start)

    spec = pb.JobSpec(
        dataset_version=dataset,
        model=pb.ModelSpec(mlp=pb.MlpTemplate(hidden_units=[64])),
        # Small batches make each epoch long enough to kill the process inside the job.
        hyperparameters=pb.Hyperparameters(epochs=EPOCHS, batch_size=4),
        model_name="digits-process",
        request_promotion=True,
    )
    async with open_channel(training.address) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        job = (await stub.SubmitJob(pb.SubmitJobRequest(spec=spec))).job
    await _wait(training.address, job.name, lambda j: j.epochs_completed >= 2, 120)
    training.kill()

    latest = tmp_path / "training" / "jobs" / job.name / "checkpoints" / "LATEST"
    checkpointed = int(latest.read_text().strip().removeprefix("epoch-"))
    assert 2 <= checkpointed < EPOCHS, "killed in the middle of the job"

    await asyncio.to_thread(training.start)
    done = await _wait(
        training.address,
        job.name,
        lambda j: j.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED),
        240,
    )
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.error
    assert done.attempt == 2
    assert done.resumed_from_epoch == checkpointed
    assert done.epochs_completed == EPOCHS
    assert done.metrics["accuracy"] > 0.9
    assert done.registration.version == 1 and done.registration.promoted

    async with open_channel(registry.address) as channel:
        registry_stub = registry_pb2_grpc.RegistryServiceStub(channel)
        versions = await registry_stub.ListVersions(
            registry_pb2.ListVersionsRequest(model="digits-process")
        )
    assert [v.version for v in versions.versions] == [1]
    (version,) = versions.versions
    assert version.lineage.training_job == job.name
    assert version.lineage.dataset_version == dataset
    assert version.idempotency_key == job.name
    assert training.terminate() == 0
