"""`tfmesh`, the command line of the platform (Typer + rich)."""
