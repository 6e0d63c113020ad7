"""Triton's own clients, from the venv `make triton` builds (`.venv-triton`): its Python
for scripts that use `tritonclient`, and `perf_analyzer`, Triton's C++ load generator,
with the CUDA runtime library it links against (no GPU is needed to run it)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-triton"


def python() -> Path | None:
    """The interpreter that has `tritonclient`, or None before `make triton`."""
    path = VENV / "bin" / "python"
    return path if path.is_file() else None


def perf_analyzer_env() -> dict[str, str] | None:
    """The environment perf_analyzer runs in, or None when it is not installed."""
    binary = VENV / "bin" / "perf_analyzer"
    libraries = sorted(VENV.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    if not binary.is_file() or not libraries:
        return None
    paths = [str(libraries[-1]), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(paths)}


def perf_analyzer(
    model: str, address: str, concurrency: int, interval_ms: int, *extra: str, timeout_s: float
) -> dict[str, float]:
    """One perf_analyzer measurement over gRPC (KServe mode, its default): the CSV row it
    writes (throughput, latency percentiles in microseconds, server-side times)."""
    env = perf_analyzer_env()
    if env is None:
        raise FileNotFoundError("perf_analyzer is not installed: run `make triton`")
    report = VENV / f"perf-{os.getpid()}.csv"
    command = [
        str(VENV / "bin" / "perf_analyzer"),
        "-m",
        model,
        "-u",
        address,
        "-i",
        "grpc",
        "--concurrency-range",
        str(concurrency),
        "--measurement-interval",
        str(interval_ms),
        "--percentile",
        "99",
        "-f",
        str(report),
        *extra,
    ]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    if finished.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed:\n{finished.stdout}\n{finished.stderr}")
    try:
        rows = list(csv.DictReader(io.StringIO(report.read_text())))
    finally:
        report.unlink(missing_ok=True)
    return {name: float(value) for name, value in rows[0].items() if value}
