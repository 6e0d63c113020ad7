"""Fixtures for the CLI: real service processes (registry, data, training, and inference
serving static noop models, whose output is their first input), found by the `tfmesh`
command through `TFMESH_<SERVICE>_ADDR`, as a user's shell would."""

from __future__ import annotations

import json

import pytest

from cli.output import console, errors
from tests.support.processes import platform_processes

# `echo` takes 4 float32 features; `image` takes 2 x 2 x 1 images (a CSV row of 4 fits).
NOOP_MODELS = [
    {
        "name": "echo",
        "runtime": "noop",
        "runtime_options": {"inputs": [{"name": "x", "dtype": "float32", "shape": [4]}]},
        "versions": [{"version": 1}, {"version": 2}],
        "labels": {"production": 1, "canary": 2},
        "batching": {"max_batch_size": 4},
    },
    {
        "name": "image",
        "runtime": "noop",
        "runtime_options": {"inputs": [{"name": "x", "dtype": "float32", "shape": [2, 2, 1]}]},
        "versions": [{"version": 1}],
    },
]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables as wide as their content, so that tests read whole cells."""
    monkeypatch.setattr(console, "width", 200)
    monkeypatch.setattr(errors, "width", 200)


@pytest.fixture(scope="package")
def services(tmp_path_factory):
    """The four services as processes, shared by the CLI's tests; their addresses are in the
    environment meanwhile."""
    home = tmp_path_factory.mktemp("cli")
    config = home / "models.json"
    config.write_text(json.dumps({"models": NOOP_MODELS}))
    processes = platform_processes(home, TFMESH_INFERENCE_MODEL_CONFIG_FILE=str(config))
    with pytest.MonkeyPatch.context() as environment:
        try:
            for name, process in processes.items():
                process.start(timeout_s=120)
                environment.setenv(f"TFMESH_{name.upper()}_ADDR", process.address)
            yield processes
        finally:
            for process in reversed(processes.values()):
                process.stop_quietly()
