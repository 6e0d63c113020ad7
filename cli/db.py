"""`tfmesh db`: the schema of each service's database, and its upgrade by the migrations.

Each service's database is the one its settings name (`TFMESH_<SERVICE>_DATABASE_URL`, or
SQLite under `TFMESH_HOME`), so the command runs where the services' environment is: on
the machine of the local stack, or as a Kubernetes Job with the services' Secret."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.databases import DATABASES, engine_of, sqlite_file, upgrade_all
from cli.output import print_json, table
from cli.rpc import JsonFlag
from shared.migrations import SchemaState

app = typer.Typer(help="The services' database schemas and their migrations.")

ServicesArgument = Annotated[
    list[str] | None,
    typer.Argument(help="data, registry or training; all three when none is named."),
]


def _chosen(services: list[str] | None) -> list[str]:
    unknown = sorted(set(services or []) - set(DATABASES))
    if unknown:
        raise typer.BadParameter(f"no database {', '.join(unknown)}: name data, registry, training")
    return services or list(DATABASES)


@app.command()
def upgrade(services: ServicesArgument = None, as_json: JsonFlag = False) -> None:
    """Bring the databases to this release's schema (safe to run again; replicas may run)."""
    rows = upgrade_all(_chosen(services))
    if as_json:
        print_json(rows)
        return
    table("database upgrades", ["service", "from", "to"], [list(r.values()) for r in rows])


@app.command()
def status(services: ServicesArgument = None, as_json: JsonFlag = False) -> None:
    """Each database's revision against the one this release needs."""
    rows = []
    for service in _chosen(services):
        migrations = DATABASES[service].migrations()
        local = sqlite_file(service)
        if local is not None and not local.exists():
            # Nothing made it yet: look without creating the file.
            current, state = "", SchemaState.EMPTY.value
        else:
            engine = engine_of(service)
            try:
                with engine.connect() as connection:
                    current = migrations.current(connection) or ""
                    state = migrations.state(connection).value
            finally:
                engine.dispose()
        rows.append(
            {"service": service, "revision": current, "needed": migrations.head(), "state": state}
        )
    if as_json:
        print_json(rows)
        return
    table(
        "database schemas",
        ["service", "revision", "needed", "state"],
        [list(r.values()) for r in rows],
    )
