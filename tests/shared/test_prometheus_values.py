"""shared.prometheus_values, in child processes in multiprocess mode (it changes how a
process's metric values are made, so it cannot run in pytest's own)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHECKS = textwrap.dedent(
    """
    import os

    import services.inference  # installs the cached-pid values
    from services.inference import metrics
    from shared import prometheus_values

    # The values take the cached id, not the kernel's: a stand-in id names the file.
    prometheus_values._pid = 424242
    metrics.REQUESTS.labels("m", "1", "OK").inc()
    metrics.REQUEST_SECONDS.labels("m", "1").observe(0.01)
    child = os.fork()
    if child == 0:
        # A forked child writes its own file, under its own id.
        metrics.REQUESTS.labels("m", "1", "OK").inc(5)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    assert status == 0, status
    print(child)
    """
)

READ = textwrap.dedent(
    """
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    value = registry.get_sample_value(
        "tfmesh_inference_requests_total", {"model": "m", "version": "1", "code": "OK"}
    )
    print(value)
    """
)


def run_python(code: str, env: dict[str, str]) -> str:
    """What `code`, run by a child interpreter in the repository, printed."""
    finished = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout.strip()


def test_multiprocess_values_skip_getpid_and_follow_a_fork(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    child = run_python(CHECKS, env)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"counter_424242.db", f"counter_{child}.db"} <= files, files
    assert float(run_python(READ, env)) == 6.0, "both processes' counts are summed"
