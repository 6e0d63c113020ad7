"""A rollout and its events as the rest of the registry sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from services.registry.rollouts.policy import RolloutPolicy


class RolloutState(StrEnum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    PROMOTED = "PROMOTED"
    ROLLED_BACK = "ROLLED_BACK"
    ABORTED = "ABORTED"
    REFUSED = "REFUSED"

    @property
    def active(self) -> bool:
        return self in (RolloutState.RUNNING, RolloutState.PAUSED)


@dataclass(frozen=True)
class RolloutEvent:
    version: int
    # started, stepped, paused, resumed, promoted, rolled_back, aborted, refused
    kind: str
    step: int
    traffic_weight: int
    actor: str
    detail: str
    evidence: dict[str, float]
    happened_at: datetime
    revision: int


@dataclass(frozen=True)
class Rollout:
    id: int
    model: str
    version: int
    production_version: int
    state: RolloutState
    step: int
    traffic_weight: int
    policy: RolloutPolicy
    started_at: datetime
    step_started_at: datetime
    updated_at: datetime
    events: list[RolloutEvent] = field(default_factory=list)

    @property
    def last_step(self) -> bool:
        return self.step == len(self.policy.steps) - 1
