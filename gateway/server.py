"""Start-up of the gateway: `python -m gateway.server` serves the app with uvicorn."""

from __future__ import annotations

import uvicorn
from prometheus_client import start_http_server

from gateway.app import create_app
from gateway.backends import Backends
from gateway.settings import GatewaySettings
from shared.settings import load_settings
from shared.telemetry import setup_telemetry


def main() -> None:
    settings = load_settings(GatewaySettings)
    telemetry = setup_telemetry("gateway")
    app = create_app(settings, Backends(settings, telemetry), telemetry)
    if settings.metrics_port >= 0:
        start_http_server(settings.metrics_port, addr=settings.host)
    # gateway.access_log writes the access lines (with the model and version).
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)
    telemetry.shutdown()


if __name__ == "__main__":
    main()
