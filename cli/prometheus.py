"""The local stack's Prometheus: Debian's `prometheus`, scraping every service on loopback.

`LocalPrometheus.start` writes a scrape configuration for the stack's metrics ports (one
job per service, `tfmesh-<service>`, as on Kubernetes) that loads the repository's rule
files (monitoring/rules), has `promtool check config` refuse a bad one with promtool's
message, starts `prometheus` on 127.0.0.1 with its data under `$TFMESH_HOME/prometheus`,
and waits until it is ready. `query` asks it an instant PromQL query."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "monitoring" / "rules"
# Not Prometheus's usual 9090: Debian's package may run a system Prometheus there.
DEFAULT_PORT = 9190
# Short, so a demo's few minutes of traffic make several samples per series.
DEFAULT_INTERVAL = "5s"


class PrometheusError(Exception):
    """Prometheus is not installed, its configuration is refused, or it did not start."""


@dataclass(frozen=True)
class ScrapeTarget:
    service: str
    address: str


def scrape_config(targets: list[ScrapeTarget], interval: str) -> dict[str, Any]:
    """Prometheus's configuration for the stack: one job per service, the rule files."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in sorted(RULES.glob("*.rules.yaml"))],
        "scrape_configs": [
            {
                "job_name": f"tfmesh-{target.service}",
                "static_configs": [{"targets": [target.address]}],
            }
            for target in targets
        ],
    }


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise PrometheusError(
            f"{name} is not installed: run `make setup` (Debian's prometheus package)"
        )
    return found


class LocalPrometheus:
    def __init__(self, home: Path) -> None:
        self.dir = home / "prometheus"
        self.port = int(os.environ.get("TFMESH_PROMETHEUS_PORT", DEFAULT_PORT))
        self.interval = os.environ.get("TFMESH_PROMETHEUS_INTERVAL", DEFAULT_INTERVAL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.dir / "prometheus.yml"

    def write_config(self, targets: list[ScrapeTarget]) -> Path:
        """Write the configuration and have promtool check it (rule files included)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(scrape_config(targets, self.interval)))
        check_config(self.config_path)
        return self.config_path

    def command(self) -> list[str]:
        return [
            _tool("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def ready(self, timeout_s: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=timeout_s) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def wait_ready(self, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {process.returncode}; see {log}")
            if self.ready():
                return
            time.sleep(0.2)
        raise PrometheusError(f"prometheus was not ready on {self.url} within {timeout_s} s")

    def query(self, expression: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The result vector of an instant query; PrometheusError names a refused query."""
        return query(self.url, expression, timeout_s)


def check_config(path: Path) -> None:
    """`promtool check config`; its own message when it refuses the file."""
    checked = subprocess.run(
        [_tool("promtool"), "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if checked.returncode != 0:
        raise PrometheusError(f"promtool refused {path}:\n{checked.stdout}{checked.stderr}")


def query(url: str, expression: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    address = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(address, timeout=timeout_s) as answer:
            document = json.load(answer)
    except urllib.error.HTTPError as error:
        document = json.load(error)
    if document.get("status") != "success":
        raise PrometheusError(f"query {expression!r} refused: {document.get('error')}")
    return list(document["data"]["result"])
