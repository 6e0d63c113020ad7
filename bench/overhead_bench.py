"""What one request costs each server's own CPU, with a model that does nothing.

The model returns its input (64 float32 features, one row a request): tfmesh's `noop`
runtime, and an MLServer runtime that hands its input back without decoding it
(`bench/peer/noop_runtime.py`, `make peer`). The load is closed-loop at 1 and 64 clients:
KServe v2 gRPC (ModelInfer, a raw tensor) from the inference bench's own grpc.aio client,
and KServe v2 JSON over HTTP from wrk (a C load generator). Each server is swept over its own knobs:

- tfmesh: one process (`frontends` 0), or 1 or 2 front-end processes before the model's
  owner; REST straight to the server and, for the last, through the gateway too; and gRPC
  with Envoy holding the port (`TFMESH_INFERENCE_GRPC_FRONT=envoy`: Envoy's C++ ends
  HTTP/2 and bridges each unary call to the process over HTTP/1.1; Envoy's CPU counted);
- MLServer 1.7.1: the model in its REST/gRPC process or in one worker process
  (`parallel_workers` 0, 1), unbatched or with its adaptive batcher (64, 2 ms);
- Triton Inference Server (nvidia-pytriton's C++ server, `make pytriton`; the no-op bound
  as a Python callable): unbatched, or its dynamic batcher (64, no delay). Its HTTP and
  gRPC front ends are C++: the anchor for what a request can cost;
- the grpcio floor (`bench/grpc_floor.py`): grpcio answering ModelInfer with a reply
  built once, no parsing, no model, as a grpc.aio server or a synchronous one on 4 or 16
  threads: the least a server on grpcio's Python API spends, gRPC only.

The CPU time is the servers' own (user + system of every process in each server's
process tree, from /proc), sampled while the load runs and away from its first and last
moments; the load generator's is not counted. From it: busy cores, CPU microseconds per
request, and requests per second per busy core. On a GPU the model stops being the
bottleneck and this figure decides how many cores feed it. Results go to
bench/results/overhead.json.

    .venv/bin/python -m bench.overhead_bench [--seconds 10] [--clients 1,64] [--only tfmesh]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench import grpc_floor, mlserver_peer, triton_peer, wrk
from bench.inference_bench import (
    free_port,
    noop_entry,
    python_load,
    start_gateway,
    start_server,
)
from bench.peer_process import PeerServer

RESULTS = Path(__file__).resolve().parent / "results" / "overhead.json"
MODEL = "noop"
FEATURES = 64
GRPC, REST, GATEWAY = "gRPC", "REST", "REST via gateway"
TFMESH, MLSERVER, TRITON = "tfmesh", "MLServer", "Triton"
# grpcio answering with a canned reply: the least a server on grpcio's Python API spends.
FLOOR = "grpcio floor"
TFMESH_FRONTENDS = (0, 1, 2)
ENVOY_FRONT = "one process, gRPC behind Envoy"
TFMESH_BATCHING = {"max_batch_size": 64, "batch_timeout_micros": 0, "max_enqueued_batches": 64}
# Samples at the start and end of a load window are left out of its CPU figure: the load
# generator is connecting, or its last requests are draining.
EDGE_S = 1.0
SAMPLE_S = 0.2


@dataclass
class Row:
    server: str
    path: str
    config: str
    clients: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    busy_cores: float
    cpu_us_per_request: float
    requests_per_busy_core: float


def process_tree(roots: list[int]) -> list[int]:
    """`roots` and every process descended from them, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found = set(roots)
    grown = True
    while grown:
        grown = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grown = True
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds spent so far by `pids` (those still alive)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def cpu_sampler(roots: list[int]) -> Iterator[Callable[..., float]]:
    """Sample the process trees of `roots` while the block runs; gives a function that,
    after the block, answers the busy cores between `start` and `end` (monotonic times;
    by default the sampled span) less EDGE_S at each end."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    pids = process_tree(roots)

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), cpu_seconds(pids)))
            stop.wait(SAMPLE_S)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()

    def busy_cores(start: float | None = None, end: float | None = None) -> float:
        start = (samples[0][0] if start is None else start) + EDGE_S
        end = (samples[-1][0] if end is None else end) - EDGE_S
        inside = [s for s in samples if start <= s[0] <= end] or samples
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    try:
        yield busy_cores
    finally:
        stop.set()
        thread.join()


def body() -> bytes:
    row = np.random.default_rng(1).random((1, FEATURES), dtype=np.float32)
    tensor = {"name": "x", "shape": [1, FEATURES], "datatype": "FP32", "data": row.tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def row_of(
    server: str,
    path: str,
    config: str,
    clients: int,
    rps: float,
    p50: float,
    p99: float,
    busy: float,
) -> Row:
    row = Row(
        server,
        path,
        config,
        clients,
        round(rps, 1),
        round(p50, 3),
        round(p99, 3),
        round(busy, 3),
        round(busy / rps * 1e6, 1) if rps else 0.0,
        round(rps / busy, 1) if busy else 0.0,
    )
    print(
        f"  {server:8} {path:17} {config:42} N={clients:3d} {row.requests_per_s:8.1f} req/s"
        f"  p50 {row.p50_ms:6.2f} ms  {row.busy_cores:4.2f} cores"
        f"  {row.cpu_us_per_request:7.1f} us/req",
        flush=True,
    )
    return row


def over_grpc(
    server: str,
    config: str,
    address: str,
    roots: list[int],
    clients: int,
    args: argparse.Namespace,
) -> Row:
    """The bench's own gRPC client (grpc.aio, KServe v2 ModelInfer with a raw tensor, in
    up to two processes), which runs against both servers: perf_analyzer would ask
    MLServer for Triton's ModelConfig, which it does not serve."""
    started = time.monotonic()
    with cpu_sampler(roots) as busy_cores:
        found = python_load(
            address, MODEL, "mlp", clients, min(2, clients), args.warm_up, args.seconds
        )
    window = (started + args.warm_up, started + args.warm_up + args.seconds)
    return row_of(
        server,
        GRPC,
        config,
        clients,
        found.throughput,
        found.p50_ms,
        found.p99_ms,
        busy_cores(*window),
    )


