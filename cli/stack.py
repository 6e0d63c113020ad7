"""The local stack: every built service as a process on loopback, under `TFMESH_HOME`.

`python -m cli.stack up` starts each service (skipping ones already healthy), waits
for its gRPC health to be SERVING and prints the endpoints; with `--monitoring` it then
starts a Prometheus scraping every service's /metrics port (cli.prometheus). With `--tls`
the whole stack runs on mutual TLS: a local CA and a certificate per service (and one for
the CLI) under `$TFMESH_HOME/tls` (cli.pki), every server demanding client certificates
from that CA, every client (services, gateway, CLI, these probes) verifying with it. With
`--auth` every call needs a principal's token (shared.auth): the stack keeps a tokens file
under `$TFMESH_HOME/auth` (made once, with an admin and the services' own principals;
add principals to it by hand), prints the admin token, and the CLI uses it.
`down` stops them all with SIGTERM (SIGKILL after a grace period); `status` reports health
and where the metrics are. Pid files live in `$TFMESH_HOME/run`, logs in
`$TFMESH_HOME/logs`."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli.databases import DATABASES, upgrade_all
from cli.pki import local_pki
from cli.prometheus import LocalPrometheus, ScrapeTarget
from cli.scaled import (
    WORKER,
    embedded_services,
    scaled_services,
    start_backing_services,
    stop_backing_services,
)
from cli.service_spec import ServiceSpec
from shared.auth import token_sha256
from shared.channels import bearer
from shared.settings import default_home
from shared.tls import TlsFiles, tls_from_environment

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS = "prometheus"
# Present in the run folder while the stack runs on TLS; the CLI then uses its identity.
TLS_MARKER = "tls"
AUTH_MARKER = "auth"
# Present while the stack runs in its scaled shape (cli.scaled).
SCALED_MARKER = "scaled"
# The principals `up --auth` makes: people's admin, and each service that calls others.
STACK_PRINCIPALS = {
    "admin": ["admin"],
    "training": ["trainer", "deployer"],
    "inference": ["viewer"],
    "data": ["viewer"],
    # The rollout controller reads the inference service's per-version figures.
    "registry": ["viewer"],
}


# Start order: dependencies first.
SERVICES = [
    ServiceSpec("registry", "services.registry.server", "TFMESH_REGISTRY_", 50053, 9103),
    ServiceSpec("data", "services.data.server", "TFMESH_DATA_", 50051, 9101),
    ServiceSpec("training", "services.training.server", "TFMESH_TRAINING_", 50052, 9102),
    ServiceSpec(
        "inference",
        "services.inference.server",
        "TFMESH_INFERENCE_",
        50054,
        9104,
        http_port=50055,
    ),
    ServiceSpec("gateway", "gateway.server", "TFMESH_GATEWAY_", 8080, 9105, http=True),
]


def built_services(scaled: bool = False) -> list[ServiceSpec]:
    """The services whose code exists, each on `<PREFIX>PORT` when that is set, and the
    training worker (on `TFMESH_TRAINING_WORKER_PORT`); in the scaled shape with their
    replicas and two workers (cli.scaled)."""
    services = [_ports_from_environment(s) for s in SERVICES if s.is_built()]
    worker = _ports_from_environment(WORKER)
    if scaled:
        return scaled_services(services, worker)
    return embedded_services(services, worker)


def _ports_from_environment(spec: ServiceSpec) -> ServiceSpec:
    prefix = spec.env_prefix
    return replace(
        spec,
        port=int(os.environ.get(f"{prefix}{spec.port_variable}", spec.port)),
        metrics_port=int(os.environ.get(f"{prefix}{spec.metrics_variable}", spec.metrics_port)),
        http_port=spec.http_port and int(os.environ.get(f"{prefix}HTTP_PORT", spec.http_port)),
    )


def peer_environment(services: list[ServiceSpec]) -> dict[str, str]:
    """Each service learns its peers' addresses (`TFMESH_<SVC>_REGISTRY_ADDR`, ...), every
    replica's, comma-separated, and REST ones (`TFMESH_GATEWAY_INFERENCE_HTTP_ADDR`)."""
    groups: dict[str, list[ServiceSpec]] = {}
    for spec in services:
        if spec.port_variable == "PORT":
            groups.setdefault(spec.service, []).append(spec)
    env = {}
    for spec in services:
        for peer, replicas in groups.items():
            if peer == spec.service:
                continue
            env[f"{spec.env_prefix}{peer.upper()}_ADDR"] = ",".join(r.address for r in replicas)
            if replicas[0].http_port is not None:
                address = f"127.0.0.1:{replicas[0].http_port}"
                env[f"{spec.env_prefix}{peer.upper()}_HTTP_ADDR"] = address
    return env


