"""The services' databases as the command line reaches them: each one's migrations, the
database its settings name (`TFMESH_<SERVICE>_DATABASE_URL`, or SQLite under
`TFMESH_HOME`), and the upgrade of several at once (`tfmesh db upgrade`, `tfmesh up`).

A service's modules are imported only when its database is asked for, so a service's
image (which holds no other service's code) runs its own upgrade as
`python -m cli.databases <service>`: the Kubernetes upgrade Job does."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from shared.db import make_engine, sqlite_url
from shared.migrations import Migrations
from shared.settings import StatefulSettings, load_settings


@dataclass(frozen=True)
class Database:
    """Where a service's migrations and settings are, and its SQLite file under the home."""

    migrations_module: str
    settings_module: str
    settings_class: str
    sqlite_file: str

    def migrations(self) -> Migrations:
        migrations: Migrations = importlib.import_module(self.migrations_module).MIGRATIONS
        return migrations

    def settings(self, home: Path | None) -> StatefulSettings:
        settings_type = getattr(importlib.import_module(self.settings_module), self.settings_class)
        settings: StatefulSettings = load_settings(
            settings_type, **({"home": home} if home else {})
        )
        return settings


DATABASES = {
    "data": Database(
        "services.data.store", "services.data.settings", "DataSettings", "data/data.db"
    ),
    "registry": Database(
        "services.registry.database",
        "services.registry.settings",
        "RegistrySettings",
        "registry/registry.db",
    ),
    "training": Database(
        "services.training.tables",
        "services.training.settings",
        "TrainingSettings",
        "training/jobs.db",
    ),
}


def sqlite_file(service: str, home: Path | None = None) -> Path | None:
    """The service's SQLite file, when its settings name no database URL."""
    database = DATABASES[service]
    settings = database.settings(home)
    return None if settings.database_url else settings.home / database.sqlite_file


def engine_of(service: str, home: Path | None = None, url: str = "") -> Engine:
    if url:
        return make_engine(url)
    local = sqlite_file(service, home)
    return make_engine(
        sqlite_url(local) if local else DATABASES[service].settings(home).database_url
    )


def upgrade_all(
    services: list[str], home: Path | None = None, urls: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """Upgrade each named service's database (at `urls[service]` when given, else where
    its settings say); one row per database, from and to."""
    rows = []
    for service in services:
        engine = engine_of(service, home, (urls or {}).get(service, ""))
        try:
            before, after = DATABASES[service].migrations().upgrade(engine)
        finally:
            engine.dispose()
        rows.append({"service": service, "from": before or "empty", "to": after})
    return rows


def main(argv: list[str]) -> int:
    """`python -m cli.databases SERVICE...`: upgrade, one line per database."""
    unknown = sorted(set(argv) - set(DATABASES))
    if not argv or unknown:
        print(f"usage: python -m cli.databases {{{','.join(DATABASES)}}}...", file=sys.stderr)
        return 2
    for row in upgrade_all(argv):
        print(f"{row['service']} database: {row['from']} -> {row['to']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
