"""The registry as the inference service sees it: a feed of alias events and artifacts.

`follow` probes the registry, keeps a Watch stream open for the served models and hands
each alias event to a callback. When the registry is unreachable it retries with
exponential backoff and jitter and resumes after the last revision it saw, while the
loaded models keep serving. `fetch` downloads an artifact into a local cache through the
registry client, which checks the sha256 before the file appears."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from pathlib import Path

import grpc

from services.inference.alias_feed import AliasEvent
from services.registry.client import RegistryClient
from shared.errors import Unavailable
from tfmesh.registry.v1 import registry_pb2 as pb

log = logging.getLogger(__name__)

ALIAS_EVENTS = frozenset(
    {
        pb.WatchResponse.EVENT_TYPE_ALIAS_MOVED,
        pb.WatchResponse.EVENT_TYPE_ALIAS_WEIGHT_CHANGED,
        pb.WatchResponse.EVENT_TYPE_ALIAS_DELETED,
    }
)
PROBE_TIMEOUT_S = 5.0


class RegistrySource:
    def __init__(
        self,
        client: RegistryClient,
        cache_dir: Path,
        models: list[str],
        *,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._client = client
        self._cache_dir = cache_dir
        self._models = models
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        # The last revision seen; a new stream resumes after it.
        self.revision = 0

    async def fetch(self, model: str, version: int, artifact: str) -> Path:
        """The local path of a verified artifact, downloaded unless already cached."""
        destination = self._cache_dir / model / str(version) / artifact
        if destination.is_file():
            return destination
        try:
            await self._client.download_artifact(model, version, artifact, destination)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(
                f"download of {model}/{version}/{artifact} failed: "
                f"{error.code().name}: {error.details()}"
            ) from None
        return destination

    async def artifacts(self, model: str, version: int) -> list[str]:
        try:
            found = await self._client.get_version(model, version)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(
                f"reading {model}/{version} failed: {error.code().name}: {error.details()}"
            ) from None
        return [artifact.name for artifact in found.artifacts]

    async def follow(
        self, on_event: Callable[[AliasEvent], None], on_connected: Callable[[], None]
    ) -> None:
        """Run until cancelled: probe, watch, and on any failure back off and start over."""
        backoff = self._initial_backoff_s
        while True:
            try:
                await self._client.stub.ListModels(
                    pb.ListModelsRequest(page_size=1), timeout=PROBE_TIMEOUT_S
                )
                log.info("registry reachable", extra={"since_revision": self.revision})
                backoff = self._initial_backoff_s
                on_connected()
                request = pb.WatchRequest(since_revision=self.revision, models=self._models)
                async for change in self._client.stub.Watch(request):
                    self.revision = change.revision
                    if change.type in ALIAS_EVENTS:
                        on_event(
                            AliasEvent(
                                change.model, change.alias, change.version, change.traffic_weight
                            )
                        )
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "registry unreachable; loaded models keep serving",
                    extra={"code": error.code().name, "retry_in_s": round(backoff, 3)},
                )
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._max_backoff_s)
