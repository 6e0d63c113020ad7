"""Finding peer services: static addresses by default, Consul's catalog when configured.

With `CONSUL_HTTP_ADDR` unset a service resolves peers from its settings. With it set,
each service registers itself with the local Consul agent (with a gRPC health check
against its own port) and resolves peers to a passing instance from Consul's health API."""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from typing import Protocol

import consul

from shared.errors import Unavailable


class Resolver(Protocol):
    async def resolve(self, service: str) -> str: ...


@dataclass
class StaticResolver:
    """Addresses known up front, e.g. `{"registry": "127.0.0.1:50053"}`."""

    addresses: dict[str, str] = field(default_factory=dict)

    async def resolve(self, service: str) -> str:
        try:
            return self.addresses[service]
        except KeyError:
            raise Unavailable(f"no address configured for service {service!r}") from None


class ConsulDiscovery:
    """Registration and resolution through a Consul agent's HTTP API (py-consul)."""

    def __init__(self, client: consul.Consul) -> None:
        self._client = client
        self._registered: list[str] = []

    @classmethod
    def from_env(cls) -> ConsulDiscovery | None:
        return cls(consul.Consul()) if os.environ.get("CONSUL_HTTP_ADDR") else None

    async def register(self, service: str, host: str, port: int, interval: str = "10s") -> str:
        service_id = f"{service}-{host}-{port}"
        check = consul.Check.grpc(f"{host}:{port}", interval, deregister="1m")
        await asyncio.to_thread(
            self._client.agent.service.register,
            service,
            service_id=service_id,
            address=host,
            port=port,
            check=check,
        )
        self._registered.append(service_id)
        return service_id

    async def deregister_all(self) -> None:
        for service_id in self._registered:
            await asyncio.to_thread(self._client.agent.service.deregister, service_id)
        self._registered.clear()

    async def resolve(self, service: str) -> str:
        _, nodes = await asyncio.to_thread(self._client.health.service, service, passing=True)
        if not nodes:
            raise Unavailable(f"no passing instance of {service!r} in Consul")
        chosen = random.choice(nodes)
        address = chosen["Service"].get("Address") or chosen["Node"]["Address"]
        return f"{address}:{chosen['Service']['Port']}"
