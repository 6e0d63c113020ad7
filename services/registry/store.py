"""The registry's tables (SQLAlchemy 2 ORM): models, versions, artifacts, aliases, the alias
audit log, the change feed, and rollout policies, rollouts and their events. Every
mutation appends one row to `changes` in the same transaction, so the feed's revisions
follow commit order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    promotion_metric: Mapped[str] = mapped_column(String(128))
    min_improvement: Mapped[float] = mapped_column(Float)
    higher_is_better: Mapped[bool] = mapped_column(Boolean)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    # Highest version number ever given; numbers are never reused after a delete.
    latest_version: Mapped[int] = mapped_column(BigInteger, default=0)


class VersionRow(Base):
    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("model_id", "number"),
        UniqueConstraint("model_id", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset_version: Mapped[str] = mapped_column(String(256), default="", index=True)
    training_job: Mapped[str] = mapped_column(String(256), default="")
    code_version: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime]

    model: Mapped[ModelRow] = relationship()
    artifacts: Mapped[list[ArtifactRow]] = relationship(
        order_by="ArtifactRow.position", cascade="all, delete-orphan", passive_deletes=True
    )


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("version_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("versions.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    media_type: Mapped[str] = mapped_column(String(128), default="")


class AliasRow(Base):
    __tablename__ = "aliases"

    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    # RESTRICT: the database itself refuses to drop a version an alias names.
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="RESTRICT"))
    traffic_weight: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime]

    version: Mapped[VersionRow] = relationship()


class AliasChangeRow(Base):
    """The audit log: one row per alias change, with who, when and why."""

    __tablename__ = "alias_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    alias: Mapped[str] = mapped_column(String(128))
    old_version: Mapped[int] = mapped_column(BigInteger)
    new_version: Mapped[int] = mapped_column(BigInteger)
    old_traffic_weight: Mapped[int] = mapped_column(Integer)
    new_traffic_weight: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
    overridden: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime]
    revision: Mapped[int] = mapped_column(BigInteger)


class ChangeRow(Base):
    """The change feed; `revision` increases with every committed change."""

    __tablename__ = "changes"

    revision: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    alias: Mapped[str] = mapped_column(String(128), default="")
    traffic_weight: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime]


class RolloutPolicyRow(Base):
    """A model's rollout policy (services.registry.rollouts.policy), as JSON."""

    __tablename__ = "rollout_policies"

    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    policy: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class RolloutRow(Base):
    """One rollout of a version; (model, version) is unique, so a version is rolled out
    at most once, however many controllers race to start it."""

    __tablename__ = "rollouts"
    __table_args__ = (UniqueConstraint("model", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(BigInteger)
    production_version: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer)
    traffic_weight: Mapped[int] = mapped_column(Integer)
    policy: Mapped[dict[str, Any]]
    started_at: Mapped[datetime]
    step_started_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RolloutEventRow(Base):
    """A rollout's audit trail: every step and decision, with its evidence."""

    __tablename__ = "rollout_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(
        ForeignKey("rollouts.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer)
    traffic_weight: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(256))
    detail: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]]
    happened_at: Mapped[datetime]
    revision: Mapped[int] = mapped_column(BigInteger, index=True)
