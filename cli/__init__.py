"""The platform from a shell: `tfmesh`, its command line (Typer + rich), the local stack
that `tfmesh up` and `make up` run (`cli.stack`) and the narrated lifecycle of `make demo`
(`cli.demo`)."""
