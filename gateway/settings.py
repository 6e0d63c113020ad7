"""Settings of the gateway, from `TFMESH_GATEWAY_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import TlsSettings


class GatewaySettings(TlsSettings):
    model_config = SettingsConfigDict(env_prefix="TFMESH_GATEWAY_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    registry_addr: str = "127.0.0.1:50053"
    data_addr: str = "127.0.0.1:50051"
    training_addr: str = "127.0.0.1:50052"
    inference_addr: str = "127.0.0.1:50054"
    # The inference service's REST port, where `/v2/...` and `/v1/models/...` go.
    inference_http_addr: str = "127.0.0.1:50055"
    # When set, every route but health and the OpenAPI document needs
    # `Authorization: Bearer <token>`.
    api_token: str = ""
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Prometheus /metrics HTTP port; 0 picks a free one, -1 turns it off.
    metrics_port: int = Field(default=-1, ge=-1, le=65535)
    # Deadline of each gRPC call made for a request, retries included.
    deadline_s: float = Field(default=30.0, gt=0)
    # Deadline of a training job's event stream (`GET /api/v1/jobs/{job}/events`), which
    # stays open while the job runs.
    watch_deadline_s: float = Field(default=3600.0, gt=0)
