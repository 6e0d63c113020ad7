"""Start-up of the training service: `python -m services.training.server`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import REGISTRY

from services.training.checkpoint_store import CheckpointMirror
from services.training.core import TrainingCore
from services.training.data_service_source import DataServiceSource
from services.training.datasource import DataSource
from services.training.jobs import Registrar
from services.training.metrics import JobsByState
from services.training.registrar import RegistryRegistrar
from services.training.servicer import TrainingServicer
from services.training.settings import TrainingSettings
from services.training.store import JobStore
from services.training.worker import WorkerPool
from shared.blob_collector import BlobCollector, run_collector
from shared.blobstore import BlobStore, open_service_blobs
from shared.channels import check_peer_tls, peer_channel
from shared.db import make_engine, sqlite_url
from shared.server import RunningServer, run_service, serve, start_server
from shared.settings import load_settings
from shared.telemetry import Telemetry, setup_telemetry
from tfmesh.training.v1 import training_pb2, training_pb2_grpc

SERVICE_NAME = training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name


def training_home(settings: TrainingSettings) -> Path:
    return settings.home / "training"


def job_store(settings: TrainingSettings) -> JobStore:
    """The job queue the service and its workers share."""
    return JobStore(
        make_engine(settings.database_url or sqlite_url(training_home(settings) / "jobs.db"))
    )


async def worker_pool(
    settings: TrainingSettings,
    store: JobStore,
    blobs: BlobStore,
    data_source: DataSource,
    registrar: Registrar | None,
    concurrency: int,
) -> WorkerPool:
    """The workers of this process; with a shared blob store their checkpoints go there,
    so a job resumes on whichever worker claims it next."""
    home = training_home(settings)
    return WorkerPool(
        store,
        data_source,
        registrar,
        home / "jobs",
        settings.code_version,
        concurrency,
        settings.idle_poll_s,
        claim_s=settings.claim_s,
        mirror=CheckpointMirror(blobs, store) if blobs.shared else None,
        checkpoint_interval_s=settings.checkpoint_interval_s,
    )


async def start_training(
    settings: TrainingSettings,
    telemetry: Telemetry,
    data_source: DataSource,
    registrar: Registrar | None,
) -> RunningServer:
    """Build the store, the worker pool and the core on the given peers, and serve them;
    used by `main` (peers over gRPC) and by tests (peers of their choosing)."""
    store = job_store(settings)
    engine = store.engine
    blobs = await asyncio.to_thread(open_service_blobs, settings, training_home(settings))
    pool = await worker_pool(settings, store, blobs, data_source, registrar, settings.concurrency)
    core = TrainingCore(store, data_source, pool, settings.watch_poll_s)
    servicer = TrainingServicer(core)
    running = await start_server(
        settings,
        telemetry,
        lambda server: training_pb2_grpc.add_TrainingServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
    )
    await pool.start()
    jobs_by_state = JobsByState(store.count_by_state)
    REGISTRY.register(jobs_by_state)

    async def dispose() -> None:
        REGISTRY.unregister(jobs_by_state)
        await pool.stop()
        engine.dispose()

    running.on_stop(dispose)
    watch_blobs(running, settings, blobs)
    if blobs.shared:
        # The checkpoints of jobs that ended, or moved on to a newer one, are garbage.
        collector = BlobCollector(blobs, store.checkpoints_in_use, settings.blob_grace_s)
        running.on_stop(
            run_collector(collector, engine, "training", settings.blob_collect_interval_s)
        )
    return running


def watch_blobs(running: RunningServer, settings: TrainingSettings, blobs: BlobStore) -> None:
    running.watch_dependency(
        f"blob store {blobs.describe()}", blobs.check, settings.blob_check_interval_s
    )


async def serve_with_peers(
    name: str,
    start: Callable[
        [TrainingSettings, Telemetry, DataSource, Registrar | None], Awaitable[RunningServer]
    ],
) -> None:
    """The process of the training service or of a worker: its peers over gRPC, `start`
    on them, serve until signalled, then close the peers."""
    settings = load_settings(TrainingSettings)
    telemetry = setup_telemetry(name)
    peers = {"data": settings.data_addr, "registry": settings.registry_addr}
    await check_peer_tls(peers, settings.tls_files())
    data_channel = peer_channel("data", settings.data_addr, settings, telemetry)
    registry_channel = peer_channel("registry", settings.registry_addr, settings, telemetry)
    running = await start(
        settings,
        telemetry,
        DataServiceSource(data_channel, direct_reads=settings.direct_reads),
        RegistryRegistrar(registry_channel, settings.registration_deadline_s),
    )
    await serve(running, settings, name)
    # Only now: stopping the server stopped the workers, which may have been registering.
    await data_channel.close()
    await registry_channel.close()
    telemetry.shutdown()


async def main() -> None:
    await serve_with_peers("training", start_training)


if __name__ == "__main__":
    run_service("training", main)
