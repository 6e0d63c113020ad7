"""What the local stack knows of each process it runs: module, settings prefix, ports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    env_prefix: str
    port: int
    # Its Prometheus /metrics port, on `<PREFIX>METRICS_PORT` when that is set.
    metrics_port: int
    # The gateway speaks HTTP: its health is GET /healthz instead of grpc.health.v1.
    http: bool = False
    # A REST port beside the gRPC one (inference), on `<PREFIX>HTTP_PORT` when that is set.
    http_port: int | None = None
    # The settings that carry its ports (a training worker shares the service's prefix).
    port_variable: str = "PORT"
    metrics_variable: str = "METRICS_PORT"
    # The service it is a replica of (its peers reach every replica of a group); its name
    # when empty.
    group: str = ""
    # Settings of this process alone.
    env: tuple[tuple[str, str], ...] = ()

    @property
    def service(self) -> str:
        return self.group or self.name

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def is_built(self) -> bool:
        return (REPO / self.module.replace(".", "/")).with_suffix(".py").is_file()

    def process_environment(self) -> dict[str, str]:
        return {
            f"{self.env_prefix}{self.port_variable}": str(self.port),
            f"{self.env_prefix}{self.metrics_variable}": str(self.metrics_port),
            **dict(self.env),
        }
