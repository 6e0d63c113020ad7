"""Schema migrations of the services' databases, by Alembic: one migration history per
service (`services/<service>/migrations/`), one shared environment (`shared/alembic/`),
and a version table per service (`alembic_version_<service>`).

A service checks its schema at start (`Migrations.ensure_current`): an empty database is
brought to the newest revision there and then (a first start, or a test), under a lock
so that replicas starting together do it once; a database at an older revision, or made
by a release before migrations, stops the start with one line naming the command that
upgrades it (`tfmesh db upgrade <service>`); the upgrade itself (`Migrations.upgrade`) is
never run by importing anything. A database made before migrations holds the baseline's
tables: the upgrade marks it as the baseline first, then applies what follows."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, inspect, text

from shared.settings import SettingsError

ENVIRONMENT = Path(__file__).resolve().parent / "alembic"
# Advisory-lock key (PostgreSQL) held while a database is migrated.
MIGRATION_LOCK_KEY = 0x7F6D657368_FF


class SchemaState(enum.Enum):
    EMPTY = "empty"
    BEFORE_MIGRATIONS = "made before migrations"
    BEHIND = "behind"
    CURRENT = "current"
    UNKNOWN = "at a revision this release does not know"


class SchemaOutOfDate(SettingsError):
    """The database is not at this release's schema; the message names the command."""


@dataclass(frozen=True)
class Migrations:
    service: str
    versions: Path
    metadata: Sequence[MetaData]

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.service}"

    def config(self, connection: Connection | None = None) -> Config:
        config = Config()
        config.set_main_option("script_location", str(ENVIRONMENT))
        config.set_main_option("version_locations", str(self.versions))
        config.set_main_option("path_separator", "os")
        config.attributes.update(
            connection=connection,
            version_table=self.version_table,
            target_metadata=list(self.metadata),
        )
        return config

    def _scripts(self) -> ScriptDirectory:
        return ScriptDirectory.from_config(self.config())

    def head(self) -> str:
        head = self._scripts().get_current_head()
        assert head is not None, f"{self.versions} holds no migration"
        return head

    def baseline(self) -> str:
        (base,) = self._scripts().get_bases()
        return str(base)

    def current(self, connection: Connection) -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table": self.version_table})
        return context.get_current_revision()

    def state(self, connection: Connection) -> SchemaState:
        revision = self.current(connection)
        if revision is None:
            tables = set(inspect(connection).get_table_names())
            ours = {name for metadata in self.metadata for name in metadata.tables}
            return SchemaState.BEFORE_MIGRATIONS if tables & ours else SchemaState.EMPTY
        if revision == self.head():
            return SchemaState.CURRENT
        known = {script.revision for script in self._scripts().walk_revisions()}
        return SchemaState.BEHIND if revision in known else SchemaState.UNKNOWN

    def upgrade(self, engine: Engine) -> tuple[str | None, str]:
        """Bring the database to the newest revision; returns (from, to)."""
        with engine.begin() as connection:
            _lock(connection)
            before = self.current(connection)
            config = self.config(connection)
            if self.state(connection) is SchemaState.BEFORE_MIGRATIONS:
                command.stamp(config, self.baseline())
                before = "before migrations"
            command.upgrade(config, "head")
            return before, self.head()

    def ensure_current(self, engine: Engine) -> None:
        """At start: create an empty database's schema; refuse any other that is not current."""
        with engine.connect() as connection:
            state = self.state(connection)
            revision = self.current(connection)
        if state is SchemaState.EMPTY:
            self.upgrade(engine)
            return
        if state is SchemaState.CURRENT:
            return
        where = f"at revision {revision}" if revision else state.value
        if state is SchemaState.UNKNOWN:
            raise SchemaOutOfDate(
                f"the {self.service} database is {where}, newer than this release "
                f"({self.head()}): run the release that upgraded it"
            )
        raise SchemaOutOfDate(
            f"the {self.service} database is {where}, this release needs {self.head()}: "
            f"run `tfmesh db upgrade {self.service}`"
        )


def _lock(connection: Connection) -> None:
    """One migration at a time (SQLite: the write lock BEGIN IMMEDIATE already took)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
