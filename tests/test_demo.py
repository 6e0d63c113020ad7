"""`make demo`'s program, run whole as a process on free loopback ports, so it cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.support.processes import REPO
from tests.support.stack import stack_environment


def test_demo_runs_the_lifecycle_end_to_end(tmp_path):
    env = {
        **os.environ,
        **stack_environment(tmp_path),
        "TFMESH_PROMETHEUS_INTERVAL": "1s",
        "COLUMNS": "200",
    }
    finished = subprocess.run(
        [sys.executable, "-m", "cli.demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output[-4000:]
    assert "gRPC and REST, all three APIs agree: yes" in output
    # v2 was rolled out by the registry's controller on live evidence, step by step.
    assert (
        "rollout of v2: started 10% -> stepped 50% -> stepped 100% -> promoted 100%: promoted"
        in output
    ), output[-4000:]
    assert "after promotion: share served by v2: 100.0%" in output
    # The closing figures come from the real Prometheus the demo started.
    assert "Prometheus: http://127.0.0.1:" in output
    assert re.search(r"requests answered by v2 \(Prometheus\): [1-9]\d+", output), output[-3000:]
    assert "p99 prediction latency, last 5 min (Prometheus)" in output
    assert (tmp_path / "demo" / "training_curve.png").stat().st_size > 10_000
    assert not list((tmp_path / "run").glob("*.pid")), "the demo stops the stack it started"
