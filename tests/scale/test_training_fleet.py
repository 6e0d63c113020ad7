"""Training on a fleet of worker processes: the training API with no workers of its own,
two worker processes (separate homes, as on two machines), one real PostgreSQL for the
queue and one S3 server (SeaweedFS) for checkpoints. The worker running a job is
SIGKILLed mid-epoch and not restarted: the other worker takes the job over once the
dead one's claim lapses, resumes from the checkpoint in the bucket, and registers
exactly one version. A search's trials run on both workers at once; the helping worker
is SIGKILLed mid-trial, and its trial runs again on the other, recorded once."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import psycopg
import pytest

from cli.postgres import SERVER_USER, PostgresServer
from cli.seaweedfs import LocalObjectStore
from shared.channels import open_channel
from shared.ports import free_port
from tests.support.processes import ServiceProcess, service_process
from tests.training.test_process import EPOCHS, _wait
from tfmesh.data.v1 import data_pb2, data_pb2_grpc
from tfmesh.registry.v1 import registry_pb2, registry_pb2_grpc
from tfmesh.training.v1 import training_pb2 as pb
from tfmesh.training.v1 import training_pb2_grpc

CLAIM_S = 3.0


def claimed_by(server: PostgresServer, database: str, job: str) -> str:
    with psycopg.connect(
        host="127.0.0.1", port=server.port, user=SERVER_USER, dbname=database
    ) as connection:
        (worker,) = connection.execute(
            "SELECT claimed_by FROM training_jobs WHERE job_id = %s", (job,)
        ).fetchone()
    return worker


def trial_rows(server: PostgresServer, database: str, job: str) -> list[tuple]:
    """(number, state, claimed_by, attempt, study_trial_number) of the job's trials."""
    with psycopg.connect(
        host="127.0.0.1", port=server.port, user=SERVER_USER, dbname=database
    ) as connection:
        return connection.execute(
            "SELECT number, state, claimed_by, attempt, study_trial_number FROM training_trials"
            " WHERE job_id = %s ORDER BY number",
            (job,),
        ).fetchall()


def worker_process(home: Path, env: dict[str, str]) -> ServiceProcess:
    port = free_port()
    process = ServiceProcess(
        "services.training.worker_server",
        {**env, "TFMESH_HOME": str(home), "TFMESH_TRAINING_WORKER_PORT": str(port)},
        port,
        home / "worker.log",
    )
    home.mkdir(parents=True, exist_ok=True)
    return process


@dataclass
class Fleet:
    postgres: PostgresServer
    database: str
    registry: ServiceProcess
    api: ServiceProcess
    workers: list[ServiceProcess]
    dataset: str

    def worker_of(self, claimant: str) -> ServiceProcess:
        """The worker process a claim names (`host:pid`)."""
        pid = int(claimant.split(":")[1])
        (worker,) = [w for w in self.workers if w.process is not None and w.process.pid == pid]
        return worker

    async def submit(self, spec: pb.JobSpec) -> str:
        async with open_channel(self.api.address) as channel:
            stub = training_pb2_grpc.TrainingServiceStub(channel)
            return (await stub.SubmitJob(pb.SubmitJobRequest(spec=spec))).job.name

    async def versions(self, model: str) -> list[registry_pb2.ModelVersion]:
        async with open_channel(self.registry.address) as channel:
            reply = await registry_pb2_grpc.RegistryServiceStub(channel).ListVersions(
                registry_pb2.ListVersionsRequest(model=model)
            )
        return list(reply.versions)


@pytest.fixture
async def fleet(
    tmp_path: Path, postgres_server: PostgresServer, object_store: LocalObjectStore
) -> AsyncIterator[Fleet]:
    async with running_fleet(tmp_path, postgres_server) as running:
        yield running


@asynccontextmanager
async def running_fleet(tmp_path: Path, postgres_server: PostgresServer) -> AsyncIterator[Fleet]:
    database = postgres_server.create_database()
    registry = service_process("services.registry.server", "TFMESH_REGISTRY_", tmp_path)
    data = service_process("services.data.server", "TFMESH_DATA_", tmp_path)
    training_env = {
        "TFMESH_TRAINING_DATABASE_URL": postgres_server.url(database),
        "TFMESH_TRAINING_BLOB_URL": f"{os.environ['TFMESH_BLOB_URL']}/training",
        "TFMESH_TRAINING_DATA_ADDR": data.address,
        "TFMESH_TRAINING_REGISTRY_ADDR": registry.address,
        "TFMESH_TRAINING_IDLE_POLL_S": "0.2",
        "TFMESH_TRAINING_CLAIM_S": str(CLAIM_S),
        # Every epoch, so that the kill lands after some checkpoint.
        "TFMESH_TRAINING_CHECKPOINT_INTERVAL_S": "0",
    }
    api = service_process(
        "services.training.server",
        "TFMESH_TRAINING_",
        tmp_path / "api",
        TFMESH_TRAINING_CONCURRENCY="0",
        **training_env,
    )
    workers = [worker_process(tmp_path / f"worker-{i}", training_env) for i in range(2)]
    api.log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        for process in (registry, data, api, *workers):
            await asyncio.to_thread(process.start)
        async with open_channel(data.address) as channel:
            imported = await data_pb2_grpc.DataServiceStub(channel).ImportSample(
                data_pb2.ImportSampleRequest(sample="digits")
            )
        yield Fleet(postgres_server, database, registry, api, workers, imported.version.name)
    finally:
        for process in (*workers, api, data, registry):
            process.stop_quietly()
        postgres_server.drop_database(database)


