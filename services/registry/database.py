"""The registry's database as the parts of its core use it: read sessions, write sessions
ordered by one lock (so the change feed's revisions follow commit order), lookups that
raise the domain's NotFound, the change feed's append, and commits that wake watchers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from services.registry import entities as e
from services.registry.store import AliasRow, Base, ChangeRow, ModelRow, VersionRow
from shared.db import write_lock
from shared.errors import NotFound, invalid, raise_violations
from shared.leases import LEASES_METADATA
from shared.migrations import Migrations
from shared.names import check_name

# The database's migrations (Alembic); a start refuses an older schema. The leases table
# (shared.leases) is the rollout controller's and the blob collector's.
MIGRATIONS = Migrations(
    "registry", Path(__file__).resolve().parent / "migrations", [Base.metadata, LEASES_METADATA]
)
# Advisory-lock key that orders every registry write (see shared.db.write_lock).
WRITE_LOCK_KEY = 0x7F6D657368_01


def now() -> datetime:
    return datetime.now(UTC)


class RegistryDatabase:
    def __init__(self, engine: Engine, on_change: Callable[[], None] = lambda: None) -> None:
        MIGRATIONS.ensure_current(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._on_change = on_change

    def read(self) -> Session:
        return self._sessions()

    def write(self) -> Session:
        session = self._sessions()
        session.begin()
        write_lock(session, WRITE_LOCK_KEY)
        return session

    def commit(self, session: Session) -> None:
        session.commit()
        self._on_change()

    def model_row(self, session: Session, name: str, field: str = "model") -> ModelRow:
        raise_violations([check_name(field, name)])
        row = session.scalar(select(ModelRow).where(ModelRow.name == name))
        if row is None:
            raise NotFound("model", name, field)
        return row

    def version_row(
        self, session: Session, model: ModelRow, number: int, field: str = "version"
    ) -> VersionRow:
        if number <= 0:
            raise invalid(field, "must be a version number >= 1")
        row = session.scalar(
            select(VersionRow)
            .where(VersionRow.model_id == model.id, VersionRow.number == number)
            .options(selectinload(VersionRow.artifacts))
        )
        if row is None:
            raise NotFound("model version", f"{model.name}/{number}", field)
        return row

    def aliases_of(self, session: Session, version_ids: list[int]) -> dict[int, list[str]]:
        names: dict[int, list[str]] = {vid: [] for vid in version_ids}
        rows = session.execute(
            select(AliasRow.version_id, AliasRow.name).where(AliasRow.version_id.in_(version_ids))
        )
        for version_id, name in rows:
            names[version_id].append(name)
        return names

    def append_change(
        self,
        session: Session,
        event_type: e.EventType,
        model: str,
        version: int = 0,
        alias: str = "",
        traffic_weight: int = 0,
    ) -> ChangeRow:
        row = ChangeRow(
            event_type=event_type.value,
            model=model,
            version=version,
            alias=alias,
            traffic_weight=traffic_weight,
            changed_at=now(),
        )
        session.add(row)
        session.flush()
        return row
