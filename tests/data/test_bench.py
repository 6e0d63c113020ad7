"""The data benchmark stays runnable: a 5 MB run against a real service process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_reports_ingest_throughput_and_memory(tmp_path):
    output = tmp_path / "data.json"
    subprocess.run(
        [sys.executable, "bench/data_bench.py", "--size-mb", "5", "--output", str(output)],
        cwd=REPO,
        check=True,
        timeout=240,
        capture_output=True,
    )
    results = json.loads(output.read_text())
    assert results["file_mb"] >= 5
    assert results["rows"] == sum(results["split_rows"].values()) > 40_000
    assert results["ingest_mb_per_s"] > 0 and results["read_train_rows_per_s"] > 0
    assert results["read_train_arrow_rows_per_s"] > 0
    assert results["parquet_files"] >= 3 and results["parquet_mb"] > 0
    assert results["peak_rss_mb"] > 0 and results["peak_rss_growth_mb"] < 300
