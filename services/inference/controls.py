"""Control calls: what a client asks of the process that holds the models, besides
predictions (version statistics, feedback on past predictions, queue snapshots).

Each control call is one method of `Controls`, with typed arguments and a typed answer.
The pipeline makes the call through its submitter: in process it is a plain method call;
from a front end the link sends the method's name and its arguments in one generic
frame, and the model owner calls the same method here (`services.inference.dataplane`).
A new control call is a new method; nothing in the link changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.inference.batcher import QueueSnapshot
from services.inference.feedback import FeedbackItem, FeedbackOutcome
from services.inference.metrics import count_feedback
from services.inference.statistics import VersionStatistics
from shared.errors import NotFound

if TYPE_CHECKING:  # front ends, which read only the methods' types, load no models
    from services.inference.model_manager import ModelManager


@dataclass(frozen=True)
class VersionQueue:
    version: int
    queue: QueueSnapshot


class Controls:
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def statistics(self, model: str, version: int) -> list[VersionStatistics]:
        """Snapshots of the loaded versions' statistics: of one model (and version), or of
        every model when `model` is empty."""
        models = [self._manager.model(model)] if model else self._manager.models()
        found = []
        for served in models:
            for number, record in sorted(served.records.items()):
                if record.loaded is not None and version in (0, number):
                    loaded = record.loaded
                    found.append(
                        loaded.statistics.snapshot(
                            loaded.batcher.queued_rows,
                            loaded.drift.status(),
                            served.feedback.tally(number),
                        )
                    )
        if model and version and not found:
            raise NotFound("model version", f"{model}/{version}", "version")
        return found

    def queues(self, model: str) -> list[VersionQueue]:
        """What waits in each loaded version's batch queue now."""
        served = self._manager.model(model)
        return [
            VersionQueue(number, record.loaded.batcher.snapshot())
            for number, record in sorted(served.records.items())
            if record.loaded is not None
        ]

    def report_feedback(self, model: str, items: Sequence[FeedbackItem]) -> FeedbackOutcome:
        """Join feedback to a served model's predictions, and count it."""
        served = self._manager.model(model)
        loaded = {n for n, record in served.records.items() if record.loaded is not None}
        outcome = served.feedback.report(items, loaded)
        count_feedback(model, outcome, served.feedback)
        return outcome
