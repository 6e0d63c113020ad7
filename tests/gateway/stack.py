"""The whole platform as processes on loopback: registry, data, training, inference (following
the registry's aliases of the models it is told to serve) and the gateway (uvicorn on a
free port), each a real `python -m ...` started the way the local stack starts it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.ports import free_port
from tests.support.processes import REPO, ServiceProcess, platform_processes


@dataclass
class GatewayProcess:
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> GatewayProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.server"],
                cwd=REPO,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError(f"the gateway was not up on {self.url} within {timeout_s} s")

    def stop_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@dataclass(frozen=True)
class Stack:
    registry: ServiceProcess
    data: ServiceProcess
    training: ServiceProcess
    inference: ServiceProcess
    gateway: GatewayProcess

    def cli_environment(self) -> dict[str, str]:
        """What the `tfmesh` command needs to find these processes."""
        return {
            "TFMESH_REGISTRY_ADDR": self.registry.address,
            "TFMESH_DATA_ADDR": self.data.address,
            "TFMESH_TRAINING_ADDR": self.training.address,
            "TFMESH_INFERENCE_ADDR": self.inference.address,
            "TFMESH_GATEWAY_URL": self.gateway.url,
        }


@contextmanager
def running_stack(home: Path, models: str, **gateway_env: str) -> Iterator[Stack]:
    """Start the five processes under `home`; the inference service serves `models`
    (comma-separated registry models). Everything is killed on exit."""
    fleet = platform_processes(home, TFMESH_INFERENCE_MODELS=models)
    registry, data, training, inference = fleet.values()
    port = free_port()
    gateway = GatewayProcess(
        {
            "TFMESH_GATEWAY_PORT": str(port),
            "TFMESH_GATEWAY_REGISTRY_ADDR": registry.address,
            "TFMESH_GATEWAY_DATA_ADDR": data.address,
            "TFMESH_GATEWAY_TRAINING_ADDR": training.address,
            "TFMESH_GATEWAY_INFERENCE_ADDR": inference.address,
            "TFMESH_GATEWAY_INFERENCE_HTTP_ADDR": inference.http_url.removeprefix("http://"),
            **gateway_env,
        },
        port,
        home / "gateway.log",
    )
    with ExitStack() as stack:
        for process in (registry, data, training, inference, gateway):
            stack.callback(process.stop_quietly)
        for process in (registry, data, training, inference):
            process.start(timeout_s=120)
        gateway.start()
        yield Stack(registry, data, training, inference, gateway)
