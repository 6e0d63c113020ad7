"""What the protocol servicers need from the service, whichever process serves them.

The single-process server's `InferenceCore` and a front end's `OwnerLink` both provide
`Serving`: a catalog to describe and route with, predictions, and statistics. Servicers
hold one and never know which it is."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.inference.catalog import Catalog
from services.inference.statistics import VersionStatistics
from services.inference.validation import default_field


@dataclass(frozen=True)
class Prediction:
    model: str
    version: int
    outputs: dict[str, np.ndarray]


class Serving(Protocol):
    def catalog(self) -> Catalog:
        """The current catalog; raises Unavailable when none can be had (owner down)."""
        ...

    def ready(self) -> bool:
        """Whether predictions can be served now (the model owner is reachable)."""
        ...

    async def predict(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        version: int = 0,
        label: str = "",
        deadline: float | None = None,
        output_filter: Sequence[str] = (),
        field_of: Callable[[str], str] = default_field,
        output_filter_field: str = "output_filter",
    ) -> Prediction:
        """Outputs for `inputs`; `deadline` is a `time.monotonic()` instant."""
        ...

    async def statistics(self, model: str = "", version: int = 0) -> list[VersionStatistics]:
        """Counters of the loaded versions (of `model`, of `version`; all when empty)."""
        ...
