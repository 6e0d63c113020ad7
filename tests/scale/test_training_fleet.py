"""Training on a fleet of worker processes: the training API with no workers of its own,
two worker processes (separate homes, as on two machines), one real PostgreSQL for the
queue and one S3 server (SeaweedFS) for checkpoints. The worker running a job is
SIGKILLed mid-epoch and not restarted: the other worker takes the job over once the
dead one's claim lapses, resumes from the checkpoint in the bucket, and registers
exactly one version."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psycopg

from cli.postgres import SERVER_USER, PostgresServer
from cli.seaweedfs import LocalObjectStore
from shared.channels import open_channel
from tests.support.processes import ServiceProcess, free_port, service_process
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


async def test_a_killed_workers_job_resumes_on_another_worker_and_registers_once(
    tmp_path: Path, postgres_server: PostgresServer, object_store: LocalObjectStore
) -> None:
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
        spec = pb.JobSpec(
            dataset_version=imported.version.name,
            model=pb.ModelSpec(mlp=pb.MlpTemplate(hidden_units=[64])),
            hyperparameters=pb.Hyperparameters(epochs=EPOCHS, batch_size=4),
            model_name="digits-fleet",
        )
        async with open_channel(api.address) as channel:
            stub = training_pb2_grpc.TrainingServiceStub(channel)
            job = (await stub.SubmitJob(pb.SubmitJobRequest(spec=spec))).job
        await _wait(api.address, job.name, lambda j: j.epochs_completed >= 2, 120)
        holder = claimed_by(postgres_server, database, job.name)
        pid = int(holder.split(":")[1])
        (victim,) = [w for w in workers if w.process is not None and w.process.pid == pid]
        victim.kill()
        survivor = next(w for w in workers if w is not victim)

        done = await _wait(
            api.address,
            job.name,
            lambda j: j.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED),
            240,
        )
        assert done.state == pb.JOB_STATE_SUCCEEDED, done.error
        assert done.attempt == 2
        assert 2 <= done.resumed_from_epoch < EPOCHS
        assert done.epochs_completed == EPOCHS
        assert done.metrics["accuracy"] > 0.9
        assert survivor.process is not None
        assert claimed_by(postgres_server, database, job.name).split(":")[1] == str(
            survivor.process.pid
        )
        # The survivor had never seen the job, and shares no disk with the victim: the
        # checkpoint it resumed from came from the bucket.
        survivor_home = Path(survivor.env["TFMESH_HOME"])
        assert (survivor_home / "training" / "jobs" / job.name / "checkpoints").is_dir()

        async with open_channel(registry.address) as channel:
            versions = await registry_pb2_grpc.RegistryServiceStub(channel).ListVersions(
                registry_pb2.ListVersionsRequest(model="digits-fleet")
            )
        assert [v.version for v in versions.versions] == [1]
        assert versions.versions[0].lineage.training_job == job.name
    finally:
        for process in (*workers, api, data, registry):
            process.stop_quietly()
        postgres_server.drop_database(database)
