"""The dead-code check of `make lint` (vulture, configured in pyproject.toml) passes on the
tree as it is and fails on a function nothing calls."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.support.processes import REPO

PATHS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["vulture"]["paths"]


def vulture(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vulture", *PATHS, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_has_no_dead_code():
    run = vulture()
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_function_nothing_calls_fails_the_check(tmp_path):
    forgotten = tmp_path / "forgotten.py"
    forgotten.write_text(
        '"""A module with a function nobody calls."""\n\n\ndef never_called():\n    return 1\n'
    )
    run = vulture(str(forgotten))
    assert run.returncode == 3, run.stdout + run.stderr
    assert run.stdout.splitlines() == [
        f"{forgotten}:4: unused function 'never_called' (60% confidence)"
    ]
