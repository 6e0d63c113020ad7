"""Transport stays thin: the services' cores and the domain errors they raise import
nothing from gRPC (the interceptor maps a domain error's code to a gRPC status, the HTTP
front ends to an HTTP status). Each module is imported in a fresh interpreter, so what
other tests imported does not count."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.processes import REPO

CORES = [
    "shared.errors",
    "services.data.core",
    "services.training.core",
    "services.registry.core",
    "services.inference.pipeline",
    "services.inference.execution",
]
PROBE = "import sys, {module}; print(sorted(n for n in sys.modules if n.split('.')[0] == 'grpc'))"


@pytest.mark.parametrize("module", CORES)
def test_a_core_imports_no_grpc(module):
    run = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", f"{module} imports {run.stdout.strip()}"


def test_the_probe_sees_grpc_when_it_is_imported():
    run = subprocess.run(
        [sys.executable, "-c", PROBE.format(module="shared.channels")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "'grpc'" in run.stdout
