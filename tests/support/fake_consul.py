"""A stand-in for a Consul agent's HTTP API, for testing `shared.discovery.ConsulDiscovery`.

No Consul agent can be installed on these machines, so this stands in for the agent's HTTP
API; py-consul and our code are real, and talk to it over HTTP on 127.0.0.1. It serves the
three endpoints ConsulDiscovery uses: `PUT /v1/agent/service/register`,
`PUT /v1/agent/service/deregister/<id>` and `GET /v1/health/service/<name>` (with
`?passing=1`), answering in Consul's JSON shape with an `X-Consul-Index` header.

Health is real, not assumed: each registered gRPC check is a `grpc.health.v1` Check call
against the registered `grpc` address (`host:port` or `host:port/service`), run every
`interval` of the check by a checker thread, as an agent does. A status change moves the
index, and a blocking query (`?index=N&wait=5s`, what watchers send) waits until the
index passes N or the wait ends, as Consul's does. An instance critical for longer than
its `DeregisterCriticalServiceAfter` is deregistered. One difference, for the tests' sake:
a query without `index` also runs the checks at once, so a test sees a health change
without waiting out an interval. An instance whose check does not answer SERVING is
`critical` and left out of `passing`."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

NODE_NAME = "fake-consul-agent"
NODE_ADDRESS = "127.0.0.1"
CHECK_TIMEOUT_S = 1.0


@dataclass
class RegisteredService:
    service_id: str
    name: str
    address: str
    port: int
    grpc_target: str | None
    interval_s: float = 10.0
    deregister_after_s: float | None = None
    passing: bool = True
    critical_since: float | None = None
    checked_at: float = 0.0


def duration_s(text: str | None) -> float | None:
    """Consul's duration strings: `500ms`, `10s`, `1m`, `1h`."""
    if not text:
        return None
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * factor
    raise ValueError(f"not a Consul duration: {text!r}")


def grpc_check_passes(target: str) -> bool:
    """Consul's gRPC check: `host:port[/service]` answers SERVING to grpc.health.v1 Check."""
    address, _, service = target.partition("/")
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=CHECK_TIMEOUT_S
            )
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


