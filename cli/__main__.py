"""`python -m cli` is the same as the `tfmesh` command."""

from cli.main import app

app()
