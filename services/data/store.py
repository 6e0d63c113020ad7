"""The data service's metadata (SQLAlchemy 2 ORM): dataset versions, their shards and
their Parquet files.

A version's row and its shard and Parquet file rows commit in one transaction, after every blob they
name is durable, so a version is either visible whole or not at all. Schema, row
counts, anomalies and statistics are JSON columns written from the entities' pydantic
models. A soft-deleted version keeps its rows with `deleted_at` set."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    select,
    union,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    declared_attr,
    mapped_column,
    relationship,
)

from services.data.entities import (
    SPLITS,
    AnomalyReport,
    DataFormat,
    DatasetVersion,
    ParquetFile,
    RowCounts,
    Schema,
    ShardInfo,
    Split,
    SplitRatios,
    Statistics,
)
from shared.db import as_utc
from shared.errors import NotFound
from shared.leases import LEASES_METADATA
from shared.migrations import Migrations

T = TypeVar("T", ShardInfo, ParquetFile)
# Digests looked up per query, well under SQLite's limit on bound parameters.
LOOKUP_BATCH = 500
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class VersionRow(Base):
    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(160), unique=True)
    dataset: Mapped[str] = mapped_column(String(128), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    source_sha256: Mapped[str] = mapped_column(String(64), index=True)
    source_bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(8))
    label_column: Mapped[str] = mapped_column(String(1024))
    split_ratios: Mapped[dict[str, Any]]
    max_bad_row_fraction: Mapped[float] = mapped_column(Float)
    reference_version: Mapped[str] = mapped_column(String(160))
    schema_json: Mapped[dict[str, Any]]
    rows: Mapped[dict[str, Any]]
    anomalies: Mapped[dict[str, Any]]
    statistics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]

    shards: Mapped[list[ShardRow]] = relationship(
        order_by="ShardRow.id", cascade="all, delete-orphan", passive_deletes=True
    )
    parquet_files: Mapped[list[ParquetRow]] = relationship(
        order_by="ParquetRow.id", cascade="all, delete-orphan", passive_deletes=True
    )


class _SplitFileColumns:
    """The columns of one stored file of a version's split, in its table of files."""

    @declared_attr.directive
    def __table_args__(cls) -> tuple[UniqueConstraint]:
        return (UniqueConstraint("version_id", "split", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), index=True
    )
    split: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    rows: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int] = mapped_column(BigInteger)


class ShardRow(_SplitFileColumns, Base):
    __tablename__ = "dataset_shards"

    header_bytes: Mapped[int] = mapped_column(Integer)


class ParquetRow(_SplitFileColumns, Base):
    """A Parquet file of a version's split (services.data.parquet_files)."""

    __tablename__ = "dataset_parquet_files"


def _to_entity(row: VersionRow) -> DatasetVersion:
    return DatasetVersion(
        name=row.name,
        dataset=row.dataset,
        digest=row.digest,
        source_sha256=row.source_sha256,
        source_bytes=row.source_bytes,
        format=DataFormat(row.format),
        label_column=row.label_column,
        split_ratios=SplitRatios.model_validate(row.split_ratios),
        max_bad_row_fraction=row.max_bad_row_fraction,
        reference_version=row.reference_version,
        schema=Schema.model_validate(row.schema_json),
        rows=RowCounts.model_validate(row.rows),
        anomalies=AnomalyReport.model_validate(row.anomalies),
        created_at=as_utc(row.created_at),
    )


def _shard(row: ShardRow) -> ShardInfo:
    return ShardInfo(
        split=Split(row.split),
        index=row.position,
        sha256=row.sha256,
        rows=row.rows,
        size_bytes=row.size_bytes,
        header_bytes=row.header_bytes,
    )


# The database's migrations (Alembic); a start refuses an older schema. The leases table
# (shared.leases) is the blob collector's.
MIGRATIONS = Migrations(
    "data", Path(__file__).resolve().parent / "migrations", [Base.metadata, LEASES_METADATA]
)


class MetadataStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        MIGRATIONS.ensure_current(engine)

    def _live(self, session: Session, name: str) -> VersionRow:
        row = session.scalar(
            select(VersionRow).where(VersionRow.name == name, VersionRow.deleted_at.is_(None))
        )
        if row is None:
            raise NotFound("dataset version", name, field="version")
        return row

    def find(self, name: str) -> tuple[DatasetVersion, bool] | None:
        """The version named `name` and whether it is soft-deleted, or None."""
        with Session(self._engine) as session:
            row = session.scalar(select(VersionRow).where(VersionRow.name == name))
            return None if row is None else (_to_entity(row), row.deleted_at is not None)

    def get(self, name: str) -> DatasetVersion:
        with Session(self._engine) as session:
            return _to_entity(self._live(session, name))

    def insert(
        self,
        version: DatasetVersion,
        statistics: Statistics,
        shards: list[ShardInfo],
        parquet_files: list[ParquetFile],
    ) -> None:
        with Session(self._engine) as session, session.begin():
            session.add(
                VersionRow(
                    name=version.name,
                    dataset=version.dataset,
                    digest=version.digest,
                    source_sha256=version.source_sha256,
                    source_bytes=version.source_bytes,
                    format=version.format.value,
                    label_column=version.label_column,
                    split_ratios=version.split_ratios.model_dump(mode="json"),
                    max_bad_row_fraction=version.max_bad_row_fraction,
                    reference_version=version.reference_version,
                    schema_json=version.schema.model_dump(mode="json"),
                    rows=version.rows.model_dump(mode="json"),
                    anomalies=version.anomalies.model_dump(mode="json"),
                    statistics=statistics.model_dump(mode="json"),
                    created_at=version.created_at,
                    deleted_at=None,
                    shards=[
                        ShardRow(
                            split=shard.split.value,
                            position=shard.index,
                            sha256=shard.sha256,
                            rows=shard.rows,
                            size_bytes=shard.size_bytes,
                            header_bytes=shard.header_bytes,
                        )
                        for shard in shards
                    ],
                    parquet_files=[
                        ParquetRow(
                            split=file.split.value,
                            position=file.index,
                            sha256=file.sha256,
                            rows=file.rows,
                            size_bytes=file.size_bytes,
                        )
                        for file in parquet_files
                    ],
                )
            )

    def set_deleted(self, name: str, deleted_at: datetime | None) -> None:
        """Soft-delete (a time) or restore (None) a version."""
        with Session(self._engine) as session, session.begin():
            row = session.scalar(select(VersionRow).where(VersionRow.name == name))
            if row is None:
                raise NotFound("dataset version", name, field="version")
            row.deleted_at = deleted_at

    def purge(self, name: str) -> set[str]:
        """Delete a version's rows for good; returns the blobs it named."""
        with Session(self._engine) as session, session.begin():
            row = self._live(session, name)
            digests = {row.source_sha256, *(shard.sha256 for shard in row.shards)}
            digests |= {file.sha256 for file in row.parquet_files}
            session.delete(row)
            return digests

    def page(
        self, dataset: str, after_id: int | None, limit: int
    ) -> list[tuple[int, DatasetVersion]]:
        """Live versions newest first, with their ids for keyset pagination."""
        query = select(VersionRow).where(VersionRow.deleted_at.is_(None))
        if dataset:
            query = query.where(VersionRow.dataset == dataset)
        if after_id is not None:
            query = query.where(VersionRow.id < after_id)
        query = query.order_by(VersionRow.id.desc()).limit(limit)
        with Session(self._engine) as session:
            return [(row.id, _to_entity(row)) for row in session.scalars(query)]

    def statistics(self, name: str) -> Statistics:
        with Session(self._engine) as session:
            return Statistics.model_validate(self._live(session, name).statistics)

    def shards(self, name: str, split: Split | None) -> list[ShardInfo]:
        """A live version's shards, split by split in SPLITS order, each in its order."""
        with Session(self._engine) as session:
            shards = [_shard(row) for row in self._live(session, name).shards]
        return _in_split_order(shards, split)

    def parquet_files(self, name: str, split: Split | None) -> list[ParquetFile]:
        """A live version's Parquet files, in the shards' order (none for versions stored
        before Parquet)."""
        with Session(self._engine) as session:
            files = [
                ParquetFile(
                    split=Split(row.split),
                    index=row.position,
                    sha256=row.sha256,
                    rows=row.rows,
                    size_bytes=row.size_bytes,
                )
                for row in self._live(session, name).parquet_files
            ]
        return _in_split_order(files, split)

    def referenced(self, digests: set[str] | None = None) -> set[str]:
        """Which of `digests` (all when None) some version, live or soft-deleted, names."""
        if digests is None:
            return self._referenced(None)
        ordered = sorted(digests)
        found: set[str] = set()
        for start in range(0, len(ordered), LOOKUP_BATCH):
            found |= self._referenced(ordered[start : start + LOOKUP_BATCH])
        return found

    def _referenced(self, digests: list[str] | None) -> set[str]:
        sources = select(VersionRow.source_sha256.label("sha256"))
        shards = select(ShardRow.sha256.label("sha256"))
        files = select(ParquetRow.sha256.label("sha256"))
        if digests is not None:
            sources = sources.where(VersionRow.source_sha256.in_(digests))
            shards = shards.where(ShardRow.sha256.in_(digests))
            files = files.where(ParquetRow.sha256.in_(digests))
        with Session(self._engine) as session:
            return set(session.execute(union(sources, shards, files)).scalars())


def _in_split_order(files: list[T], split: Split | None) -> list[T]:
    """`files` of `split` (all when None), split by split in SPLITS order, each in order."""
    order = {s: i for i, s in enumerate(SPLITS)}
    chosen = [f for f in files if split is None or f.split is split]
    return sorted(chosen, key=lambda f: (order[f.split], f.index))