def stack_tls(home: Path) -> TlsFiles:
    """The TLS a client of the local stack uses: the process-wide `TFMESH_TLS_*` files when
    set, else the CLI's identity when the stack runs on TLS (`up --tls`), else none."""
    configured = tls_from_environment()
    if configured.calls_tls or not (home / "run" / TLS_MARKER).exists():
        return configured
    directory = home / "tls"
    return TlsFiles(directory / "ca.pem", directory / "cli.pem", directory / "cli-key.pem")


def stack_authorization(home: Path) -> Callable[[], str] | None:
    """What a client of the local stack sends as `authorization`: `TFMESH_TOKEN` when set,
    else the admin token while the stack runs with `--auth`, else nothing."""
    token = os.environ.get("TFMESH_TOKEN", "")
    admin = home / "auth" / "admin.token"
    if not token and (home / "run" / AUTH_MARKER).exists() and admin.exists():
        token = admin.read_text().strip()
    return bearer(token)


def health(spec: ServiceSpec, tls: TlsFiles | None = None, timeout_s: float = 1.0) -> str:
    tls = tls or TlsFiles()
    if spec.http:
        url = f"{tls.scheme()}://{spec.address}/healthz"
        try:
            with urllib.request.urlopen(
                url, timeout=timeout_s, context=tls.client_context()
            ) as answer:
                # Another HTTP server on the port (a metrics port, say) is not the gateway.
                return "SERVING" if json.load(answer) == {"status": "ok"} else "DOWN"
        except (OSError, ValueError):
            return "DOWN"
    credentials = tls.channel_credentials()
    try:
        with (
            grpc.secure_channel(spec.address, credentials)
            if credentials
            else grpc.insecure_channel(spec.address)
        ) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError:
        return "DOWN"


