"""Start-up of the registry service: `python -m services.registry.server`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import Engine

from services.registry import entities as e
from services.registry.core import Registry
from services.registry.rollouts.controller import RolloutController
from services.registry.rollouts.figures import InferenceFigures
from services.registry.servicer import RegistryServicer
from services.registry.settings import RegistrySettings
from services.registry.watch import ChangeSignal
from shared.blob_collector import BlobCollector, run_collector
from shared.blobstore import open_service_blobs
from shared.channels import peer_channel
from shared.db import make_engine, sqlite_url
from shared.leases import Lease, replica_name, run_while_holding
from shared.server import RunningServer, run_service, serve, start_server
from shared.settings import load_settings
from shared.telemetry import Telemetry, setup_telemetry
from tfmesh.registry.v1 import registry_pb2, registry_pb2_grpc

# The lease whose holder runs the rollout controller (one replica at a time).
CONTROLLER_LEASE = "rollout-controller"
SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name
log = logging.getLogger(__name__)


async def start_registry(settings: RegistrySettings, telemetry: Telemetry) -> RunningServer:
    """Build the registry on its store and serve it; used by `main` and by tests."""
    home = settings.home / "registry"
    engine = make_engine(settings.database_url or sqlite_url(home / "registry.db"))
    blobs = await asyncio.to_thread(open_service_blobs, settings, home)
    # A shared store's spool may hold another replica's upload (one host, one home).
    swept = await asyncio.to_thread(
        blobs.sweep_temp, settings.blob_grace_s if blobs.shared else 0.0
    )
    if swept:
        log.info("removed unfinished uploads", extra={"count": swept})
    signal = ChangeSignal(asyncio.get_running_loop())
    registry = Registry(
        engine,
        blobs,
        default_rule=e.PromotionRule(
            settings.default_promotion_metric,
            settings.default_min_improvement,
            settings.default_higher_is_better,
        ),
        max_artifact_bytes=settings.max_artifact_bytes,
        default_page_size=settings.default_page_size,
        on_change=signal.notify,
    )
    servicer = RegistryServicer(registry, signal, settings.watch_poll_interval_s)
    running = await start_server(
        settings,
        telemetry,
        lambda server: registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
    )

    async def dispose() -> None:
        engine.dispose()

    # Stop callbacks run last first: the engine is disposed after every loop using it.
    running.on_stop(dispose)
    running.watch_dependency(
        f"blob store {blobs.describe()}", blobs.check, settings.blob_check_interval_s
    )
    if blobs.shared:
        collector = BlobCollector(blobs, registry.referenced_blobs, settings.blob_grace_s)
        running.on_stop(
            run_collector(collector, engine, "registry", settings.blob_collect_interval_s)
        )
    if settings.inference_addr:
        running.on_stop(start_controller(registry, engine, settings, telemetry))
    return running


def start_controller(
    registry: Registry, engine: Engine, settings: RegistrySettings, telemetry: Telemetry
) -> Callable[[], Awaitable[None]]:
    """Run the rollout controller on the inference service's figures, in whichever replica
    holds its lease; returns its stop."""
    figures = InferenceFigures(
        settings.inference_addr,
        lambda address: peer_channel("inference", address, settings, telemetry),
        fan_out=settings.inference_fan_out,
    )
    controller = RolloutController(registry, registry.rollouts, figures)
    lease = Lease(engine, CONTROLLER_LEASE, replica_name(), settings.controller_lease_s)
    task = asyncio.create_task(
        run_while_holding(lease, controller.tick, settings.rollout_interval_s)
    )
    log.info(
        "rollout controller started, once it holds its lease",
        extra={"inference": settings.inference_addr, "holder": lease.holder},
    )

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await figures.close()

    return stop


async def main() -> None:
    settings = load_settings(RegistrySettings)
    telemetry = setup_telemetry("registry")
    running = await start_registry(settings, telemetry)
    await serve(running, settings, "registry")
    telemetry.shutdown()


if __name__ == "__main__":
    run_service("registry", main)
