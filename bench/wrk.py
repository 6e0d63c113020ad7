"""HTTP load from wrk (Debian's `wrk`, a C load generator): one fixed POST body, N
keep-alive connections, closed loop, and the figures its Lua `done` hook reports.

The body is read from a file by the Lua script, so it may hold binary bytes (Triton's
binary tensors); extra headers come from the environment."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = """
local file = io.open(os.getenv("WRK_BODY_FILE"), "rb")
wrk.body = file:read("*a")
file:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE")
local header_length = os.getenv("WRK_HEADER_LENGTH")
if header_length ~= nil and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
"""


ANSWER_TIMEOUT_S = 10


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    # Answers that were not 2xx, and socket errors.
    bad_status: int
    socket_errors: int


def available() -> bool:
    return shutil.which("wrk") is not None


def post(
    url: str,
    body: bytes,
    content_type: str,
    connections: int,
    seconds: float,
    work: Path,
    header_length: int | None = None,
) -> WrkResult:
    """`connections` connections posting `body` to `url` for `seconds`."""
    script = work / "post.lua"
    script.write_text(SCRIPT)
    body_file = work / f"body-{os.getpid()}.bin"
    body_file.write_bytes(body)
    env = {
        **os.environ,
        "WRK_BODY_FILE": str(body_file),
        "WRK_CONTENT_TYPE": content_type,
        "WRK_HEADER_LENGTH": "" if header_length is None else str(header_length),
    }
    threads = max(1, min(2, connections))
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s"]
    # A slow answer counts in the percentiles rather than as wrk's default 2 s timeout.
    command += ["--timeout", f"{ANSWER_TIMEOUT_S}s"]
    finished = subprocess.run(
        [*command, "-s", str(script), "--latency", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    lines = [line for line in finished.stdout.splitlines() if line.startswith("RESULT ")]
    if finished.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed:\n{finished.stdout}\n{finished.stderr}")
    requests, duration_us, p50_us, p99_us, bad, errors = (int(v) for v in lines[0].split()[1:])
    return WrkResult(
        requests / (duration_us / 1e6), p50_us / 1e3, p99_us / 1e3, requests, bad, errors
    )