class LocalStack:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.run_dir = home / "run"
        self.log_dir = home / "logs"

    def _pid_file(self, spec: ServiceSpec) -> Path:
        return self._pid_file_named(spec.name)

    def _pid_file_named(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def up(
        self,
        timeout_s: float = 120.0,
        monitoring: bool = False,
        tls: bool = False,
        auth: bool = False,
        scaled: bool = False,
    ) -> list[ServiceSpec]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        scaled = scaled or self.is_scaled()
        services = built_services(scaled)
        env = {**os.environ, "TFMESH_HOME": str(self.home), "TF_CPP_MIN_LOG_LEVEL": "2"}
        if scaled:
            (self.run_dir / SCALED_MARKER).touch()
            env.update(start_backing_services(self.home))
        env.update(peer_environment(services))
        if tls:
            env.update(self._tls_environment(services))
        if auth:
            env.update(self._auth_environment())
        probe = stack_tls(self.home)
        self._upgrade_databases([s for s in services if health(s, probe) != "SERVING"], env)
        for spec in services:
            if health(spec, probe) == "SERVING":
                print(f"{spec.name:<10} already serving on {spec.address}")
                continue
            with (self.log_dir / f"{spec.name}.log").open("ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", spec.module],
                    env={**env, **spec.process_environment()},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._pid_file(spec).write_text(str(process.pid))
            self._wait_serving(spec, process, probe, timeout_s)
            print(f"{spec.name:<10} serving on {spec.address}  (pid {process.pid})")
        print_console(services, tls)
        if monitoring:
            self._start_prometheus(services, timeout_s)
        return services

    def is_scaled(self) -> bool:
        return (self.run_dir / SCALED_MARKER).exists()

    def _upgrade_databases(self, starting: list[ServiceSpec], env: dict[str, str]) -> None:
        """The local stack upgrades its own databases (cli.db) before their services start."""
        names = sorted({spec.service for spec in starting if spec.service in DATABASES})
        urls = {name: env.get(f"TFMESH_{name.upper()}_DATABASE_URL", "") for name in names}
        for row in upgrade_all(names, self.home, urls):
            if row["from"] not in ("empty", row["to"]):
                print(f"{row['service']:<10} database upgraded from {row['from']} to {row['to']}")

    def _start_prometheus(self, services: list[ServiceSpec], timeout_s: float) -> None:
        prometheus = LocalPrometheus(self.home)
        if prometheus.ready():
            print(f"{'prometheus':<10} already serving on {prometheus.url}")
            return
        prometheus.write_config(
            [ScrapeTarget(s.name, f"127.0.0.1:{s.metrics_port}") for s in services]
        )
        log = self.log_dir / "prometheus.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                prometheus.command(),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pid_file_named(PROMETHEUS).write_text(str(process.pid))
        prometheus.wait_ready(process, log, timeout_s)
        print(f"{PROMETHEUS:<10} serving on {prometheus.url}  (pid {process.pid})")

    def ensure_tokens(self) -> Path:
        """The stack's tokens file, made on first use: an admin principal for people (its
        token in `auth/admin.token`) and one per calling service (`auth/<service>.token`)."""
        directory = self.home / "auth"
        tokens = directory / "tokens.json"
        if tokens.exists() and all((directory / f"{n}.token").exists() for n in STACK_PRINCIPALS):
            return tokens
        directory.mkdir(parents=True, exist_ok=True)
        principals = []
        for name, roles in STACK_PRINCIPALS.items():
            secret = secrets.token_urlsafe(32)
            path = directory / f"{name}.token"
            path.write_text(secret)
            path.chmod(0o600)
            principals.append({"name": name, "roles": roles, "token_sha256": token_sha256(secret)})
        tokens.write_text(json.dumps({"principals": principals}, indent=2))
        return tokens

    def _auth_environment(self) -> dict[str, str]:
        tokens = self.ensure_tokens()
        env = {"TFMESH_AUTH_TOKENS_FILE": str(tokens)}
        for name in STACK_PRINCIPALS:
            if name != "admin":
                env[f"TFMESH_{name.upper()}_AUTH_TOKEN"] = (
                    (tokens.parent / f"{name}.token").read_text().strip()
                )
        (self.run_dir / AUTH_MARKER).write_text(str(tokens))
        admin = (tokens.parent / "admin.token").read_text().strip()
        print(f"{'auth':<10} admin token {admin}  (in {tokens.parent / 'admin.token'})")
        return env

    def _tls_environment(self, services: list[ServiceSpec]) -> dict[str, str]:
        """Mutual TLS for every service: one CA, a certificate each; the CLI's too."""
        pki = local_pki(self.home / "tls", [s.name for s in services] + ["cli"])
        env = {
            "TFMESH_TLS_CA_FILE": str(pki.ca_cert),
            "TFMESH_TLS_CLIENT_CA_FILE": str(pki.ca_cert),
        }
        for spec in services:
            # Processes that share a prefix (a service, its replicas and workers) share
            # its first process's certificate.
            identity = pki.identities[spec.name]
            env.setdefault(f"{spec.env_prefix}TLS_CERT_FILE", str(identity.cert))
            env.setdefault(f"{spec.env_prefix}TLS_KEY_FILE", str(identity.key))
        (self.run_dir / TLS_MARKER).write_text(str(pki.ca_cert))
        print(f"{'tls':<10} mutual TLS, CA {pki.ca_cert}")
        return env

    def _wait_serving(
        self, spec: ServiceSpec, process: subprocess.Popen, tls: TlsFiles, timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = self.log_dir / f"{spec.name}.log"
                raise SystemExit(f"{spec.name} exited with {process.returncode}; see {log}")
            if health(spec, tls) == "SERVING":
                return
            time.sleep(0.2)
        raise SystemExit(f"{spec.name} was not SERVING on {spec.address} within {timeout_s} s")

    def down(self, grace_s: float = 20.0) -> None:
        scaled = self.is_scaled()
        for name in [PROMETHEUS, *(spec.name for spec in reversed(built_services(scaled)))]:
            pid_file = self._pid_file_named(name)
            if not pid_file.exists():
                continue
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pid_file.unlink()
                continue
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            pid_file.unlink()
            print(f"{name:<10} stopped")
        (self.run_dir / TLS_MARKER).unlink(missing_ok=True)
        (self.run_dir / AUTH_MARKER).unlink(missing_ok=True)
        if scaled:
            stop_backing_services(self.home)
            (self.run_dir / SCALED_MARKER).unlink()

    def status(self) -> None:
        tls = stack_tls(self.home)
        for spec in built_services(self.is_scaled()):
            metrics = f"http://127.0.0.1:{spec.metrics_port}/metrics"
            print(f"{spec.name:<10} {spec.address:<18} {health(spec, tls):<12} {metrics}")
        prometheus = LocalPrometheus(self.home)
        state = "SERVING" if prometheus.ready() else "DOWN"
        print(f"{PROMETHEUS:<10} {prometheus.url:<18} {state}")
        print_console(built_services(self.is_scaled()), tls.calls_tls)


def print_console(services: list[ServiceSpec], tls: bool) -> None:
    """Where the web console of the stack's gateway is (gateway.console)."""
    gateway = next((s for s in services if s.name == "gateway"), None)
    if gateway is not None:
        print(f"{'console':<10} {'https' if tls else 'http'}://{gateway.address}/ui/")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child of ours that exited stays a zombie until reaped; reap it if it is ours.
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cli.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--monitoring", action="store_true", help="up: also start Prometheus scraping the stack"
    )
    parser.add_argument("--tls", action="store_true", help="up: run the stack on mutual TLS")
    parser.add_argument("--auth", action="store_true", help="up: every call needs a token")
    parser.add_argument(
        "--scaled",
        action="store_true",
        help="up: PostgreSQL, SeaweedFS, two replicas of data, registry and training, two workers",
    )
    args = parser.parse_args(argv)
    stack = LocalStack(default_home())
    if args.command == "up":
        stack.up(monitoring=args.monitoring, tls=args.tls, auth=args.auth, scaled=args.scaled)
    elif args.command == "down":
        stack.down()
    else:
        stack.status()


if __name__ == "__main__":
    main()
