"""Fixtures for the training service: the digits dataset in memory, a real registry server
in-process, and settings -> store -> worker pool -> core -> real grpc.aio server -> stub."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.training.datasource import ArrayDataSource, TrainingData, digits_data
from services.training.registrar import RegistryRegistrar
from services.training.server import start_training
from services.training.settings import TrainingSettings
from shared.channels import open_channel
from shared.telemetry import setup_telemetry
from tests.support.registry import registry_settings, running_registry
from tfmesh.training.v1 import training_pb2 as pb
from tfmesh.training.v1 import training_pb2_grpc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DIGITS = "digits@0123456789ab"
TERMINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


@pytest.fixture(scope="session")
def digits() -> TrainingData:
    return digits_data(DIGITS)


@pytest.fixture
def data_source(digits: TrainingData) -> ArrayDataSource:
    return ArrayDataSource({DIGITS: digits})


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[str]:
    """The address of a real registry server whose gate wants +0.01 accuracy."""
    async with running_registry(registry_settings(tmp_path / "registry-home")) as running:
        yield running.address


@pytest.fixture
async def training(
    tmp_path: Path, data_source: ArrayDataSource, registry: str
) -> AsyncIterator[training_pb2_grpc.TrainingServiceStub]:
    settings = TrainingSettings(
        home=tmp_path / "training-home", port=0, idle_poll_s=0.2, watch_poll_s=0.05
    )
    telemetry = setup_telemetry("training-test", configure_logging=False)
    async with open_channel(registry) as registry_channel:
        registrar = RegistryRegistrar(registry_channel, deadline_s=60)
        running = await start_training(settings, telemetry, data_source, registrar)
        try:
            async with open_channel(running.address) as channel:
                yield training_pb2_grpc.TrainingServiceStub(channel)
        finally:
            await running.stop(0)


def mlp_spec(epochs: int = 3, **fields) -> pb.JobSpec:
    values = dict(
        dataset_version=DIGITS,
        model=pb.ModelSpec(mlp=pb.MlpTemplate(hidden_units=[32])),
        hyperparameters=pb.Hyperparameters(epochs=epochs, batch_size=64, learning_rate=0.005),
    )
    values.update(fields)
    return pb.JobSpec(**values)


async def wait_for_end(
    stub: training_pb2_grpc.TrainingServiceStub, name: str, timeout_s: float = 120
) -> pb.Job:
    async def poll() -> pb.Job:
        while True:
            job = (await stub.GetJob(pb.GetJobRequest(name=name))).job
            if job.state in TERMINAL:
                return job
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout_s)
