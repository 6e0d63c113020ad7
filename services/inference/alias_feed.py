"""What the model manager needs from wherever aliases live: a feed of alias events and the
artifacts they name. The registry provides it over gRPC (`registry_source`); tests provide
it in memory. Nothing here knows a transport."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class AliasEvent:
    model: str
    alias: str
    # 0 when the alias was deleted.
    version: int
    traffic_weight: int


class AliasFeed(Protocol):
    async def fetch(self, model: str, version: int, artifact: str) -> Path:
        """The artifact's local path, complete and verified."""
        ...

    async def artifacts(self, model: str, version: int) -> list[str]:
        """The names of the version's artifacts."""
        ...

    async def follow(
        self, on_event: Callable[[AliasEvent], None], on_connected: Callable[[], None]
    ) -> None:
        """Hand every alias event to `on_event` until cancelled; `on_connected` each time
        the feed (re)connects, before the events it replays."""
        ...
