"""The benchmarks' Triton peer: NVIDIA Triton Inference Server from PyPI's nvidia-pytriton
(its own venv, `make pytriton`), serving the same SavedModel, or a no-op, as a Python
callable behind Triton's C++ HTTP and gRPC front ends and its dynamic batcher
(`bench/peer/pytriton_server.py`).

Triton's Python backend stub links against `libpython3.X.so.1.0`; on a machine whose
system Python is an older patch release than the venv's (Debian's 3.11.2 beside a 3.11.7),
the stub would load the system's library under the venv's standard library and fail
(`_thread.RLock` lacks what 3.11.7's `multiprocessing` calls). The server is started with
the venv interpreter's own library directory first on `LD_LIBRARY_PATH`."""

from __future__ import annotations

import functools
import os
import subprocess
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from bench.peer_process import PeerServer, wait_ready

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv-pytriton" / "bin" / "python"
SERVER = Path(__file__).resolve().parent / "peer" / "pytriton_server.py"


def available() -> bool:
    return PYTHON.is_file()


@functools.cache
def _library_dir() -> str:
    """The venv interpreter's libpython directory (the venv's base Python)."""
    asked = subprocess.run(
        [str(PYTHON), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return asked.stdout.strip() or sysconfig.get_config_var("LIBDIR")


def start(
    work: Path,
    name: str,
    saved_model: Path | None,
    free_port: Callable[[], int],
    max_batch_size: int = 1,
    queue_delay_us: int = 0,
    instances: int = 1,
    noop_features: int = 0,
    timeout_s: float = 300,
) -> PeerServer:
    """Triton serving `saved_model` (or, with `noop_features`, a no-op of that many
    float32 features) as `name` on loopback: dynamic batching up to `max_batch_size` with
    `queue_delay_us` of waiting, `instances` copies of the callable. Returns once the
    model is ready."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    command = [
        str(PYTHON),
        str(SERVER),
        "--name",
        name,
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        "--max-batch-size",
        str(max_batch_size),
        "--queue-delay-us",
        str(queue_delay_us),
        "--instances",
        str(instances),
    ]
    if noop_features:
        command += ["--noop-features", str(noop_features)]
    else:
        command += ["--saved-model", str(saved_model)]
    inherited = os.environ.get("LD_LIBRARY_PATH")
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [_library_dir(), inherited])),
    }
    log_path = work / f"triton-{time.monotonic_ns()}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = PeerServer(process, f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
    return wait_ready(server, name, log_path, timeout_s)
