"""The local stack's shapes. Embedded (`tfmesh up`): one process per service, the
training service an API whose jobs one training worker process runs.

The scaled shape (`tfmesh up --scaled`) is what a cluster runs, on loopback.
Beside the embedded default it starts the backing services, a PostgreSQL server
(`$TFMESH_HOME/postgres`, one database per service) and a SeaweedFS S3 server
(`$TFMESH_HOME/seaweedfs`, bucket `tfmesh`); runs two replicas of the data, registry and
training services against them (the second on the first's ports + 100), the training
service as an API only, and two training worker processes. Every client of a replicated
service is given both replicas' addresses and spreads its calls over them (gRPC's round
robin), as Consul or a Kubernetes Service would. Both backing services keep their data
between `up` and `down`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cli.postgres import PostgresServer, find_binaries
from cli.seaweedfs import LocalObjectStore
from cli.service_spec import ServiceSpec

# A replica's ports are its first replica's plus this.
REPLICA_OFFSET = 100
REPLICATED = ("registry", "data", "training")
DATABASES = ("data", "registry", "training")
WORKER = ServiceSpec(
    "worker",
    "services.training.worker_server",
    "TFMESH_TRAINING_",
    50056,
    9106,
    port_variable="WORKER_PORT",
    metrics_variable="WORKER_METRICS_PORT",
    group="training-worker",
)


def embedded_services(services: list[ServiceSpec], worker: ServiceSpec) -> list[ServiceSpec]:
    """The services with the training API followed by `worker`, in start order."""
    shaped: list[ServiceSpec] = []
    for spec in services:
        if spec.name == "training":
            shaped += [replace(spec, env=(("TFMESH_TRAINING_CONCURRENCY", "0"),)), worker]
        else:
            shaped.append(spec)
    return shaped


def scaled_services(services: list[ServiceSpec], worker: ServiceSpec) -> list[ServiceSpec]:
    """Two replicas of each replicated service and two training workers (`worker` and its
    replica), in start order."""
    shaped: list[ServiceSpec] = []
    for spec in services:
        if spec.name not in REPLICATED:
            shaped.append(spec)
            continue
        first = spec
        if spec.name == "training":
            first = replace(spec, env=(("TFMESH_TRAINING_CONCURRENCY", "0"),))
        shaped += [first, _replica(first, f"{spec.name}-2")]
        if spec.name == "training":
            shaped += [replace(worker, name="worker-1"), _replica(worker, "worker-2")]
    return shaped


def _replica(spec: ServiceSpec, name: str) -> ServiceSpec:
    return replace(
        spec,
        name=name,
        group=spec.service,
        port=spec.port + REPLICA_OFFSET,
        metrics_port=spec.metrics_port + REPLICA_OFFSET,
    )


def postgres(home: Path) -> PostgresServer:
    return PostgresServer(find_binaries(), home / "postgres")


def object_store(home: Path) -> LocalObjectStore:
    return LocalObjectStore(home / "seaweedfs")


def start_backing_services(home: Path) -> dict[str, str]:
    """Start (or find running) PostgreSQL and SeaweedFS; the services' environment for them."""
    database = postgres(home)
    if (home / "postgres" / "data" / "postmaster.pid").is_file():
        database.port = int((home / "postgres" / "port").read_text())
    else:
        (home / "postgres").mkdir(parents=True, exist_ok=True)
        database.start()
        print(f"{'postgres':<10} serving on 127.0.0.1:{database.port}")
    env = {}
    for service in DATABASES:
        database.create_named_database(f"tfmesh_{service}")
        env[f"TFMESH_{service.upper()}_DATABASE_URL"] = database.url(f"tfmesh_{service}")
    store = object_store(home)
    if not store.running():
        store.start()
        print(f"{'seaweedfs':<10} S3 API on {store.endpoint}")
    env.update(store.environment("stack"))
    return env


def stop_backing_services(home: Path) -> None:
    object_store(home).stop()
    if (home / "postgres" / "data" / "postmaster.pid").is_file():
        postgres(home).stop()
        print(f"{'postgres':<10} stopped")
