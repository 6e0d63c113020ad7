"""Plain value types the registry core takes and returns (no ORM, no protobuf)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


class EventType(StrEnum):
    MODEL_CREATED = "MODEL_CREATED"
    VERSION_CREATED = "VERSION_CREATED"
    VERSION_DELETED = "VERSION_DELETED"
    ALIAS_MOVED = "ALIAS_MOVED"
    ALIAS_WEIGHT_CHANGED = "ALIAS_WEIGHT_CHANGED"
    ALIAS_DELETED = "ALIAS_DELETED"
    ROLLOUT_STARTED = "ROLLOUT_STARTED"
    ROLLOUT_STEPPED = "ROLLOUT_STEPPED"
    ROLLOUT_PAUSED = "ROLLOUT_PAUSED"
    ROLLOUT_RESUMED = "ROLLOUT_RESUMED"
    ROLLOUT_PROMOTED = "ROLLOUT_PROMOTED"
    ROLLOUT_ROLLED_BACK = "ROLLOUT_ROLLED_BACK"
    ROLLOUT_ABORTED = "ROLLOUT_ABORTED"
    ROLLOUT_REFUSED = "ROLLOUT_REFUSED"


@dataclass(frozen=True)
class PromotionRule:
    metric: str
    min_improvement: float
    higher_is_better: bool

    def improvement(self, candidate: float, current: float) -> float:
        return candidate - current if self.higher_is_better else current - candidate


@dataclass(frozen=True)
class Model:
    name: str
    description: str
    promotion_rule: PromotionRule
    tags: dict[str, str]
    created_at: datetime
    latest_version: int


@dataclass(frozen=True)
class Lineage:
    dataset_version: str = ""
    training_job: str = ""
    code_version: str = ""


@dataclass(frozen=True)
class ArtifactSpec:
    name: str
    size_bytes: int
    sha256: str
    media_type: str = ""


@dataclass(frozen=True)
class UploadHeader:
    model: str
    artifacts: list[ArtifactSpec]
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lineage: Lineage = Lineage()
    idempotency_key: str = ""
    create_model: bool = False


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    artifacts: list[ArtifactSpec]
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    lineage: Lineage
    created_at: datetime
    aliases: list[str]
    idempotency_key: str


@dataclass(frozen=True)
class Alias:
    model: str
    name: str
    version: int
    traffic_weight: int
    updated_at: datetime


@dataclass(frozen=True)
class AliasChange:
    model: str
    alias: str
    old_version: int
    new_version: int
    old_traffic_weight: int
    new_traffic_weight: int
    actor: str
    reason: str
    overridden: bool
    changed_at: datetime
    revision: int


@dataclass(frozen=True)
class Change:
    revision: int
    event_type: EventType
    model: str
    version: int
    alias: str
    traffic_weight: int
    changed_at: datetime
    # Rollout events: the decision and its evidence, in words.
    detail: str = ""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str
