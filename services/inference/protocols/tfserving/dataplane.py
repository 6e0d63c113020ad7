"""TF Serving's APIs as the service means them: a model's version status (all versions,
a pinned one, or the one a label names), the version whose signature metadata describes,
and predictions. The gRPC servicer and the REST handlers both ask here, so a pin means
the same on either. Its answers are the catalog's views rather than TF Serving's
messages: those need TensorFlow's message modules, and the REST API serves where
TensorFlow is not installed (a JAX-only server); each transport writes its own form."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.inference.catalog import VersionView
from services.inference.pipeline import Pipeline, Prediction
from shared.errors import NotFound


class TFServingDataPlane:
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def statuses(
        self, name: str, version: int, label: str, version_field: str
    ) -> list[VersionView]:
        """Every version the service has tried to load, the pinned one (whatever its
        state), or the one `label` routes to; `version_field` names the pin in errors."""
        catalog = self._pipeline.catalog()
        views = [view for _, view in sorted(catalog.model(name).versions.items())]
        if version:
            views = [view for view in views if view.version == version]
            if not views:
                raise NotFound("model version", f"{name}/{version}", version_field)
        elif label:
            target = catalog.resolve(name, 0, label)
            views = [view for view in views if view.version == target.version]
        return views

    def signature_of(self, name: str, version: int, label: str) -> VersionView:
        """The version whose signature a request pinned so reads (unpinned: production)."""
        return self._pipeline.catalog().resolve(name, version, label)

    async def predict(
        self,
        name: str,
        inputs: dict[str, np.ndarray],
        version: int,
        label: str,
        *,
        output_filter: Sequence[str] = (),
        request_id: str = "",
        deadline: float | None = None,
    ) -> Prediction:
        return await self._pipeline.predict(
            name,
            inputs,
            version=version,
            label=label,
            deadline=deadline,
            output_filter=output_filter,
            request_id=request_id,
        )