def over_rest(
    server: str,
    path: str,
    config: str,
    url: str,
    roots: list[int],
    clients: int,
    args: argparse.Namespace,
    work: Path,
) -> Row:
    """wrk: a warm-up window, then the measured one."""
    wrk.post(url, body(), "application/json", clients, args.warm_up, work)
    with cpu_sampler(roots) as busy_cores:
        found = wrk.post(url, body(), "application/json", clients, args.seconds, work)
    if found.bad_status or found.socket_errors:
        raise RuntimeError(f"{server} {path} {config}: {found}")
    return row_of(
        server,
        path,
        config,
        clients,
        found.requests_per_s,
        found.p50_ms,
        found.p99_ms,
        busy_cores(),
    )


def both_protocols(
    server: str,
    config: str,
    grpc_address: str,
    http_address: str,
    roots: list[int],
    args: argparse.Namespace,
    work: Path,
) -> list[Row]:
    """gRPC, then REST, at every load, against one running server."""
    rows = [over_grpc(server, config, grpc_address, roots, n, args) for n in args.clients]
    url = f"http://{http_address}/v2/models/{MODEL}/infer"
    return rows + [over_rest(server, REST, config, url, roots, n, args, work) for n in args.clients]


def tfmesh_rows(args: argparse.Namespace, work: Path) -> list[Row]:
    rows = []
    config = {"models": [noop_entry(MODEL, "mlp", TFMESH_BATCHING)]}
    for frontends in TFMESH_FRONTENDS:
        name = f"{frontends} front ends" if frontends else "one process"
        server = start_server(work, config, "noop", frontends)
        try:
            roots = [server.process.pid]
            rows += both_protocols(
                TFMESH, name, server.address, server.http_address, roots, args, work
            )
            if frontends == TFMESH_FRONTENDS[-1]:
                gateway = start_gateway(work, server)
                try:
                    url = f"http://{gateway.http_address}/v2/models/{MODEL}/infer"
                    both = [server.process.pid, gateway.process.pid]
                    rows += [
                        over_rest(TFMESH, GATEWAY, name, url, both, n, args, work)
                        for n in args.clients
                    ]
                finally:
                    gateway.stop()
        finally:
            server.stop()
    # gRPC through Envoy's bridge (services.inference.bridge): Envoy is the server's child,
    # so its CPU is counted with the server's.
    server = start_server(work, config, "noop", 0, grpc_front="envoy")
    try:
        roots = [server.process.pid]
        rows += [
            over_grpc(TFMESH, ENVOY_FRONT, server.address, roots, n, args) for n in args.clients
        ]
    finally:
        server.stop()
    return rows


def mlserver_configs() -> dict[str, dict]:
    configs = {}
    for where, workers in (("in its front process", 0), ("in a worker process", 1)):
        configs[f"unbatched, {where}"] = {"parallel_workers": workers}
        configs[f"batch 64, window 2 ms, {where}"] = {
            "parallel_workers": workers,
            "max_batch_size": 64,
            "max_batch_time_s": 0.002,
        }
    return configs


TRITON_CONFIGS = {"unbatched": {}, "batch 64, delay 0 ms": {"max_batch_size": 64}}