class FakeConsul:
    """The agent: `start()` serves on 127.0.0.1 with a free port, `stop()` shuts it down."""

    def __init__(self) -> None:
        self.services: dict[str, RegisteredService] = {}
        self._index = 1
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._checker: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "not started"
        return int(self._httpd.server_address[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        agent = self

        class Handler(_AgentRequestHandler):
            consul = agent

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._checker = threading.Thread(target=self._check_forever, daemon=True)
        self._checker.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        if self._checker is not None:
            self._checker.join()

    def _check_forever(self) -> None:
        """Each check on its own interval; a status change moves the index."""
        while not self._stopping.wait(0.05):
            now = time.monotonic()
            with self._lock:
                due = [s for s in self.services.values() if now - s.checked_at >= s.interval_s]
            for service in due:
                self._run_check(service)
            self._deregister_long_critical()

    def _run_check(self, service: RegisteredService) -> None:
        passing = service.grpc_target is None or grpc_check_passes(service.grpc_target)
        now = time.monotonic()
        with self._lock:
            service.checked_at = now
            if passing != service.passing:
                service.passing = passing
                service.critical_since = None if passing else now
                self._bump()

    def _deregister_long_critical(self) -> None:
        now = time.monotonic()
        with self._lock:
            for service in list(self.services.values()):
                after = service.deregister_after_s
                since = service.critical_since
                if after is not None and since is not None and now - since > after:
                    del self.services[service.service_id]
                    self._bump()

    def _bump(self) -> None:
        """The index moves on every change; blocked queries wake (lock held)."""
        self._index += 1
        self._changed.notify_all()

    def register(self, payload: dict[str, Any]) -> None:
        checks = payload.get("checks") or []
        grpc_checks = [check for check in checks if "grpc" in check]
        check = grpc_checks[0] if grpc_checks else {}
        service = RegisteredService(
            service_id=payload.get("id") or payload["name"],
            name=payload["name"],
            address=payload.get("address", ""),
            port=int(payload.get("port", 0)),
            grpc_target=check.get("grpc"),
            interval_s=duration_s(check.get("interval")) or 10.0,
            deregister_after_s=duration_s(check.get("DeregisterCriticalServiceAfter")),
        )
        # The first check runs at registration, as an agent's does.
        service.passing = service.grpc_target is None or grpc_check_passes(service.grpc_target)
        service.checked_at = time.monotonic()
        service.critical_since = None if service.passing else service.checked_at
        with self._lock:
            self.services[service.service_id] = service
            self._bump()

    def deregister(self, service_id: str) -> bool:
        with self._lock:
            if self.services.pop(service_id, None) is None:
                return False
            self._bump()
            return True

    def health(
        self,
        name: str,
        passing_only: bool,
        index: int | None = None,
        wait_s: float = 300.0,
    ) -> tuple[int, list[dict[str, Any]]]:
        """The instances of `name`; with `index`, first wait for the index to pass it."""
        if index is None:
            with self._lock:
                instances = [s for s in self.services.values() if s.name == name]
            for service in instances:
                self._run_check(service)
        with self._lock:
            if index is not None:
                self._changed.wait_for(lambda: self._index > index, timeout=wait_s)
            entries = [
                _health_entry(s, "passing" if s.passing else "critical")
                for s in self.services.values()
                if s.name == name and (s.passing or not passing_only)
            ]
            return self._index, entries


def _health_entry(service: RegisteredService, status: str) -> dict[str, Any]:
    """One element of Consul's /v1/health/service answer."""
    checks = [
        {
            "Node": NODE_NAME,
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": "passing",
            "ServiceID": "",
            "ServiceName": "",
            "Type": "",
        }
    ]
    if service.grpc_target is not None:
        checks.append(
            {
                "Node": NODE_NAME,
                "CheckID": f"service:{service.service_id}",
                "Name": f"Service '{service.name}' check",
                "Status": status,
                "ServiceID": service.service_id,
                "ServiceName": service.name,
                "Type": "grpc",
            }
        )
    return {
        "Node": {"ID": "", "Node": NODE_NAME, "Address": NODE_ADDRESS, "Datacenter": "dc1"},
        "Service": {
            "ID": service.service_id,
            "Service": service.name,
            "Tags": [],
            "Address": service.address,
            "Port": service.port,
        },
        "Checks": checks,
    }


class _AgentRequestHandler(BaseHTTPRequestHandler):
    consul: FakeConsul

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is for the tests."""

    def _answer(self, status: HTTPStatus, body: Any, index: int | None = None) -> None:
        encoded = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        if index is not None:
            self.send_header("X-Consul-Index", str(index))
        self.end_headers()
        self.wfile.write(encoded)

    def _not_found(self) -> None:
        self._answer(HTTPStatus.NOT_FOUND, f"no such endpoint: {self.command} {self.path}")

    def do_PUT(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path == "/v1/agent/service/register":
            self.consul.register(json.loads(body))
            self._answer(HTTPStatus.OK, None)
        elif path.startswith("/v1/agent/service/deregister/"):
            service_id = unquote(path.removeprefix("/v1/agent/service/deregister/"))
            if self.consul.deregister(service_id):
                self._answer(HTTPStatus.OK, None)
            else:
                self._answer(HTTPStatus.NOT_FOUND, f'Unknown service ID "{service_id}"')
        else:
            self._not_found()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if not parts.path.startswith("/v1/health/service/"):
            self._not_found()
            return
        name = unquote(parts.path.removeprefix("/v1/health/service/"))
        query = parse_qs(parts.query, keep_blank_values=True)
        passing_only = "passing" in query and query["passing"] != ["0"]
        index = int(query["index"][0]) if "index" in query else None
        wait_s = duration_s(query.get("wait", [None])[0]) or 300.0
        answer_index, entries = self.consul.health(name, passing_only, index, wait_s)
        self._answer(HTTPStatus.OK, entries, answer_index)
