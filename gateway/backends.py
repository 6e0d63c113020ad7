"""The gateway's gRPC side: one channel per service, each call given the request's deadline,
and idempotent calls retried (tenacity, bounded by that deadline)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from gateway.settings import GatewaySettings
from shared.channels import open_channel
from shared.retries import retry_idempotent
from shared.telemetry import Telemetry
from tfmesh.registry.v1 import registry_pb2_grpc

T = TypeVar("T")


class Backends:
    def __init__(self, settings: GatewaySettings, telemetry: Telemetry | None) -> None:
        self.deadline_s = settings.deadline_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._addresses = {
            "registry": settings.registry_addr,
            "data": settings.data_addr,
            "training": settings.training_addr,
            "inference": settings.inference_addr,
        }
        self._telemetry = telemetry

    def channel(self, service: str) -> grpc.aio.Channel:
        """The channel to `service`, opened on first use (peers may start after us)."""
        if service not in self._channels:
            self._channels[service] = open_channel(self._addresses[service], self._telemetry)
        return self._channels[service]

    @property
    def registry(self) -> registry_pb2_grpc.RegistryServiceStub:
        return registry_pb2_grpc.RegistryServiceStub(self.channel("registry"))

    async def call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """A call that changes state: one attempt, within the deadline."""
        return await method(request, timeout=self.deadline_s)

    async def read(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """An idempotent call: retried on transient codes until the deadline."""
        return await retry_idempotent(
            lambda timeout: method(request, timeout=timeout), deadline_s=self.deadline_s
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
