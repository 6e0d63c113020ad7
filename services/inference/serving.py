"""What the protocol servicers need from the service, whichever process serves them.

The single-process server's `InferenceCore` and a front end's `OwnerLink` both provide
`Serving`: a catalog to describe and route with, predictions, statistics and feedback.
Servicers hold one and never know which it is. Every prediction has a request id, the
client's or one made up here, by which feedback names it later."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.inference.catalog import Catalog
from services.inference.feedback import MAX_REQUEST_ID, FeedbackItem, FeedbackOutcome
from services.inference.statistics import VersionStatistics
from services.inference.validation import default_field
from shared.errors import invalid


@dataclass(frozen=True)
class Prediction:
    model: str
    version: int
    outputs: dict[str, np.ndarray]
    request_id: str = ""


def request_id_or_new(given: str, field: str = "request_id") -> str:
    """The client's request id, or a new random one when it gave none."""
    if len(given) > MAX_REQUEST_ID:
        raise invalid(field, f"at most {MAX_REQUEST_ID} characters")
    return given or uuid.uuid4().hex


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
        request_id: str = "",
    ) -> Prediction:
        """Outputs for `inputs`; `deadline` is a `time.monotonic()` instant. The
        prediction carries `request_id`, or a new one when it is empty."""
        ...

    async def statistics(self, model: str = "", version: int = 0) -> list[VersionStatistics]:
        """Counters of the loaded versions (of `model`, of `version`; all when empty)."""
        ...

    async def report_feedback(self, model: str, items: Sequence[FeedbackItem]) -> FeedbackOutcome:
        """Join the true outcomes in `items` to the predictions they name by request id."""
        ...
