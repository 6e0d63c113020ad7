"""The benchmarks' peer server: MLServer, from its own venv (`make peer`), serving a model
through one of the runtimes in `bench/peer/` (the same SavedModel as tfmesh, or a no-op)
over its own KServe v2 REST and gRPC servers, so the same load measures both.

MLServer runs the model either in its REST process (`parallel_workers` 0) or in inference
worker processes beside it (its default, 1), and batches with its adaptive batcher when
asked; the bench measures each combination and compares against the best."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.peer_process import PeerServer, wait_ready

REPO = Path(__file__).resolve().parent.parent
MLSERVER = REPO / ".venv-peer" / "bin" / "mlserver"
RUNTIMES = Path(__file__).resolve().parent / "peer"
# MLServer's `implementation` settings: module (a file in RUNTIMES) and class.
SAVED_MODEL = "savedmodel_runtime.SavedModelRuntime"
NOOP = "noop_runtime.NoOpRuntime"


def available() -> bool:
    return MLSERVER.is_file()


def start(
    work: Path,
    name: str,
    saved_model: Path | None,
    free_port: Callable[[], int],
    runtime: str = SAVED_MODEL,
    max_batch_size: int = 0,
    max_batch_time_s: float = 0.0,
    parallel_workers: int = 1,
    threaded: bool = False,
    timeout_s: float = 300,
) -> PeerServer:
    """MLServer serving `saved_model` as `name` through `runtime` (SAVED_MODEL or NOOP) on
    loopback, with `parallel_workers` inference processes (0: in the REST process);
    batching when `max_batch_size` > 1; the model on a thread with `threaded`. Returns once
    the model is ready."""
    folder = work / f"mlserver-{time.monotonic_ns()}"
    (folder / name).mkdir(parents=True)
    module = runtime.split(".")[0]
    shutil.copy(RUNTIMES / f"{module}.py", folder / f"{module}.py")
    http_port, grpc_port = free_port(), free_port()
    settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": free_port(),
        "debug": False,
        "parallel_workers": parallel_workers,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": name,
        "implementation": runtime,
        "parameters": {"uri": str(saved_model), "extra": {"threaded": threaded}},
        "max_batch_size": max_batch_size,
        "max_batch_time": max_batch_time_s,
    }
    (folder / name / "model-settings.json").write_text(json.dumps(model))
    log = (folder / "mlserver.log").open("ab")
    process = subprocess.Popen(
        [str(MLSERVER), "start", str(folder)],
        cwd=folder,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = PeerServer(process, f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
    return wait_ready(server, name, Path(log.name), timeout_s)
