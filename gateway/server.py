"""Start-up of the gateway: `python -m gateway.server` serves the app with uvicorn."""

from __future__ import annotations

import asyncio

import uvicorn
from prometheus_client import start_http_server

from gateway.app import create_app
from gateway.backends import Backends
from gateway.settings import GatewaySettings
from shared.channels import check_peer_tls
from shared.heap import freeze_heap
from shared.settings import load_settings
from shared.telemetry import setup_telemetry
from shared.tls import uvicorn_tls


def main() -> None:
    settings = load_settings(GatewaySettings)
    peers = {
        "registry": settings.registry_addr,
        "data": settings.data_addr,
        "training": settings.training_addr,
        "inference": settings.inference_addr,
    }
    asyncio.run(check_peer_tls(peers, settings.tls_files()))
    telemetry = setup_telemetry("gateway")
    app = create_app(settings, Backends(settings, telemetry), telemetry)
    if settings.metrics_port >= 0:
        start_http_server(settings.metrics_port, addr=settings.host)
    freeze_heap()
    # gateway.access_log writes the access lines (with the model and version).
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        **uvicorn_tls(settings.tls_files()),
    )
    telemetry.shutdown()


if __name__ == "__main__":
    main()
