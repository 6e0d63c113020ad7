"""Where a served version's drift baseline comes from: its lineage and its data's statistics.

`LineageBaselines` asks the registry which dataset version a model version was trained on
(`lineage.dataset_version`), then the data service for that version's per-feature
statistics and its schema's vocabularies, and turns them into the `FeatureSummary`s the
drift window bins against. Both calls are idempotent reads, retried like every other."""

from __future__ import annotations

import grpc

from services.inference.drift import Baseline, FeatureSummary
from services.registry.client import RegistryClient
from tfmesh.data.v1 import data_pb2, data_pb2_grpc

NUMERIC = (data_pb2.FEATURE_TYPE_INT, data_pb2.FEATURE_TYPE_FLOAT)


class LineageBaselines:
    def __init__(
        self, registry: RegistryClient, data: grpc.aio.Channel, deadline_s: float = 30.0
    ) -> None:
        self._registry = registry
        self._data = data_pb2_grpc.DataServiceStub(data)
        self._deadline_s = deadline_s

    async def fetch(self, model: str, version: int) -> Baseline | None:
        """The baseline of `model` `version`; None when its lineage names no dataset."""
        record = await self._registry.get_version(model, version)
        dataset_version = record.lineage.dataset_version
        if not dataset_version:
            return None
        statistics = await self._data.GetStatistics(
            data_pb2.GetStatisticsRequest(version=dataset_version), timeout=self._deadline_s
        )
        described = await self._data.GetDatasetVersion(
            data_pb2.GetDatasetVersionRequest(version=dataset_version), timeout=self._deadline_s
        )
        return Baseline(dataset_version, summaries(statistics, described.version.schema))


def summaries(
    statistics: data_pb2.GetStatisticsResponse, schema: data_pb2.Schema
) -> list[FeatureSummary]:
    """The dataset's features in schema order, as the drift window's baselines."""
    by_name = {feature.name: feature for feature in statistics.features}
    found = []
    for feature in schema.features:
        stats = by_name[feature.name]
        if feature.type in NUMERIC:
            found.append(
                FeatureSummary(
                    feature.name,
                    "numeric",
                    count=stats.count,
                    edges=list(stats.histogram.edges),
                    counts=list(stats.histogram.counts),
                )
            )
        else:
            found.append(
                FeatureSummary(
                    feature.name,
                    "categorical",
                    count=stats.count,
                    vocabulary=list(feature.vocabulary),
                    top_values={v.value: v.count for v in stats.top_values},
                )
            )
    return found
