"""Alembic's environment for every tfmesh database (one per service): it runs on the
connection and the target metadata that `shared.migrations` hands over in the config's
attributes, with the service's own version table."""

from alembic import context

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=config.attributes.get("target_metadata"),
    version_table=config.attributes["version_table"],
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
