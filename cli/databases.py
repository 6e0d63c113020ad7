"""The services' databases as the command line reaches them: each one's migrations, the
database its settings name (`TFMESH_<SERVICE>_DATABASE_URL`, or SQLite under
`TFMESH_HOME`), and the upgrade of several at once (`tfmesh db upgrade`, `tfmesh up`)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from services.data.settings import DataSettings
from services.data.store import MIGRATIONS as DATA
from services.registry.database import MIGRATIONS as REGISTRY
from services.registry.settings import RegistrySettings
from services.training.settings import TrainingSettings
from services.training.store import MIGRATIONS as TRAINING
from shared.db import make_engine, sqlite_url
from shared.migrations import Migrations
from shared.settings import StatefulSettings, load_settings

# Each service's migrations, its settings, and its SQLite file under the home.
DATABASES: dict[str, tuple[Migrations, type[StatefulSettings], str]] = {
    "data": (DATA, DataSettings, "data/data.db"),
    "registry": (REGISTRY, RegistrySettings, "registry/registry.db"),
    "training": (TRAINING, TrainingSettings, "training/jobs.db"),
}


def engine_of(service: str, home: Path | None = None) -> Engine:
    _, settings_type, sqlite_file = DATABASES[service]
    settings = load_settings(settings_type, **({"home": home} if home else {}))
    return make_engine(settings.database_url or sqlite_url(settings.home / sqlite_file))


def upgrade_all(services: list[str], home: Path | None = None) -> list[dict[str, str]]:
    """Upgrade each named service's database; one row per database, from and to."""
    rows = []
    for service in services:
        engine = engine_of(service, home)
        try:
            before, after = DATABASES[service][0].upgrade(engine)
        finally:
            engine.dispose()
        rows.append({"service": service, "from": before or "empty", "to": after})
    return rows
