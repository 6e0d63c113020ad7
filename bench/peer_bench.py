"""tfmesh against peer model servers, each at its best, on the same model and requests.

The model is the benchmark's CNN (about 2.5 M parameters on 32x32x3 images) as one
SavedModel; every request is the same KServe v2 JSON body of one image, sent by Debian's
`wrk` with N connections (closed loop). Each server is swept over its own knobs, and every
measured window follows a warm-up window on the same server:

- tfmesh (the inference service with a front end per core, REST straight to the front
  ends and through the gateway): its batcher's wait for expected callers, 0, 2 and 5 ms,
  at the largest batch 64;
- MLServer 1.7.1 (`make peer`, a SavedModel runtime in `bench/peer/`): the model in its
  REST process (on the event loop, or on a thread) or in one worker process
  (`parallel_workers` 0, 1), unbatched or with its adaptive batcher at largest batch 16 or
  64 and a window of 2, 5 or 10 ms;
- Triton Inference Server (`make pytriton`: the C++ server inside nvidia-pytriton 0.7.0,
  the SavedModel bound as a Python callable, `bench/peer/pytriton_server.py`): unbatched,
  or its dynamic batcher at largest batch 64 with a queue delay of 0, 2 or 5 ms (16 with
  2 ms), one instance of the callable or two (64, 2 ms).

The in-process ceiling of the same SavedModel (batch 1, and the best batch up to 64) is
measured in the same run, and every row is also given as a share of it (of batch 1's at
one connection, of the best batch's at more). The summary compares, at each load, each
path's best configuration with the peer's best, and names the configurations that won.
Results go to bench/results/peers.json.

    .venv/bin/python -m bench.peer_bench [--seconds 10] [--warm-up 3] [--clients 1,64]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import mlserver_peer, triton_peer, wrk
from bench.inference_bench import (
    ALLOWED_SIZES,
    BATCHING_PARAMETERS,
    MAX_BATCH_SIZE,
    ceilings,
    free_port,
    kserve_bodies,
    make_artifacts,
    start_gateway,
    start_server,
)
from bench.peer_process import PeerServer

RESULTS = Path(__file__).resolve().parent / "results" / "peers.json"
TFMESH_WAITS_US = (0, 2000, 5000)
PEER_BATCHES = (16, 64)
PEER_WINDOWS_MS = (2, 5, 10)
DIRECT, GATEWAY, PEER = "tfmesh REST, direct", "tfmesh REST, via gateway", "MLServer REST"
TRITON = "Triton REST"
PATHS = (DIRECT, GATEWAY, PEER, TRITON)


@dataclass
class Row:
    path: str
    config: str
    clients: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int
    share_of_ceiling: float = 0.0


def measure(
    url: str, clients: int, args: argparse.Namespace, work: Path, path: str, config: str
) -> Row:
    body, content_type, _ = kserve_bodies("cnn")["JSON"]
    wrk.post(url, body, content_type, clients, args.warm_up, work)
    found = wrk.post(url, body, content_type, clients, args.seconds, work)
    row = Row(
        path,
        config,
        clients,
        found.requests_per_s,
        found.p50_ms,
        found.p99_ms,
        found.requests,
        found.bad_status + found.socket_errors,
    )
    print(
        f"  {path:26} {config:36} N={clients:3d} {row.requests_per_s:8.1f} req/s"
        f"  p50 {row.p50_ms:7.2f}  p99 {row.p99_ms:8.2f} ms  failed {row.failed}",
        flush=True,
    )
    return row


def tfmesh_rows(
    args: argparse.Namespace, work: Path, saved_model: Path, frontends: int
) -> list[Row]:
    rows = []
    for wait_us in TFMESH_WAITS_US:
        batching = {**BATCHING_PARAMETERS, "batch_timeout_micros": wait_us}
        version = [{"version": 1, "path": str(saved_model)}]
        config = {
            "models": [
                {"name": "cnn", "runtime": "tensorflow", "versions": version, "batching": batching}
            ]
        }
        name = f"batch {MAX_BATCH_SIZE}, wait {wait_us / 1000:g} ms, {frontends} front ends"
        server = start_server(work, config, "tensorflow", frontends)
        gateway = start_gateway(work, server)
        try:
            for path, address in ((DIRECT, server.http_address), (GATEWAY, gateway.http_address)):
                url = f"http://{address}/v2/models/cnn/infer"
                rows += [measure(url, n, args, work, path, name) for n in args.clients]
        finally:
            gateway.stop()
            server.stop()
    return rows


def peer_configs() -> dict[str, dict]:
    """MLServer's knobs: where the model runs, its adaptive batcher, and (in the REST
    process, where it shares the event loop) whether the model runs on a thread."""
    configs: dict[str, dict] = {}
    placements = {
        "in its REST process": {"parallel_workers": 0},
        "in its REST process, model on a thread": {"parallel_workers": 0, "threaded": True},
        "in a worker process": {"parallel_workers": 1},
    }
    for where, placement in placements.items():
        configs[f"unbatched, {where}"] = placement
        for batch in PEER_BATCHES:
            for window in PEER_WINDOWS_MS:
                configs[f"batch {batch}, window {window} ms, {where}"] = {
                    **placement,
                    "max_batch_size": batch,
                    "max_batch_time_s": window / 1000,
                }
    return configs


def peer_rows(
    args: argparse.Namespace,
    work: Path,
    path: str,
    configs: dict[str, dict],
    start: Callable[..., PeerServer],
) -> list[Row]:
    """Every configuration of a peer, each started by `start(**options)`, at every load."""
    rows = []
    for name, options in configs.items():
        server = start(**options)
        try:
            url = f"http://{server.http_address}/v2/models/cnn/infer"
            rows += [measure(url, n, args, work, path, name) for n in args.clients]
        finally:
            server.stop()
    return rows


def triton_configs() -> dict[str, dict]:
    """Triton's knobs: its dynamic batcher (largest batch, queue delay) and how many
    instances of the model callable run."""
    configs: dict[str, dict] = {"unbatched": {}}
    for batch, delays_ms in ((16, (2,)), (64, (0, 2, 5))):
        for delay_ms in delays_ms:
            configs[f"batch {batch}, delay {delay_ms} ms"] = {
                "max_batch_size": batch,
                "queue_delay_us": delay_ms * 1000,
            }
    configs["batch 64, delay 2 ms, 2 instances"] = {
        "max_batch_size": 64,
        "queue_delay_us": 2000,
        "instances": 2,
    }
    return configs


def best(rows: list[Row], path: str, clients: int, unbatched: bool = False) -> Row | None:
    """The path's configuration with the most requests answered per second at `clients`
    (among those that failed none); with `unbatched`, among the peer's unbatched ones."""
    found = [
        r
        for r in rows
        if r.path == path
        and r.clients == clients
        and not r.failed
        and (not unbatched or r.config.startswith("unbatched"))
    ]
    return max(found, key=lambda r: r.requests_per_s, default=None)


