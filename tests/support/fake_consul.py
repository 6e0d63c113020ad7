"""A stand-in for a Consul agent's HTTP API, for testing `shared.discovery.ConsulDiscovery`.

No Consul agent can be installed on these machines, so this stands in for the agent's HTTP
API; py-consul and our code are real, and talk to it over HTTP on 127.0.0.1. It serves the
three endpoints ConsulDiscovery uses: `PUT /v1/agent/service/register`,
`PUT /v1/agent/service/deregister/<id>` and `GET /v1/health/service/<name>` (with
`?passing=1`), answering in Consul's JSON shape with an `X-Consul-Index` header.

Health is real, not assumed: each registered gRPC check is run (a `grpc.health.v1` Check
call against the registered `grpc` address, `host:port` or `host:port/service`) whenever
the health endpoint is asked, where a real agent would run it every `interval`. An
instance whose check does not answer SERVING is `critical` and left out of `passing`."""

from __future__ import annotations

import json
import threading
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
        self.health_queries = 0
        self._index = 1
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

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

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def register(self, payload: dict[str, Any]) -> None:
        checks = payload.get("checks") or []
        grpc_targets = [check["grpc"] for check in checks if "grpc" in check]
        service = RegisteredService(
            service_id=payload.get("id") or payload["name"],
            name=payload["name"],
            address=payload.get("address", ""),
            port=int(payload.get("port", 0)),
            grpc_target=grpc_targets[0] if grpc_targets else None,
        )
        with self._lock:
            self.services[service.service_id] = service
            self._index += 1

    def deregister(self, service_id: str) -> bool:
        with self._lock:
            if self.services.pop(service_id, None) is None:
                return False
            self._index += 1
            return True

    def health(self, name: str, passing_only: bool) -> tuple[int, list[dict[str, Any]]]:
        with self._lock:
            self.health_queries += 1
            index = self._index
            instances = [s for s in self.services.values() if s.name == name]
        entries = []
        for service in instances:
            passing = service.grpc_target is None or grpc_check_passes(service.grpc_target)
            if passing_only and not passing:
                continue
            entries.append(_health_entry(service, "passing" if passing else "critical"))
        return index, entries


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
        index, entries = self.consul.health(name, passing_only)
        self._answer(HTTPStatus.OK, entries, index)
