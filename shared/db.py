"""SQLAlchemy engines for service metadata: SQLite (WAL) by default, PostgreSQL by URL.

SQLite gets WAL journaling, foreign keys, a busy timeout and full fsync on commit, so a
SIGKILL never leaves a half-applied transaction. `write_lock` serializes writers that
must commit in the order they were numbered (revision feeds): SQLite already allows one
writer at a time; on PostgreSQL it takes a transaction-scoped advisory lock. Timestamps
are stored in UTC and read back through `as_utc`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session


def sqlite_url(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite+pysqlite:///{path}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's recipe).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection) -> None:  # type: ignore[no-untyped-def]
            # Take the write lock at BEGIN so concurrent writers queue instead of
            # failing with "database is locked" on upgrade from a read transaction.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def as_utc(moment: datetime) -> datetime:
    """A timestamp read back from the database: SQLite hands them back without a zone,
    and every one stored is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def write_lock(session: Session, key: int) -> None:
    """Serialize writers holding the same key until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
