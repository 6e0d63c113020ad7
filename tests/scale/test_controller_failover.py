"""The rollout controller across registry replicas: two registry processes on one real
PostgreSQL and one S3 server (SeaweedFS), an inference service reaching both, steady load
with feedback. Mid-rollout the replica holding the controller's lease is SIGKILLed and
not restarted: the other takes the lease over and finishes the rollout, every step
recorded exactly once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import psycopg

from cli.postgres import SERVER_USER, PostgresServer
from cli.seaweedfs import LocalObjectStore
from services.registry.server import CONTROLLER_LEASE
from tests.inference.test_process import wait_for_labels
from tests.rollouts import models
from tests.rollouts.test_rollout_process import (
    ENDED,
    MODEL,
    POLICY,
    Traffic,
    assert_promoted_step_by_step,
    upload,
    wait_rollout,
)
from tests.support.processes import ServiceProcess, service_process
from tfmesh.registry.v1 import registry_pb2 as pb
from tfmesh.registry.v1 import registry_pb2_grpc

LEASE_S = 2.0


def lease_holder(server: PostgresServer, database: str) -> tuple[str, int]:
    with psycopg.connect(
        host="127.0.0.1", port=server.port, user=SERVER_USER, dbname=database
    ) as connection:
        holder, generation = connection.execute(
            "SELECT holder, generation FROM leases WHERE name = %s", (CONTROLLER_LEASE,)
        ).fetchone()
    return holder, generation


def replica_of(holder: str, replicas: list[ServiceProcess]) -> ServiceProcess:
    pid = int(holder.split(":")[1])
    (replica,) = [r for r in replicas if r.process is not None and r.process.pid == pid]
    return replica


def test_a_rollout_finishes_when_the_controllers_replica_is_killed(
    tmp_path: Path, postgres_server: PostgresServer, object_store: LocalObjectStore
) -> None:
    data = models.digits()
    tars = {
        1: models.export(models.trained(16, 5, data), tmp_path / "v1"),
        2: models.export(models.trained(64, 20, data), tmp_path / "v2"),
    }
    database = postgres_server.create_database()
    inference = service_process(
        "services.inference.server",
        "TFMESH_INFERENCE_",
        tmp_path / "inference",
        TFMESH_INFERENCE_MODELS=MODEL,
        TFMESH_INFERENCE_FRONTENDS="1",
        TFMESH_INFERENCE_REGISTRY_MAX_BACKOFF_S="0.5",
        TFMESH_INFERENCE_MAX_BATCH_SIZE="16",
    )
    replicas = [
        service_process(
            "services.registry.server",
            "TFMESH_REGISTRY_",
            tmp_path / f"registry-{i}",
            TFMESH_REGISTRY_DATABASE_URL=postgres_server.url(database),
            TFMESH_REGISTRY_BLOB_URL=f"{os.environ['TFMESH_BLOB_URL']}/registry",
            TFMESH_REGISTRY_WATCH_POLL_INTERVAL_S="0.2",
            TFMESH_REGISTRY_INFERENCE_ADDR=inference.address,
            TFMESH_REGISTRY_ROLLOUT_INTERVAL_S="0.2",
            TFMESH_REGISTRY_CONTROLLER_LEASE_S=str(LEASE_S),
        )
        for i in range(2)
    ]
    both = ",".join(replica.address for replica in replicas)
    inference.env["TFMESH_INFERENCE_REGISTRY_ADDR"] = both
    for process in (inference, *replicas):
        process.log_path.parent.mkdir(parents=True, exist_ok=True)
    traffic = Traffic(inference.address, data)
    try:
        for replica in replicas:
            replica.start()
        assert upload(replicas[0].address, tars[1], 0.90) == 1
        with grpc.insecure_channel(replicas[1].address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            stub.SetAlias(pb.SetAliasRequest(model=MODEL, alias="production", version=1))
            stub.SetRolloutPolicy(pb.SetRolloutPolicyRequest(policy=POLICY))
        inference.start(timeout_s=120)
        wait_for_labels(inference.address, {"production": 1})
        traffic.start()

        assert upload(replicas[1].address, tars[2], 0.95) == 2
        wait_rollout(replicas[0].address, 2, lambda r: r.step >= 1)
        holder, generation = lease_holder(postgres_server, database)
        killed = replica_of(holder, replicas)
        killed.kill()  # not restarted: the other replica must take over
        survivor = next(r for r in replicas if r is not killed)
        killed_at = time.monotonic()

        rollout = wait_rollout(survivor.address, 2, lambda r: r.state in ENDED)
        assert rollout.state == pb.Rollout.STATE_PROMOTED, rollout
        assert [(e.kind, e.step, e.traffic_weight) for e in rollout.events] == [
            ("started", 0, 5),
            ("stepped", 1, 20),
            ("stepped", 2, 50),
            ("stepped", 3, 100),
            ("promoted", 3, 100),
        ]
        new_holder, new_generation = lease_holder(postgres_server, database)
        assert replica_of(new_holder, replicas) is survivor
        assert new_generation == generation + 1
        assert time.monotonic() - killed_at < 120
        assert_promoted_step_by_step(survivor.address, 2)
        wait_for_labels(inference.address, {"production": 2})
        answers = traffic.take()
        assert {code for _, code in answers} == {"OK"}, answers
    finally:
        traffic.stop()
        inference.stop_quietly()
        for replica in replicas:
            replica.stop_quietly()
        postgres_server.drop_database(database)
