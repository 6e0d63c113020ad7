"""Suite-wide fixtures: a real PostgreSQL server for the session, and `database_url`, a fresh
empty database per test on SQLite and on PostgreSQL, so every store test runs on both; a
real S3 server (SeaweedFS) for the session, and `object_store`, a fresh bucket prefix per
test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.postgres import PostgresServer, PostgresUnavailable, find_binaries
from cli.seaweedfs import LocalObjectStore, ObjectStoreError
from shared.db import sqlite_url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server on 127.0.0.1 for the whole run; fails (never skips) if it
    cannot start, naming `make setup` when the binaries are missing."""
    try:
        server = PostgresServer(find_binaries())
        server.start()
    except PostgresUnavailable as error:
        pytest.fail(f"PostgreSQL is needed for these tests: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://) of the session's server's default database."""
    return postgres_server.url()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "metadata.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalObjectStore]:
    """One real SeaweedFS S3 server on 127.0.0.1 for the whole run; fails (never skips) if
    it cannot start."""
    store = LocalObjectStore(tmp_path_factory.mktemp("seaweedfs"))
    try:
        store.start()
    except ObjectStoreError as error:
        pytest.fail(f"SeaweedFS is needed for these tests: {error}", pytrace=False)
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture
def object_store(
    seaweedfs: LocalObjectStore, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> LocalObjectStore:
    """The session's S3 server, with this process's AWS variables pointing at it and
    `TFMESH_BLOB_URL` naming a prefix of the bucket no other test uses."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    for name, value in seaweedfs.environment(prefix).items():
        monkeypatch.setenv(name, value)
    return seaweedfs
