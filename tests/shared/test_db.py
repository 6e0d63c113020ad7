"""`shared.db` against real databases: SQLite files and the session's PostgreSQL server."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from cli.postgres import PostgresServer, PostgresUnavailable, find_binaries
from shared.db import make_engine, sqlite_url, write_lock


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_sqlite_engine_uses_wal_and_durable_pragmas(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "nested" / "meta.db"))
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    engine.dispose()
    assert (tmp_path / "nested" / "meta.db").is_file()


@pytest.mark.postgres
def test_postgres_engine_connects(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    with engine.connect() as connection:
        assert connection.dialect.name == "postgresql"
        assert connection.execute(text("SELECT 1 + 1")).scalar() == 2
        assert "PostgreSQL" in str(connection.execute(text("SELECT version()")).scalar())
    engine.dispose()


@pytest.mark.postgres
def test_plain_postgresql_url_gets_the_psycopg_driver(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    engine = make_engine(plain)
    assert engine.dialect.driver == "psycopg"
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_transactions_commit_and_roll_back(engine: Engine) -> None:
    with Session(engine) as session:
        session.execute(text("CREATE TABLE item (name TEXT PRIMARY KEY)"))
        session.commit()
    with Session(engine) as session:
        session.execute(text("INSERT INTO item VALUES ('kept')"))
        session.commit()
    with Session(engine) as session:
        session.execute(text("INSERT INTO item VALUES ('dropped')"))
        session.rollback()
    with Session(engine) as session:
        assert session.execute(text("SELECT name FROM item")).scalars().all() == ["kept"]


def test_write_lock_serializes_writers(engine: Engine) -> None:
    """A second writer holding the same key waits until the first one commits."""
    with Session(engine) as session:
        session.execute(text("CREATE TABLE feed (revision INTEGER PRIMARY KEY, writer TEXT)"))
        session.commit()
    second_done = threading.Event()
    second_error: list[BaseException] = []

    def second_writer() -> None:
        try:
            with Session(engine) as session:
                write_lock(session, 42)
                next_revision = session.execute(
                    text("SELECT COALESCE(MAX(revision), 0) + 1 FROM feed")
                ).scalar()
                session.execute(
                    text("INSERT INTO feed VALUES (:revision, 'second')"),
                    {"revision": next_revision},
                )
                session.commit()
        except BaseException as error:  # reported to the test thread below
            second_error.append(error)
        finally:
            second_done.set()

    with Session(engine) as first:
        write_lock(first, 42)
        first.execute(text("INSERT INTO feed VALUES (1, 'first')"))
        thread = threading.Thread(target=second_writer)
        thread.start()
        # While the first transaction is open, the second writer must be blocked.
        assert not second_done.wait(0.5)
        first.commit()
    assert second_done.wait(10)
    thread.join()
    assert second_error == []
    with Session(engine) as session:
        rows = session.execute(text("SELECT revision, writer FROM feed ORDER BY revision")).all()
    # The second writer numbered its row after the first one's commit, never colliding.
    assert [tuple(row) for row in rows] == [(1, "first"), (2, "second")]


@pytest.mark.postgres
def test_write_lock_keys_are_independent_on_postgres(postgres_server: PostgresServer) -> None:
    name = postgres_server.create_database()
    engine = make_engine(postgres_server.url(name))
    try:
        with Session(engine) as first, Session(engine) as second:
            write_lock(first, 1)
            started = time.monotonic()
            write_lock(second, 2)
            assert time.monotonic() - started < 1.0
            first.commit()
            second.commit()
    finally:
        engine.dispose()
        postgres_server.drop_database(name)


def test_database_url_gives_each_test_an_empty_database(engine: Engine) -> None:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            query = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        else:
            query = "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
        assert connection.execute(text(query)).scalar() == 0


def test_missing_postgres_binaries_name_make_setup(tmp_path: Path) -> None:
    with pytest.raises(PostgresUnavailable, match="make setup"):
        find_binaries(str(tmp_path / "*" / "bin"))


def test_postgres_binaries_pick_the_newest_version(tmp_path: Path) -> None:
    for version in ("9.6", "15", "17"):
        bin_dir = tmp_path / version / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "initdb").touch()
        (bin_dir / "pg_ctl").touch()
    assert find_binaries(str(tmp_path / "*" / "bin")) == tmp_path / "17" / "bin"


def test_a_kept_server_under_a_closed_directory_says_which_one(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root run drops to the postgres user (this run is not root)")
    # pytest's own tmp_path is under a 0700 directory of the user running the tests.
    closed = next((p for p in reversed(tmp_path.parents) if not p.stat().st_mode & 0o001), None)
    if closed is None:
        pytest.skip(f"no directory above {tmp_path} is closed to others (--basetemp?)")
    server = PostgresServer(find_binaries(), tmp_path / "postgres")
    with pytest.raises(PostgresUnavailable, match=f"cannot enter {closed}:"):
        server.start()
