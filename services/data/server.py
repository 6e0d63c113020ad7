"""Start-up of the data service: `python -m services.data.server`."""

from __future__ import annotations

import asyncio
import logging

from services.data.core import CoreConfig, DataCore
from services.data.ingest import IngestLimits
from services.data.lineage import RegistryLineage
from services.data.servicer import DataServicer
from services.data.settings import DataSettings
from services.data.store import MetadataStore
from shared.blob_collector import BlobCollector, run_collector
from shared.blobstore import open_service_blobs
from shared.channels import check_peer_tls, peer_channel
from shared.db import make_engine, sqlite_url
from shared.server import RunningServer, run_service, serve, start_server
from shared.settings import load_settings
from shared.telemetry import Telemetry, setup_telemetry
from tfmesh.data.v1 import data_pb2, data_pb2_grpc

SERVICE_NAME = data_pb2.DESCRIPTOR.services_by_name["DataService"].full_name
log = logging.getLogger(__name__)


def core_config(settings: DataSettings) -> CoreConfig:
    return CoreConfig(
        ingest=IngestLimits(
            parse_block_bytes=settings.parse_block_bytes,
            shard_bytes=settings.shard_bytes,
            max_categories=settings.max_categories,
            histogram_bins=settings.histogram_bins,
            max_anomaly_examples=settings.max_anomaly_examples,
        ),
        default_max_bad_row_fraction=settings.default_max_bad_row_fraction,
        max_upload_bytes=settings.max_upload_bytes,
        default_batch_size=settings.default_batch_size,
        max_batch_size=settings.max_batch_size,
        max_message_bytes=settings.max_message_bytes,
        default_page_size=settings.default_page_size,
    )


async def start_data(settings: DataSettings, telemetry: Telemetry) -> RunningServer:
    """Build the data core on its store and serve it; used by `main` and by tests."""
    home = settings.home / "data"
    engine = make_engine(settings.database_url or sqlite_url(home / "data.db"))
    blobs = await asyncio.to_thread(open_service_blobs, settings, home)
    if settings.registry_addr:
        await check_peer_tls({"registry": settings.registry_addr}, settings.tls_files())
    registry = (
        peer_channel("registry", settings.registry_addr, settings, telemetry)
        if settings.registry_addr
        else None
    )
    lineage = RegistryLineage(registry, settings.registry_deadline_s) if registry else None
    store = MetadataStore(engine)
    core = DataCore(store, blobs, core_config(settings), lineage)
    # A shared store's spool may hold another replica's upload (one host, one home).
    swept = await asyncio.to_thread(
        blobs.sweep_temp, settings.blob_grace_s if blobs.shared else 0.0
    )
    if swept:
        log.info("removed unfinished uploads", extra={"temp_files": swept})
    if not blobs.shared:
        collected = await asyncio.to_thread(core.collect_garbage)
        if collected:
            log.info("removed blobs no version names", extra={"unnamed_blobs": collected})
    running = await start_server(
        settings,
        telemetry,
        lambda server: data_pb2_grpc.add_DataServiceServicer_to_server(DataServicer(core), server),
        [SERVICE_NAME],
    )

    async def dispose() -> None:
        if registry is not None:
            await registry.close()
        engine.dispose()

    # Stop callbacks run last first: the engine is disposed after every loop using it.
    running.on_stop(dispose)
    running.watch_dependency(
        f"blob store {blobs.describe()}", blobs.check, settings.blob_check_interval_s
    )
    if blobs.shared:
        collector = BlobCollector(blobs, store.referenced, settings.blob_grace_s)
        running.on_stop(run_collector(collector, engine, "data", settings.blob_collect_interval_s))
    return running


async def main() -> None:
    settings = load_settings(DataSettings)
    telemetry = setup_telemetry("data")
    running = await start_data(settings, telemetry)
    await serve(running, settings, "data")
    telemetry.shutdown()


if __name__ == "__main__":
    run_service("data", main)
