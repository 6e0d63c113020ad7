"""A peer model server run by the benchmarks as a process of its own (MLServer, Triton):
its addresses, how it stops, and the wait until its model answers KServe v2's ready."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PeerServer:
    process: subprocess.Popen
    http_address: str
    grpc_address: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def wait_ready(server: PeerServer, model: str, log: Path, timeout_s: float) -> PeerServer:
    """`server` once `/v2/models/<model>/ready` answers 200; stopped, and an error naming
    `log`, when it exits or takes longer than `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the peer exited with {server.process.returncode}; see {log}")
        try:
            url = f"http://{server.http_address}/v2/models/{model}/ready"
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"the peer did not make {model} ready within {timeout_s} s; see {log}")