def summary(rows: list[Row], clients: list[int]) -> dict:
    result: dict = {}
    most = max(clients)
    for n in clients:
        winners = {path: best(rows, path, n) for path in PATHS}
        result[f"N={n}"] = {path: asdict(row) if row else None for path, row in winners.items()}
    gateway, direct, peer = (best(rows, p, most) for p in (GATEWAY, DIRECT, PEER))
    if gateway and direct and peer:
        result[f"gateway / MLServer at N={most}"] = round(
            gateway.requests_per_s / peer.requests_per_s, 2
        )
        result[f"direct / MLServer at N={most}"] = round(
            direct.requests_per_s / peer.requests_per_s, 2
        )
    triton = best(rows, TRITON, most)
    if gateway and direct and triton:
        result[f"gateway / Triton at N={most}"] = round(
            gateway.requests_per_s / triton.requests_per_s, 2
        )
        result[f"direct / Triton at N={most}"] = round(
            direct.requests_per_s / triton.requests_per_s, 2
        )
    if 1 in clients:
        one_gateway = min(
            (r for r in rows if r.path == GATEWAY and r.clients == 1 and not r.failed),
            key=lambda r: r.p50_ms,
            default=None,
        )
        one_peer = min(
            (
                r
                for r in rows
                if r.path == PEER
                and r.clients == 1
                and not r.failed
                and r.config.startswith("unbatched")
            ),
            key=lambda r: r.p50_ms,
            default=None,
        )
        if one_gateway and one_peer:
            result["gateway p50 - MLServer unbatched p50 at N=1 (ms)"] = round(
                one_gateway.p50_ms - one_peer.p50_ms, 2
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each measured window")
    parser.add_argument("--warm-up", type=float, default=3.0, help="the window before it")
    parser.add_argument("--clients", default="1,64")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.clients = [int(n) for n in args.clients.split(",")]
    if not (mlserver_peer.available() and triton_peer.available() and wrk.available()):
        raise SystemExit(
            "the peer bench needs `make peer` (MLServer), `make pytriton` (Triton) and wrk"
        )
    frontends = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="peer-bench-") as scratch:
        work = Path(scratch)
        saved_model = make_artifacts(work / "models", ["cnn"], saved_model=True)["cnn"][
            "saved_model"
        ]
        print("in-process ceiling", flush=True)
        ceiling_rows, _ = ceilings("tensorflow", saved_model, "cnn", args.clients, args.seconds)
        ceiling = {row.clients: row.throughput for row in ceiling_rows}
        print("tfmesh", flush=True)
        rows = tfmesh_rows(args, work, saved_model, frontends)
        print("peer: MLServer", flush=True)
        start = functools.partial(mlserver_peer.start, work, "cnn", saved_model, free_port)
        rows += peer_rows(args, work, PEER, peer_configs(), start)
        print("peer: Triton", flush=True)
        start = functools.partial(triton_peer.start, work, "cnn", saved_model, free_port)
        rows += peer_rows(args, work, TRITON, triton_configs(), start)
    for row in rows:
        row.share_of_ceiling = round(row.requests_per_s / ceiling[row.clients], 3)
    results = {
        "benchmark": "tfmesh, MLServer and Triton at their best, CNN SavedModel, KServe v2 JSON",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "seconds": args.seconds,
        "warm_up_seconds": args.warm_up,
        "in_process_ceiling": {
            f"N={row.clients}": {
                "batch": row.batch_size,
                "samples_per_s": round(row.throughput, 1),
                "p50_ms": round(row.p50_ms, 2),
            }
            for row in ceiling_rows
        },
        "allowed_batch_sizes": ALLOWED_SIZES,
        "summary": summary(rows, args.clients),
        "rows": [asdict(row) for row in rows],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