def peer_rows(
    server_name: str,
    configs: dict[str, dict],
    start: Callable[..., PeerServer],
    args: argparse.Namespace,
    work: Path,
) -> list[Row]:
    """Every configuration of a peer, each started by `start(**options)`."""
    rows = []
    for name, options in configs.items():
        server = start(**options)
        try:
            rows += both_protocols(
                server_name,
                name,
                server.grpc_address,
                server.http_address,
                [server.process.pid],
                args,
                work,
            )
        finally:
            server.stop()
    return rows


FLOOR_CONFIGS = {"grpc.aio": 0, "synchronous, 4 threads": 4, "synchronous, 16 threads": 16}


def floor_rows(args: argparse.Namespace, work: Path) -> list[Row]:
    """gRPC only: the floor has no HTTP side."""
    rows = []
    for name, threads in FLOOR_CONFIGS.items():
        server = grpc_floor.start(work, MODEL, FEATURES, free_port, threads)
        try:
            roots = [server.process.pid]
            rows += [
                over_grpc(FLOOR, name, server.grpc_address, roots, n, args) for n in args.clients
            ]
        finally:
            server.stop()
    return rows


def cheapest(rows: list[Row], server: str, path: str, clients: int) -> Row | None:
    found = [r for r in rows if r.server == server and r.path == path and r.clients == clients]
    return min(found, key=lambda r: r.cpu_us_per_request, default=None)


def summary(rows: list[Row], clients: list[int]) -> dict:
    """Per path and load, each server's cheapest configuration (CPU per request), the
    ratios tfmesh / peer (the gateway path against the peers' REST), and the grpcio
    floor against MLServer."""
    result: dict = {}
    for n in clients:
        for path in (GRPC, REST, GATEWAY):
            entry: dict = {}
            ours = cheapest(rows, TFMESH, path, n)
            for peer_name in (MLSERVER, TRITON):
                peer = cheapest(rows, peer_name, GRPC if path == GRPC else REST, n)
                entry[peer_name] = asdict(peer) if peer else None
                if ours and peer:
                    entry[f"cpu_per_request_tfmesh_over_{peer_name.lower()}"] = round(
                        ours.cpu_us_per_request / peer.cpu_us_per_request, 2
                    )
            floor = cheapest(rows, FLOOR, path, n)
            mlserver = cheapest(rows, MLSERVER, path, n)
            if floor:
                entry[FLOOR] = asdict(floor)
            if floor and mlserver:
                entry["cpu_per_request_floor_over_mlserver"] = round(
                    floor.cpu_us_per_request / mlserver.cpu_us_per_request, 2
                )
            if ours:
                entry["tfmesh"] = asdict(ours)
            if ours or floor:
                result[f"{path}, N={n}"] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each measured window")
    parser.add_argument("--warm-up", type=float, default=3.0, help="wrk's window before it")
    parser.add_argument("--clients", default="1,64")
    parser.add_argument("--only", choices=[TFMESH, MLSERVER, TRITON, FLOOR], help="one server")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.clients = [int(n) for n in args.clients.split(",")]
    wanted = [args.only] if args.only else [TFMESH, FLOOR, MLSERVER, TRITON]
    if wanted != [FLOOR] and not wrk.available():
        raise SystemExit("the overhead bench needs wrk (`make setup`)")
    if MLSERVER in wanted and not mlserver_peer.available():
        raise SystemExit("the overhead bench needs MLServer: `make peer`")
    if TRITON in wanted and not triton_peer.available():
        raise SystemExit("the overhead bench needs Triton: `make pytriton`")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="overhead-bench-") as scratch:
        work = Path(scratch)
        starts = {
            MLSERVER: functools.partial(
                mlserver_peer.start, work, MODEL, None, free_port, runtime=mlserver_peer.NOOP
            ),
            TRITON: functools.partial(
                triton_peer.start, work, MODEL, None, free_port, noop_features=FEATURES
            ),
        }
        configs = {MLSERVER: mlserver_configs(), TRITON: TRITON_CONFIGS}
        for server in wanted:
            print(server, flush=True)
            if server == TFMESH:
                rows += tfmesh_rows(args, work)
            elif server == FLOOR:
                rows += floor_rows(args, work)
            else:
                rows += peer_rows(server, configs[server], starts[server], args, work)
    results = {
        "benchmark": "CPU per request of a no-op model: tfmesh, MLServer, Triton, grpcio floor",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "seconds": args.seconds,
        "summary": summary(rows, args.clients),
        "rows": [asdict(row) for row in rows],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    ratios = {
        key: {k: v for k, v in entry.items() if k.startswith("cpu_per_request")}
        for key, entry in results["summary"].items()
    }
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
