"""Start-up of a training worker process: `python -m services.training.worker_server`.

A worker has no API of its own: it claims queued jobs from the training database (the
same `TFMESH_TRAINING_*` settings as the service), heartbeats its claims, reads datasets
from the data service, keeps checkpoints in the blob store when that is shared, and
registers models in the registry. Any number run, on any machines; the training service
itself may run none (`TFMESH_TRAINING_CONCURRENCY=0`). It serves gRPC health (liveness
and readiness) on `TFMESH_TRAINING_WORKER_PORT` and its metrics on
`TFMESH_TRAINING_WORKER_METRICS_PORT`, and on SIGTERM puts its running jobs back in the
queue at their next batch."""

from __future__ import annotations

import asyncio

from services.training.datasource import DataSource
from services.training.jobs import Registrar
from services.training.server import (
    job_store,
    serve_with_peers,
    training_home,
    watch_blobs,
    worker_pool,
)
from services.training.settings import TrainingSettings
from shared.blobstore import open_service_blobs
from shared.server import RunningServer, run_service, start_server
from shared.telemetry import Telemetry


async def start_worker(
    settings: TrainingSettings,
    telemetry: Telemetry,
    data: DataSource,
    registrar: Registrar | None,
) -> RunningServer:
    store = job_store(settings)
    blobs = await asyncio.to_thread(open_service_blobs, settings, training_home(settings))
    pool = await worker_pool(settings, store, blobs, data, registrar, max(1, settings.concurrency))
    running = await start_server(
        settings.model_copy(
            update={"port": settings.worker_port, "metrics_port": settings.worker_metrics_port}
        ),
        telemetry,
        lambda server: None,
        [],
    )
    await pool.start()

    async def dispose() -> None:
        await pool.stop()
        store.engine.dispose()

    running.on_stop(dispose)
    watch_blobs(running, settings, blobs)
    return running


async def main() -> None:
    await serve_with_peers("training-worker", start_worker)


if __name__ == "__main__":
    run_service("training-worker", main)
