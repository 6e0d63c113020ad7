"""Which loaded version answers a request.

A request may pin a version number or a label (an alias the service follows); an
unpinned one goes to `production`, except that a `canary` with traffic weight w takes w%
of unpinned requests, drawn independently per request. A routing table is immutable and
swapped whole, so a request routes against one consistent picture."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from shared.aliases import CANARY, PRODUCTION
from shared.errors import NotFound, Unavailable, invalid

T = TypeVar("T")


@dataclass(frozen=True)
class RoutingTable(Generic[T]):
    by_version: Mapping[int, T] = field(default_factory=dict)
    by_label: Mapping[str, T] = field(default_factory=dict)
    # Percent (0-100) of unpinned requests sent to the `canary` label's version.
    canary_weight: int = 0


class Router:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def route(
        self,
        model: str,
        table: RoutingTable[T],
        version: int = 0,
        label: str = "",
        *,
        follow_canary: bool = True,
    ) -> T:
        """The version for a request; `follow_canary=False` always takes production."""
        if version and label:
            raise invalid("version", "pin a version or a label, not both")
        if version < 0:
            raise invalid("version", f"must be positive, got {version}")
        if version:
            target = table.by_version.get(version)
            if target is None:
                raise NotFound("model version", f"{model}/{version}", "version")
            return target
        if label:
            target = table.by_label.get(label)
            if target is None:
                raise NotFound("model label", f"{model}@{label}", "label")
            return target
        canary = table.by_label.get(CANARY)
        if (
            follow_canary
            and canary is not None
            and table.canary_weight > 0
            and self._rng.random() * 100 < table.canary_weight
        ):
            return canary
        production = table.by_label.get(PRODUCTION)
        if production is None:
            raise Unavailable(f"model {model!r} has no {PRODUCTION} version loaded", 1.0)
        return production
