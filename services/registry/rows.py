"""The registry's rows as its value types: one conversion per table, for every part of the
core that reads them."""

from __future__ import annotations

from services.registry import entities as e
from services.registry.store import AliasChangeRow, AliasRow, ChangeRow, ModelRow, VersionRow


def model_of(row: ModelRow) -> e.Model:
    rule = e.PromotionRule(row.promotion_metric, row.min_improvement, row.higher_is_better)
    return e.Model(
        row.name, row.description, rule, dict(row.tags), row.created_at, row.latest_version
    )


def version_of(row: VersionRow, aliases: list[str]) -> e.ModelVersion:
    return e.ModelVersion(
        model=row.model.name,
        version=row.number,
        artifacts=[
            e.ArtifactSpec(a.name, a.size_bytes, a.sha256, a.media_type) for a in row.artifacts
        ],
        metrics=dict(row.metrics),
        params=dict(row.params),
        tags=dict(row.tags),
        lineage=e.Lineage(row.dataset_version, row.training_job, row.code_version),
        created_at=row.created_at,
        aliases=sorted(aliases),
        idempotency_key=row.idempotency_key or "",
    )


def alias_of(row: AliasRow, model: str) -> e.Alias:
    return e.Alias(model, row.name, row.version.number, row.traffic_weight, row.updated_at)


def alias_change_of(row: AliasChangeRow) -> e.AliasChange:
    return e.AliasChange(
        row.model,
        row.alias,
        row.old_version,
        row.new_version,
        row.old_traffic_weight,
        row.new_traffic_weight,
        row.actor,
        row.reason,
        row.overridden,
        row.changed_at,
        row.revision,
    )


def change_of(row: ChangeRow, detail: str = "") -> e.Change:
    return e.Change(
        row.revision,
        e.EventType(row.event_type),
        row.model,
        row.version,
        row.alias,
        row.traffic_weight,
        row.changed_at,
        detail,
    )