async def test_a_killed_workers_job_resumes_on_another_worker_and_registers_once(
    fleet: Fleet,
) -> None:
    spec = pb.JobSpec(
        dataset_version=fleet.dataset,
        model=pb.ModelSpec(mlp=pb.MlpTemplate(hidden_units=[64])),
        hyperparameters=pb.Hyperparameters(epochs=EPOCHS, batch_size=4),
        model_name="digits-fleet",
    )
    job = await fleet.submit(spec)
    await _wait(fleet.api.address, job, lambda j: j.epochs_completed >= 2, 120)
    victim = fleet.worker_of(claimed_by(fleet.postgres, fleet.database, job))
    victim.kill()
    survivor = next(w for w in fleet.workers if w is not victim)

    done = await _wait(
        fleet.api.address,
        job,
        lambda j: j.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED),
        240,
    )
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.error
    assert done.attempt == 2
    assert 2 <= done.resumed_from_epoch < EPOCHS
    assert done.epochs_completed == EPOCHS
    assert done.metrics["accuracy"] > 0.9
    assert fleet.worker_of(claimed_by(fleet.postgres, fleet.database, job)) is survivor
    # The survivor had never seen the job, and shares no disk with the victim: the
    # checkpoint it resumed from came from the bucket.
    survivor_home = Path(survivor.env["TFMESH_HOME"])
    assert (survivor_home / "training" / "jobs" / job / "checkpoints").is_dir()

    versions = await fleet.versions("digits-fleet")
    assert [v.version for v in versions] == [1]
    assert versions[0].lineage.training_job == job


async def test_a_search_runs_its_trials_on_both_workers_and_survives_a_killed_helper(
    fleet: Fleet,
) -> None:
    # Trials long enough (seconds each) that the second worker, which loads TensorFlow
    # only when it first trains, joins while some are still queued.
    trials = 6
    spec = pb.JobSpec(
        dataset_version=fleet.dataset,
        model=pb.ModelSpec(mlp=pb.MlpTemplate(hidden_units=[32])),
        hyperparameters=pb.Hyperparameters(epochs=1, batch_size=4),
        search=pb.SearchSpace(
            parameters=[
                pb.SearchParameter(
                    name="learning_rate",
                    float_range=pb.FloatRange(low=1e-3, high=3e-2, log=True),
                )
            ],
            max_trials=trials,
            epochs_per_trial=4,
        ),
        model_name="digits-search",
    )
    job = await fleet.submit(spec)
    await _wait(fleet.api.address, job, lambda j: j.state == pb.JOB_STATE_RUNNING, 60)
    driver = fleet.worker_of(claimed_by(fleet.postgres, fleet.database, job))
    helper = next(w for w in fleet.workers if w is not driver)

    # Both workers run a trial of the one search at the same time (the helper's has
    # its Optuna trial: it is training).
    deadline = asyncio.get_running_loop().time() + 180
    while True:
        rows = trial_rows(fleet.postgres, fleet.database, job)
        running = [(r, fleet.worker_of(r[2])) for r in rows if r[1] == "running"]
        on_helper = [r for r, worker in running if worker is helper and r[4] is not None]
        if on_helper and any(worker is driver for _, worker in running):
            break
        assert asyncio.get_running_loop().time() < deadline, "no two trials ran at once"
        await asyncio.sleep(0.1)
    (killed,) = on_helper
    helper.kill()

    done = await _wait(
        fleet.api.address,
        job,
        lambda j: j.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED),
        300,
    )
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.error
    assert done.attempt == 1, "the job itself never moved"
    # Every trial recorded exactly once; the killed one ran again, on the driver.
    assert sorted(t.number for t in done.trials) == list(range(trials))
    by_number = {r[0]: r for r in trial_rows(fleet.postgres, fleet.database, job)}
    assert all(r[1] == "complete" for r in by_number.values())
    assert by_number[killed[0]][3] == 2 and fleet.worker_of(by_number[killed[0]][2]) is driver
    # Optuna's study in the training database: the dead attempt failed, the rest complete.
    storage = optuna.storages.RDBStorage(
        fleet.postgres.url(fleet.database).replace("postgresql://", "postgresql+psycopg://")
    )
    study = optuna.load_study(study_name=f"tfmesh-training-{job}", storage=storage)
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE"] * trials + ["FAIL"]
    best = max(done.trials, key=lambda t: t.objective)
    assert float(done.params["learning_rate"]) == float(best.params["learning_rate"])
    assert [v.version for v in await fleet.versions("digits-search")] == [1]
