"""The controller's figures, read from the inference service's `GetVersionStats` over gRPC:
from one address, or summed over several (every replica of the service). With `fan_out`,
each address is resolved on every read to all the IPs its name stands for (a Kubernetes
headless Service names every pod), so the figures are the whole service's, however many
replicas it has now; one channel per endpoint is kept while the endpoint is named."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence

import grpc

from services.registry.rollouts.evidence import VersionFigures
from shared.errors import NotFound, Unavailable
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc

TIMEOUT_S = 5.0


def figures_of(stats: pb.VersionStats) -> VersionFigures:
    return VersionFigures(
        version=stats.version,
        requests=stats.requests,
        model_errors=stats.model_errors,
        latency_bounds=tuple(stats.latency_bounds_seconds),
        latency_counts=tuple(stats.latency_counts),
        feedback_rows=stats.feedback.classified_rows,
        feedback_correct=stats.feedback.correct_rows,
    )


def summed(parts: Sequence[VersionFigures]) -> VersionFigures:
    first = parts[0]
    if any(p.latency_bounds != first.latency_bounds for p in parts):
        raise Unavailable("inference replicas report different latency buckets (mixed builds?)")
    return VersionFigures(
        version=first.version,
        requests=sum(p.requests for p in parts),
        model_errors=sum(p.model_errors for p in parts),
        latency_bounds=first.latency_bounds,
        latency_counts=tuple(
            sum(counts) for counts in zip(*(p.latency_counts for p in parts), strict=True)
        ),
        feedback_rows=sum(p.feedback_rows for p in parts),
        feedback_correct=sum(p.feedback_correct for p in parts),
    )


Resolve = Callable[[str], Awaitable[list[str]]]


async def every_ip(host: str) -> list[str]:
    """The IPv4 addresses `host` resolves to (else its IPv6 ones), sorted; `localhost`'s
    two families are one server, so one family is read."""
    loop = asyncio.get_running_loop()
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            infos = await loop.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM)
        except OSError:
            continue
        if infos:
            return sorted({str(info[4][0]) for info in infos})
    return []


def _with_port(ip: str, port: str) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class InferenceFigures:
    def __init__(
        self,
        addresses: Sequence[str],
        open_channel: Callable[[str], grpc.aio.Channel],
        *,
        fan_out: bool = False,
        resolve: Resolve = every_ip,
    ) -> None:
        self._addresses = list(addresses)
        self._open = open_channel
        self._fan_out = fan_out
        self._resolve = resolve
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def endpoints(self) -> list[str]:
        """The addresses to read now: as given, or every IP each name stands for."""
        if not self._fan_out:
            return self._addresses
        found: list[str] = []
        for address in self._addresses:
            host, _, port = address.rpartition(":")
            ips = await self._resolve(host.strip("[]"))
            found += [_with_port(ip, port) for ip in ips] or [address]
        return found

    async def _stubs(self) -> list[inference_pb2_grpc.InferenceServiceStub]:
        wanted = await self.endpoints()
        for gone in set(self._channels) - set(wanted):
            await self._channels.pop(gone).close()
        for endpoint in wanted:
            if endpoint not in self._channels:
                self._channels[endpoint] = self._open(endpoint)
        return [inference_pb2_grpc.InferenceServiceStub(self._channels[e]) for e in wanted]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def figures(self, model: str) -> dict[int, VersionFigures]:
        request = pb.GetVersionStatsRequest(model=model)
        stubs = await self._stubs()
        try:
            answers = await asyncio.gather(
                *(stub.GetVersionStats(request, timeout=TIMEOUT_S) for stub in stubs)
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                raise NotFound("served model", model, "model") from None
            raise Unavailable(
                f"inference service: {error.code().name}: {error.details()}"
            ) from None
        parts: dict[int, list[VersionFigures]] = {}
        for answer in answers:
            for stats in answer.versions:
                parts.setdefault(stats.version, []).append(figures_of(stats))
        return {version: summed(found) for version, found in parts.items()}
