"""The README's tour and the API guide, run: every `bash` code block of the README's tour
and then of `docs/api.md` (except those marked `no-test`, which start and stop the stack)
runs in order, in one bash session, against a real stack of processes on loopback, so the
documented commands cannot rot.

The blocks see what the tour's set-up gives a reader: `tfmesh` and `python` on PATH, the
services' addresses in `TFMESH_<SERVICE>_ADDR`, the gateway's URL in `$GATEWAY` and the
inference service's REST URL in `$INFERENCE_REST`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway.stack import running_stack
from tests.support.processes import REPO

TOUR = REPO / "README.md"
API_GUIDE = REPO / "docs" / "api.md"
BLOCK = re.compile(r"^```bash([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
TIMEOUT_S = 300


def runnable_blocks(markdown: str) -> list[str]:
    return [code for info, code in BLOCK.findall(markdown) if "no-test" not in info.split()]


def test_the_tour_has_blocks_to_run_and_marks_the_stack_set_up():
    markdown = TOUR.read_text()
    assert len(runnable_blocks(markdown)) >= 10
    skipped = [code for info, code in BLOCK.findall(markdown) if "no-test" in info.split()]
    assert any("tfmesh up" in code for code in skipped)
    assert len(runnable_blocks(API_GUIDE.read_text())) >= 8


def script_of(blocks: list[str]) -> str:
    """One script that names each block before running it, so a failure points at it."""
    parts = ["set -euo pipefail"]
    for number, code in enumerate(blocks, start=1):
        parts.append(f"echo '### tour block {number}'")
        parts.append(code)
    return "\n".join(parts) + "\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("tour"), "digits") as running:
        yield running


def test_every_tour_block_runs(stack, tmp_path):
    environment = {
        **os.environ,
        **stack.cli_environment(),
        "GATEWAY": stack.gateway.url,
        "INFERENCE_REST": stack.inference.http_url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "160",
    }
    blocks = runnable_blocks(TOUR.read_text()) + runnable_blocks(API_GUIDE.read_text())
    run = subprocess.run(
        ["bash", "-c", script_of(blocks)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    for expected in (
        "digits@",  # the imported version
        "succeeded",  # both training jobs
        "digits v1",  # v1 registered
        "production -> v1",
        '"predictions"',  # TF Serving's answer
        '"model_name":"digits"',  # KServe's answer
        '"error"',  # the bad requests' bodies
        "paths",
        "canary -> v2 at 20%",
        "production -> v2 (gate overridden)",
    ):
        assert expected in output, f"{expected!r} not in the tour's output:\n{output[-6000:]}"
