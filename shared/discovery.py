"""Finding peer services: static addresses by default, Consul's catalog when configured.

With `CONSUL_HTTP_ADDR` set each service registers itself with the local Consul agent
(with a gRPC health check against its own port, deregistered on shutdown and by Consul
after a minute critical). With `TFMESH_DISCOVERY=consul` as well, a service reaches each
peer through a `BalancedChannel`: the peer's passing instances, followed by Consul
blocking queries (`ConsulWatch`), one instance per call in turn; the last good set stays
while Consul is away. Otherwise peers come from the `<PREFIX><PEER>_ADDR` settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Callable
from typing import Any

import consul
import grpc

from shared.errors import Unavailable


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


class ConsulWatch:
    """The passing instances of one service, kept current by Consul blocking queries.

    `start()` runs a task that asks `health/service/<name>?passing` with the last index it
    saw, so Consul answers when the set changes (or after `wait`); `addresses` is the
    newest set. While Consul cannot be reached the last good set stays, and the task
    retries with backoff."""

    def __init__(self, client: consul.Consul, service: str, wait: str = "5s") -> None:
        self._client = client
        self.service = service
        self._wait = wait
        self.addresses: list[str] = []
        self._index: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()

    async def refresh(self) -> None:
        """One query: blocking when an index is known."""
        kwargs: dict[str, str] = {"wait": self._wait} if self._index else {}
        index, nodes = await asyncio.to_thread(
            self._client.health.service, self.service, passing=True, index=self._index, **kwargs
        )
        self._index = index
        self.addresses = [
            f"{n['Service'].get('Address') or n['Node']['Address']}:{n['Service']['Port']}"
            for n in nodes
        ]
        self._first.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name=f"consul-watch-{self.service}")

    async def wait_ready(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._first.wait(), timeout_s)

    async def _follow(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self.refresh()
                backoff = 0.1
            except Exception:  # noqa: BLE001 - Consul away: keep the last good set, retry
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class BalancedChannel:
    """A channel over every passing instance of a service: each call goes to the next
    instance in turn (round-robin), so a retried idempotent call lands on another one.

    It offers the four multicallable factories a generated stub uses, each returning a
    callable that picks the instance per call; channels to instances are opened on first
    use (`open_instance`) and closed when the instance leaves the set."""

    def __init__(self, watch: ConsulWatch, open_instance: Callable[[str], Any]) -> None:
        self._watch = watch
        self._open = open_instance
        self._channels: dict[str, Any] = {}
        self._turn = 0
        watch.start()

    def _next(self) -> Any:
        addresses = self._watch.addresses
        if not addresses:
            # What a channel to a peer that is down answers: retried like one.
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details=f"no passing instance of {self._watch.service!r} in Consul",
            )
        for gone in set(self._channels) - set(addresses):
            # Closing is asynchronous; the channel is dropped and closes when collected.
            self._channels.pop(gone)
        address = addresses[self._turn % len(addresses)]
        self._turn += 1
        if address not in self._channels:
            self._channels[address] = self._open(address)
        return self._channels[address]

    def _factory(self, kind: str) -> Callable[..., Any]:
        def make(method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
            def call(*call_args: Any, **call_kwargs: Any) -> Any:
                channel = self._next()
                return getattr(channel, kind)(method, *args, **kwargs)(*call_args, **call_kwargs)

            return call

        return make

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        return self._factory("unary_unary")(method, *args, **kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        return self._factory("unary_stream")(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        return self._factory("stream_unary")(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        return self._factory("stream_stream")(method, *args, **kwargs)

    async def wait_ready(self, timeout_s: float) -> None:
        """Until Consul has answered once (calls before then are UNAVAILABLE)."""
        await self._watch.wait_ready(timeout_s)

    async def close(self) -> None:
        await self._watch.stop()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def __aenter__(self) -> BalancedChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
