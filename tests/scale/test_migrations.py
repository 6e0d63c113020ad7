"""Schema migrations (Alembic) of the three databases, on SQLite and on a real PostgreSQL:
the migrations build exactly the tables the code declares; an empty database gets its
schema at first start, once even when replicas start together; a database at an older
revision, or made by a release before migrations, stops the start with one line naming
`tfmesh db upgrade`; the upgrade keeps every row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, inspect, text
from typer.testing import CliRunner

from cli.main import app
from services.data.store import MIGRATIONS as DATA
from services.data.store import MetadataStore
from services.registry.core import Registry
from services.registry.database import MIGRATIONS as REGISTRY
from services.training.store import JobStore
from services.training.tables import MIGRATIONS as TRAINING
from shared.blobstore import LocalBlobStore
from shared.db import make_engine, sqlite_url
from shared.migrations import Migrations, SchemaOutOfDate, SchemaState
from tests.registry.conftest import ACCURACY_RULE, add_version
from tests.support.processes import service_process

ALL = [DATA, REGISTRY, TRAINING]


def merged(migrations: Migrations) -> MetaData:
    metadata = MetaData()
    for part in migrations.metadata:
        for table in part.tables.values():
            table.to_metadata(metadata)
    return metadata


@pytest.mark.parametrize("migrations", ALL, ids=lambda m: m.service)
def test_the_migrations_build_exactly_the_declared_tables(
    migrations: Migrations, database_url: str
) -> None:
    engine = make_engine(database_url)
    migrations.ensure_current(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "version_table": migrations.version_table}
        )
        assert compare_metadata(context, merged(migrations)) == []
        assert migrations.state(connection) is SchemaState.CURRENT
    engine.dispose()


def open_registry(engine: Engine, tmp_path: Path) -> Registry:
    return Registry(
        engine,
        LocalBlobStore(tmp_path / "blobs"),
        default_rule=ACCURACY_RULE,
        max_artifact_bytes=1024 * 1024,
    )


def registry_with_a_version(database_url: str, tmp_path: Path) -> Registry:
    registry = open_registry(make_engine(database_url), tmp_path)
    version, _ = add_version(registry, "kept", b"weights", metrics={"accuracy": 0.9})
    registry.aliases.set_alias(
        "kept", "production", version.version, actor="tester", reason="first"
    )
    return registry


def previous_schema(migrations: Migrations, database_url: str, before_migrations: bool) -> None:
    """Take a database back to the baseline, the schema of the releases before migrations;
    `before_migrations` also drops the version table, as those releases never made one."""
    engine = make_engine(database_url)
    with engine.begin() as connection:
        command.downgrade(migrations.config(connection), migrations.baseline())
        if before_migrations:
            connection.execute(text(f"DROP TABLE {migrations.version_table}"))
    engine.dispose()


@pytest.mark.parametrize("before_migrations", [False, True], ids=["at-0001", "before-alembic"])
def test_an_older_registry_is_refused_then_upgraded_with_nothing_lost(
    database_url: str, tmp_path: Path, before_migrations: bool
) -> None:
    registry_with_a_version(database_url, tmp_path)
    previous_schema(REGISTRY, database_url, before_migrations)
    engine = make_engine(database_url)
    assert "leases" not in inspect(engine).get_table_names()

    where = "made before migrations" if before_migrations else "at revision 0001"
    expected = (
        f"the registry database is {where}, this release needs 0002: "
        "run `tfmesh db upgrade registry`"
    )
    with pytest.raises(SchemaOutOfDate) as refused:
        open_registry(engine, tmp_path)
    assert str(refused.value) == expected

    before = "before migrations" if before_migrations else "0001"
    assert REGISTRY.upgrade(engine) == (before, "0002")
    assert "leases" in inspect(engine).get_table_names()
    registry = open_registry(engine, tmp_path)
    version = registry.get_version("kept", alias="production")
    assert version.version == 1 and version.metrics == {"accuracy": 0.9}
    spec, chunks = registry.open_artifact("kept", 1, "model.keras")
    assert b"".join(chunks) == b"weights"
    # Upgrading again changes nothing.
    assert REGISTRY.upgrade(engine) == ("0002", "0002")
    engine.dispose()


def test_a_data_database_from_before_migrations_keeps_its_versions(
    database_url: str, tmp_path: Path
) -> None:
    engine = make_engine(database_url)
    MetadataStore(engine)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO dataset_versions (name, dataset, digest, source_sha256, source_bytes,"
                " format, label_column, split_ratios, max_bad_row_fraction, reference_version,"
                " schema_json, rows, anomalies, statistics, created_at) VALUES ('t@1', 't', 'd',"
                " 's', 1, 'csv', 'label', '{}', 0, '', '{}', '{}', '{}', '{}', '2026-12-01')"
            )
        )
    previous_schema(DATA, database_url, before_migrations=True)
    with pytest.raises(SchemaOutOfDate, match="run `tfmesh db upgrade data`"):
        MetadataStore(engine)
    assert DATA.upgrade(engine) == ("before migrations", "0003")
    MetadataStore(engine)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT name FROM dataset_versions")) == "t@1"
    engine.dispose()


def test_a_database_newer_than_the_release_is_refused(database_url: str) -> None:
    engine = make_engine(database_url)
    JobStore(engine)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {TRAINING.version_table} SET version_num = '9999'"))
    with pytest.raises(SchemaOutOfDate, match="at revision 9999, newer than this release"):
        JobStore(engine)
    engine.dispose()


@pytest.mark.postgres
def test_replicas_starting_together_create_the_schema_once(postgres_server) -> None:
    name = postgres_server.create_database()
    try:
        engines = [make_engine(postgres_server.url(name)) for _ in range(4)]
        errors: list[BaseException] = []

        def start(index: int) -> None:
            try:
                REGISTRY.ensure_current(engines[index])
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=start, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        with engines[0].connect() as connection:
            assert REGISTRY.state(connection) is SchemaState.CURRENT
            assert connection.scalar(text(f"SELECT count(*) FROM {REGISTRY.version_table}")) == 1
        for engine in engines:
            engine.dispose()
    finally:
        postgres_server.drop_database(name)


def test_tfmesh_db_reports_and_upgrades_the_local_databases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFMESH_HOME", str(tmp_path))
    for name in ("DATA", "REGISTRY", "TRAINING"):
        monkeypatch.delenv(f"TFMESH_{name}_DATABASE_URL", raising=False)
    registry_file = sqlite_url(tmp_path / "registry" / "registry.db")
    registry_with_a_version(registry_file, tmp_path)
    previous_schema(REGISTRY, registry_file, before_migrations=False)

    def run(*args: str) -> list[dict[str, str]]:
        result = CliRunner().invoke(app, ["db", *args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    states = {row["service"]: row for row in run("status")}
    assert states["registry"] == {
        "service": "registry",
        "revision": "0001",
        "needed": "0002",
        "state": "behind",
    }
    assert states["data"]["state"] == "empty"
    assert not (tmp_path / "data").exists(), "a status creates no database"
    upgraded = run("upgrade", "registry")
    assert upgraded == [{"service": "registry", "from": "0001", "to": "0002"}]
    assert [row["state"] for row in run("status")] == ["empty", "current", "empty"]
    refused = CliRunner().invoke(app, ["db", "upgrade", "models"])
    assert refused.exit_code != 0 and "no database models" in refused.output


def test_a_registry_process_refuses_an_older_database_in_one_line(tmp_path: Path) -> None:
    registry_file = sqlite_url(tmp_path / "registry" / "registry.db")
    registry_with_a_version(registry_file, tmp_path)
    previous_schema(REGISTRY, registry_file, before_migrations=False)
    registry = service_process("services.registry.server", "TFMESH_REGISTRY_", tmp_path)
    environment = {**os.environ, **registry.env}
    refused = subprocess.run(
        [sys.executable, "-m", registry.module],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "registry cannot start: the registry database is at revision 0001, this release needs "
        "0002: run `tfmesh db upgrade registry`"
    )
    upgraded = subprocess.run(
        [sys.executable, "-m", "cli", "db", "upgrade", "registry"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    try:
        registry.start()
    finally:
        registry.stop_quietly()


def test_a_services_image_upgrades_its_own_database(tmp_path: Path) -> None:
    # What the Kubernetes upgrade Job runs in the data service's image.
    upgraded = subprocess.run(
        [sys.executable, "-m", "cli.databases", "data"],
        env={**os.environ, "TFMESH_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == "data database: empty -> 0003"
    refused = subprocess.run(
        [sys.executable, "-m", "cli.databases", "models"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "usage" in refused.stderr
