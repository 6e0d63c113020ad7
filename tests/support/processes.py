"""Service processes for process tests: start `python -m <module>` on a free loopback port,
wait until its gRPC health says SERVING, and kill it (SIGKILL) or stop it (SIGTERM)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.ports import free_ports

REPO = Path(__file__).resolve().parents[2]


def wait_serving(address: str, timeout_s: float = 60.0, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"service exited with {process.returncode} before serving")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise TimeoutError(f"{address} was not SERVING within {timeout_s} s")


@dataclass
class ServiceProcess:
    module: str
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """The REST address of a service that serves one (inference)."""
        return f"http://127.0.0.1:{self.env['TFMESH_INFERENCE_HTTP_PORT']}"

    def start(self, timeout_s: float = 60.0) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=REPO,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_serving(self.address, timeout_s, self.process)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout_s)

    def stop_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def service_process(
    module: str, prefix: str, home: Path, *, ports: tuple[int, int] | None = None, **env: str
) -> ServiceProcess:
    """A service configured through its env prefix (e.g. `TFMESH_REGISTRY_`), not yet started,
    on `ports` (gRPC, and HTTP for the inference service) or free ones."""
    port, http_port = ports or tuple(free_ports(2))
    settings = {"TFMESH_HOME": str(home), f"{prefix}PORT": str(port)}
    if prefix == "TFMESH_INFERENCE_":
        settings[f"{prefix}HTTP_PORT"] = str(http_port)
    return ServiceProcess(module, {**settings, **env}, port, home / f"{module}.log")


def platform_processes(home: Path, **inference_env: str) -> dict[str, ServiceProcess]:
    """Registry, data, training and inference wired to one another, in start order (not yet
    started); `inference_env` says what the inference service serves. Their ports are
    chosen together, so no two share one (gRPC servers bind with SO_REUSEPORT: two on one
    port would split its connections between them)."""
    ports = free_ports(8)
    registry = service_process(
        "services.registry.server",
        "TFMESH_REGISTRY_",
        home,
        ports=(ports[0], ports[1]),
        TFMESH_REGISTRY_WATCH_POLL_INTERVAL_S="0.2",
    )
    data = service_process(
        "services.data.server",
        "TFMESH_DATA_",
        home,
        ports=(ports[2], ports[3]),
        TFMESH_DATA_REGISTRY_ADDR=registry.address,
    )
    training = service_process(
        "services.training.server",
        "TFMESH_TRAINING_",
        home,
        ports=(ports[4], ports[5]),
        TFMESH_TRAINING_DATA_ADDR=data.address,
        TFMESH_TRAINING_REGISTRY_ADDR=registry.address,
        TFMESH_TRAINING_IDLE_POLL_S="0.2",
        TFMESH_TRAINING_WATCH_POLL_S="0.1",
    )
    inference = service_process(
        "services.inference.server",
        "TFMESH_INFERENCE_",
        home,
        ports=(ports[6], ports[7]),
        TFMESH_INFERENCE_REGISTRY_ADDR=registry.address,
        TFMESH_INFERENCE_REGISTRY_MAX_BACKOFF_S="0.5",
        **inference_env,
    )
    return {"registry": registry, "data": data, "training": training, "inference": inference}


@contextmanager
def started(processes: dict[str, ServiceProcess]) -> Iterator[dict[str, ServiceProcess]]:
    """Start the processes in order; kill every one on exit, also when one fails to start."""
    try:
        for process in processes.values():
            process.start()
        yield processes
    finally:
        for process in processes.values():
            process.stop_quietly()
