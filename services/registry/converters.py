"""Registry protobuf messages to and from the core's value types."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from services.registry import entities as e
from services.registry.rollouts.entities import Rollout
from services.registry.rollouts.policy import PolicyDraft, RolloutPolicy
from shared.rollout_metrics import BY_NAME, BY_NUMBER
from tfmesh.registry.v1 import registry_pb2 as pb


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def promotion_rule_from_proto(message: pb.PromotionRule) -> e.PromotionRule:
    return e.PromotionRule(message.metric, message.min_improvement, message.higher_is_better)


def model_to_proto(model: e.Model) -> pb.Model:
    rule = model.promotion_rule
    return pb.Model(
        name=model.name,
        description=model.description,
        promotion_rule=pb.PromotionRule(
            metric=rule.metric,
            min_improvement=rule.min_improvement,
            higher_is_better=rule.higher_is_better,
        ),
        tags=model.tags,
        create_time=timestamp(model.created_at),
        latest_version=model.latest_version,
    )


def artifact_to_proto(spec: e.ArtifactSpec) -> pb.Artifact:
    return pb.Artifact(
        name=spec.name, size_bytes=spec.size_bytes, sha256=spec.sha256, media_type=spec.media_type
    )


def upload_header_from_proto(header: pb.UploadVersionHeader) -> e.UploadHeader:
    return e.UploadHeader(
        model=header.model,
        artifacts=[
            e.ArtifactSpec(a.name, a.size_bytes, a.sha256, a.media_type) for a in header.artifacts
        ],
        metrics=dict(header.metrics),
        params=dict(header.params),
        tags=dict(header.tags),
        lineage=e.Lineage(
            header.lineage.dataset_version,
            header.lineage.training_job,
            header.lineage.code_version,
        ),
        idempotency_key=header.idempotency_key,
        create_model=header.create_model,
    )


def version_to_proto(version: e.ModelVersion) -> pb.ModelVersion:
    return pb.ModelVersion(
        model=version.model,
        version=version.version,
        artifacts=[artifact_to_proto(a) for a in version.artifacts],
        metrics=version.metrics,
        params=version.params,
        tags=version.tags,
        lineage=pb.Lineage(
            dataset_version=version.lineage.dataset_version,
            training_job=version.lineage.training_job,
            code_version=version.lineage.code_version,
        ),
        create_time=timestamp(version.created_at),
        aliases=version.aliases,
        idempotency_key=version.idempotency_key,
    )


def alias_to_proto(alias: e.Alias) -> pb.Alias:
    return pb.Alias(
        model=alias.model,
        name=alias.name,
        version=alias.version,
        traffic_weight=alias.traffic_weight,
        update_time=timestamp(alias.updated_at),
    )


def alias_change_to_proto(change: e.AliasChange) -> pb.AliasChange:
    return pb.AliasChange(
        model=change.model,
        alias=change.alias,
        old_version=change.old_version,
        new_version=change.new_version,
        old_traffic_weight=change.old_traffic_weight,
        new_traffic_weight=change.new_traffic_weight,
        actor=change.actor,
        reason=change.reason,
        overridden=change.overridden,
        change_time=timestamp(change.changed_at),
        revision=change.revision,
    )


def change_to_proto(change: e.Change) -> pb.WatchResponse:
    return pb.WatchResponse(
        revision=change.revision,
        type=pb.WatchResponse.EventType.Value(f"EVENT_TYPE_{change.event_type.value}"),
        model=change.model,
        version=change.version,
        alias=change.alias,
        traffic_weight=change.traffic_weight,
        event_time=timestamp(change.changed_at),
        detail=change.detail,
    )


# --- rollouts ------------------------------------------------------------------------------


def policy_draft_from_proto(message: pb.RolloutPolicy) -> PolicyDraft:
    return PolicyDraft(
        steps=list(message.steps),
        step_seconds=message.step_seconds,
        step_min_requests=message.step_min_requests,
        step_timeout_seconds=message.step_timeout_seconds,
        checks=[
            (BY_NUMBER.get(c.metric, ""), c.max_degradation, c.min_samples) for c in message.checks
        ],
        confidence=message.confidence,
    )


def policy_to_proto(
    model: str, policy: RolloutPolicy, updated_at: datetime | None = None
) -> pb.RolloutPolicy:
    message = pb.RolloutPolicy(
        model=model,
        steps=policy.steps,
        step_seconds=policy.step_seconds,
        step_min_requests=policy.step_min_requests,
        step_timeout_seconds=policy.step_timeout_seconds,
        checks=[
            pb.RolloutCheck(
                metric=BY_NAME[c.metric.value],
                max_degradation=c.max_degradation,
                min_samples=c.min_samples,
            )
            for c in policy.checks
        ],
        confidence=policy.confidence,
    )
    if updated_at is not None:
        message.update_time.CopyFrom(timestamp(updated_at))
    return message


def rollout_to_proto(rollout: Rollout) -> pb.Rollout:
    return pb.Rollout(
        model=rollout.model,
        version=rollout.version,
        production_version=rollout.production_version,
        state=pb.Rollout.State.Value(f"STATE_{rollout.state.value}"),
        step=rollout.step,
        traffic_weight=rollout.traffic_weight,
        start_time=timestamp(rollout.started_at),
        step_start_time=timestamp(rollout.step_started_at),
        update_time=timestamp(rollout.updated_at),
        policy=policy_to_proto(rollout.model, rollout.policy),
        events=[
            pb.RolloutEvent(
                version=event.version,
                kind=event.kind,
                step=event.step,
                traffic_weight=event.traffic_weight,
                actor=event.actor,
                detail=event.detail,
                evidence=event.evidence,
                event_time=timestamp(event.happened_at),
                revision=event.revision,
            )
            for event in rollout.events
        ],
    )
