"""A snapshot of what the inference service serves: models, versions, signatures, routing.

Protocol servicers describe models (status, metadata, configuration) from a catalog, and
front-end processes route and validate requests with one, never touching the model
manager's live objects: the same servicers run in the single-process server, where the
manager builds the catalog, and in front ends, which receive the model owner's catalog
over their socket. A catalog is immutable and replaced whole."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.inference.batcher import BatchingOptions
from services.inference.routing import Router, RoutingTable
from services.inference.runtimes import Signature
from shared.aliases import PRODUCTION
from shared.errors import NotFound


class VersionState(enum.Enum):
    LOADING = "loading"
    AVAILABLE = "available"
    UNLOADING = "unloading"
    FAILED = "failed"
    END = "end"


@dataclass(frozen=True)
class VersionView:
    model: str
    version: int
    state: VersionState
    runtime: str
    reason: str = ""
    device: str = ""
    # Known while the version is loaded.
    signature: Signature | None = None


@dataclass(frozen=True)
class ModelView:
    name: str
    runtime: str
    batching: BatchingOptions
    # Every version the service has tried to load, by number.
    versions: Mapping[int, VersionView] = field(default_factory=dict)
    # The loaded versions that take requests, by version and by label.
    table: RoutingTable[VersionView] = field(default_factory=RoutingTable)

    def labels_of(self, version: int) -> list[str]:
        return sorted(
            label for label, target in self.table.by_label.items() if target.version == version
        )

    def ready(self, version: int = 0, label: str = "") -> bool:
        """Whether requests pinned so (unpinned: production) have a version to go to."""
        if version:
            return version in self.table.by_version
        return (label or PRODUCTION) in self.table.by_label


@dataclass(frozen=True)
class Catalog:
    models: Mapping[str, ModelView] = field(default_factory=dict)
    # Grows with every change the model owner publishes.
    revision: int = 0

    def model(self, name: str) -> ModelView:
        found = self.models.get(name)
        if found is None:
            raise NotFound("model", name, "model")
        return found

    def knows(self, name: str) -> bool:
        return name in self.models

    def ordered(self) -> list[ModelView]:
        return [self.models[name] for name in sorted(self.models)]

    def resolve(self, name: str, version: int = 0, label: str = "") -> VersionView:
        """The version a metadata call is about: the pinned one, or production."""
        return Router().route(name, self.model(name).table, version, label, follow_canary=False)

    def ready(self) -> bool:
        """Every served model has a production (or other routable) version loaded."""
        return all(model.table.by_label for model in self.models.values())
