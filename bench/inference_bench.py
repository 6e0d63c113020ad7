"""Throughput and latency of the inference service under closed-loop gRPC load (issue 5).

Two models, because batching pays differently: the digits MLP (64 features, where per-call
framework and RPC overhead dominate) and a CNN of about 2.5 M parameters on 32x32x3 inputs
(the `cnn` template's layers: conv/pool blocks of 64, 128, 256 filters, dense 512; where
compute dominates). For each model and each N concurrent clients sending one-row requests
it measures four configurations:

- `in-process ceiling`: the runtime called directly at the best batch size up to
  min(N, max_batch_size), no RPC (the compute ceiling);
- `served, batching`: the server with dynamic batching (max_batch_size 64, timeout 0);
- `served, batching off`: the same model with max_batch_size 1 on several threads;
- `served no-op`: a noop-runtime model with the same input shape (the RPC ceiling).

The server runs as its own process and the load generator in one or more others (so
neither steals the other's GIL); results go to `bench/results/inference_<runtime>.json`
with a PNG plot of throughput and p99 against N beside it.

    python bench/inference_bench.py run                       # CPU, TensorFlow runtime
    python bench/inference_bench.py artifacts --out DIR       # the .keras files only
    python bench/inference_bench.py run --runtime keras_jax --artifacts DIR \\
        --clients 1,8,64,256 --load-procs 8                   # the GPU check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "gen") not in sys.path:
    sys.path.insert(0, str(REPO / "gen"))

MODELS = {"mlp": (64,), "cnn": (32, 32, 3)}
MAX_BATCH_SIZE = 64
ALLOWED_SIZES = [1, 2, 4, 8, 16, 32, 64]
CONFIGS = ("in-process ceiling", "served, batching", "served, batching off", "served no-op")


# --- models --------------------------------------------------------------------------------


def build_model(kind: str):
    """The benchmark's models, untrained (throughput does not depend on the weights)."""
    import keras

    keras.utils.set_random_seed(0)
    shape = MODELS[kind]
    inputs = keras.Input(shape, name="x")
    hidden = keras.layers.Normalization(
        axis=-1, mean=np.full(shape[-1], 0.5), variance=np.full(shape[-1], 0.25)
    )(inputs)
    if kind == "mlp":
        for width in (128, 64):
            hidden = keras.layers.Dense(width, activation="relu")(hidden)
    else:
        for filters in (64, 128, 256):
            hidden = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(hidden)
            hidden = keras.layers.MaxPooling2D(2)(hidden)
        hidden = keras.layers.Flatten()(hidden)
        hidden = keras.layers.Dense(512, activation="relu")(hidden)
    outputs = keras.layers.Dense(10, activation="softmax")(hidden)
    return keras.Model(inputs, outputs, name=kind)


def make_artifacts(out: Path, kinds: list[str], saved_model: bool) -> dict[str, dict[str, Path]]:
    """`<kind>.keras` (and a `<kind>_saved_model` folder) for every model kind."""
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, dict[str, Path]] = {}
    for kind in kinds:
        paths = {"keras": out / f"{kind}.keras"}
        model = None
        if not paths["keras"].is_file():
            model = build_model(kind)
            model.save(paths["keras"])
        if saved_model:
            import keras
            import tensorflow as tf

            paths["saved_model"] = out / f"{kind}_saved_model"
            if not (paths["saved_model"] / "saved_model.pb").is_file():
                model = model or keras.saving.load_model(paths["keras"])
                signature = [tf.TensorSpec((None, *MODELS[kind]), tf.float32, name="x")]
                model.export(
                    str(paths["saved_model"]),
                    format="tf_saved_model",
                    input_signature=signature,
                    verbose=False,
                )
        made[kind] = paths
    return made


# --- in-process ceiling --------------------------------------------------------------------


@dataclass
class Row:
    model: str
    config: str
    clients: int
    throughput: float
    p50_ms: float
    p99_ms: float
    requests: int
    batch_size: int = 0


def time_calls(runtime, kind: str, batch: int, min_s: float, min_calls: int) -> list[float]:
    inputs = {"x": np.random.default_rng(0).random((batch, *MODELS[kind]), dtype=np.float32)}
    for _ in range(3):
        runtime.predict(inputs)
    latencies = []
    started = time.perf_counter()
    while len(latencies) < min_calls or time.perf_counter() - started < min_s:
        begin = time.perf_counter()
        runtime.predict(inputs)
        latencies.append(time.perf_counter() - begin)
    return latencies


def ceilings(runtime_name: str, path: Path, kind: str, clients: list[int], seconds: float):
    from services.inference.runtimes import load_runtime

    runtime = load_runtime(runtime_name, path, {})
    by_size = {}
    for size in ALLOWED_SIZES:
        latencies = time_calls(runtime, kind, size, seconds, 5)
        by_size[size] = np.array(latencies)
        print(
            f"  in process {kind} batch {size:3d}: "
            f"{size / np.median(latencies):8.0f} samples/s, {np.median(latencies) * 1e3:.2f} ms",
            flush=True,
        )
    rows = []
    for n in clients:
        sizes = [s for s in ALLOWED_SIZES if s <= min(n, MAX_BATCH_SIZE)]
        best = max(sizes, key=lambda s: s / np.median(by_size[s]))
        latencies = by_size[best]
        rows.append(
            Row(
                kind,
                CONFIGS[0],
                n,
                float(best / np.median(latencies)),
                float(np.percentile(latencies, 50) * 1e3),
                float(np.percentile(latencies, 99) * 1e3),
                len(latencies),
                best,
            )
        )
    runtime.unload()
    return rows, runtime.device


# --- the served models ---------------------------------------------------------------------


def model_config(
    runtime: str, artifacts: dict[str, dict[str, Path]], batch_threads: int, off_threads: int
):
    artifact = "saved_model" if runtime == "tensorflow" else "keras"
    batching = {
        "max_batch_size": MAX_BATCH_SIZE,
        "batch_timeout_micros": 0,
        "allowed_batch_sizes": ALLOWED_SIZES,
        "num_batch_threads": batch_threads,
        "max_enqueued_batches": 64,
    }
    off = {
        "max_batch_size": 1,
        "allowed_batch_sizes": [1],
        "num_batch_threads": off_threads,
        "max_enqueued_batches": 4096,
    }
    models = []
    for kind, paths in artifacts.items():
        version = [{"version": 1, "path": str(paths[artifact])}]
        models.append({"name": kind, "runtime": runtime, "versions": version, "batching": batching})
        models.append(
            {"name": f"{kind}_off", "runtime": runtime, "versions": version, "batching": off}
        )
        models.append(
            {
                "name": f"{kind}_noop",
                "runtime": "noop",
                "runtime_options": {
                    "inputs": [{"name": "x", "dtype": "float32", "shape": list(MODELS[kind])}]
                },
                "versions": [{"version": 1}],
                "batching": batching,
            }
        )
    return {"models": models}


def python_path() -> str:
    """The repository and its generated code first, then whatever the caller had."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join([str(REPO), str(REPO / "gen"), *inherited])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_serving(address: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise TimeoutError(f"{address} did not serve within {timeout_s} s")


def start_server(work: Path, config: dict, runtime: str) -> tuple[subprocess.Popen, str]:
    config_path = work / "models.json"
    config_path.write_text(json.dumps(config, indent=1))
    port = free_port()
    env = {
        **os.environ,
        "TFMESH_HOME": str(work),
        "TFMESH_INFERENCE_PORT": str(port),
        "TFMESH_INFERENCE_MODEL_CONFIG_FILE": str(config_path),
        "TFMESH_LOG_LEVEL": "WARNING",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": python_path(),
    }
    if runtime == "keras_jax":
        env["KERAS_BACKEND"] = "jax"
    log = (work / "server.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.inference.server"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    address = f"127.0.0.1:{port}"
    wait_serving(address, process)
    return process, address


def model_status(address: str, model: str):
    import grpc

    from tfmesh.inference.v1 import inference_pb2 as pb
    from tfmesh.inference.v1 import inference_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return stub.GetModelStatus(pb.GetModelStatusRequest(model=model), timeout=10).status


# --- load ----------------------------------------------------------------------------------


async def closed_loop(
    address: str, model: str, shape: tuple[int, ...], clients: int, start_at: float, seconds: float
) -> list[float]:
    """`clients` clients, each sending the next one-row request when the last one answers;
    latencies of the requests that start inside [start_at, start_at + seconds)."""
    import grpc

    from shared.tensors import to_tensor
    from tfmesh.inference.v1 import inference_pb2 as pb
    from tfmesh.inference.v1 import inference_pb2_grpc

    row = np.random.default_rng(1).random((1, *shape), dtype=np.float32)
    request = pb.PredictRequest(model=model, inputs={"x": to_tensor(row)})
    end_at = start_at + seconds
    latencies: list[float] = []
    failures = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def client() -> None:
            nonlocal failures
            while (began := time.time()) < end_at:
                try:
                    await stub.Predict(request, timeout=30)
                except grpc.aio.AioRpcError:
                    failures += 1
                    continue
                if began >= start_at:
                    latencies.append(time.time() - began)

        await asyncio.gather(*(client() for _ in range(clients)))
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    return latencies


def run_load(
    address: str, model: str, kind: str, clients: int, procs: int, warmup_s: float, seconds: float
) -> Row:
    start_at = time.time() + warmup_s
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "load",
                "--address",
                address,
                "--model",
                model,
                "--kind",
                kind,
                "--clients",
                str(share),
                "--start-at",
                repr(start_at),
                "--seconds",
                repr(seconds),
            ],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": python_path()},
        )
        for share in shares
        if share
    ]
    latencies: list[float] = []
    for worker in workers:
        out, _ = worker.communicate(timeout=warmup_s + seconds + 120)
        if worker.returncode != 0:
            raise RuntimeError(f"a load generator for {model} exited {worker.returncode}")
        latencies += json.loads(out)
    values = np.array(latencies)
    return Row(
        kind,
        "",
        clients,
        len(values) / seconds,
        float(np.percentile(values, 50) * 1e3),
        float(np.percentile(values, 99) * 1e3),
        len(values),
    )


# --- report --------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = [
        "| model | configuration | N | samples/s | p50 ms | p99 ms | batch |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.config} | {r.clients} | {r.throughput:,.0f} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.batch_size or ''} |"
        )
    return "\n".join(lines)


def find(rows: list[Row], model: str, config: str, clients: int) -> Row | None:
    return next(
        (r for r in rows if (r.model, r.config, r.clients) == (model, config, clients)), None
    )


def targets(rows: list[Row], gpu: bool) -> list[dict]:
    """The issue's targets, with the ratios measured; missing rows are skipped."""
    checks = []

    def ratio(name, model, n, numerator, denominator, goal):
        top, bottom = find(rows, model, numerator, n), find(rows, model, denominator, n)
        if top and bottom:
            value = top.throughput / bottom.throughput
            checks.append(
                {"target": name, "value": round(value, 3), "goal": goal, "met": value >= goal}
            )

    if gpu:
        ratio("cnn N=256 served / batching off >= 10", "cnn", 256, CONFIGS[1], CONFIGS[2], 10)
        ratio("cnn N=256 served / no-op >= 0.8", "cnn", 256, CONFIGS[1], CONFIGS[3], 0.8)
        return checks
    ratio("cnn N=64 served / ceiling >= 0.85", "cnn", 64, CONFIGS[1], CONFIGS[0], 0.85)
    ratio("cnn N=64 served / batching off >= 1.5", "cnn", 64, CONFIGS[1], CONFIGS[2], 1.5)
    ratio("mlp N=64 served / no-op >= 0.8", "mlp", 64, CONFIGS[1], CONFIGS[3], 0.8)
    ratio("mlp N=64 served / batching off >= 5", "mlp", 64, CONFIGS[1], CONFIGS[2], 5)
    for model in MODELS:
        served, local = find(rows, model, CONFIGS[1], 1), find(rows, model, CONFIGS[0], 1)
        if served and local:
            extra = served.p50_ms - local.p50_ms
            checks.append(
                {
                    "target": f"{model} N=1 served p50 - in-process p50 <= 1 ms",
                    "value": round(extra, 3),
                    "goal": 1.0,
                    "met": extra <= 1.0,
                }
            )
    return checks


def plot(rows: list[Row], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", flush=True)
        return False
    models = sorted({r.model for r in rows})
    figure, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 8), squeeze=False)
    for column, model in enumerate(models):
        for config in CONFIGS:
            series = sorted(
                (r for r in rows if (r.model, r.config) == (model, config)), key=lambda r: r.clients
            )
            if not series:
                continue
            ns = [r.clients for r in series]
            axes[0][column].plot(ns, [r.throughput for r in series], marker="o", label=config)
            axes[1][column].plot(ns, [r.p99_ms for r in series], marker="o", label=config)
        axes[0][column].set_title(f"{model}: throughput")
        axes[0][column].set_ylabel("samples/s")
        axes[1][column].set_title(f"{model}: p99 latency")
        axes[1][column].set_ylabel("ms")
        for row in (0, 1):
            axes[row][column].set_xscale("log", base=2)
            axes[row][column].set_yscale("log")
            axes[row][column].set_xlabel("concurrent clients N")
            axes[row][column].grid(True, which="both", alpha=0.3)
            axes[row][column].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


# --- commands ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    clients = [int(n) for n in args.clients.split(",")]
    kinds = args.models.split(",")
    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="tfmesh-bench-"))
    artifacts_dir = Path(args.artifacts) if args.artifacts else work / "artifacts"
    artifacts = make_artifacts(artifacts_dir, kinds, saved_model=args.runtime == "tensorflow")
    artifact = "saved_model" if args.runtime == "tensorflow" else "keras"
    rows: list[Row] = []
    devices = {}
    for kind in kinds:
        print(f"in-process ceiling of {kind} ({args.runtime})", flush=True)
        kind_rows, devices[kind] = ceilings(
            args.runtime, artifacts[kind][artifact], kind, clients, args.ceiling_seconds
        )
        rows += kind_rows
    config = model_config(args.runtime, artifacts, args.batch_threads, args.off_threads)
    server, address = start_server(work, config, args.runtime)
    try:
        served_devices = {kind: model_status(address, kind).versions[0].device for kind in kinds}
        print(f"serving at {address}; weights on {served_devices}", flush=True)
        expected = args.expect_device.lower()
        misplaced = {k: d for k, d in served_devices.items() if expected not in d.lower()}
        if misplaced:
            print(f"weights are not on {args.expect_device!r}: {misplaced}", flush=True)
            return 1
        for kind in kinds:
            for config_name, model in (
                (CONFIGS[1], kind),
                (CONFIGS[2], f"{kind}_off"),
                (CONFIGS[3], f"{kind}_noop"),
            ):
                for n in clients:
                    procs = max(1, min(args.load_procs, n))
                    row = run_load(address, model, kind, n, procs, args.warmup, args.seconds)
                    row.config = config_name
                    rows.append(row)
                    print(
                        f"  {kind:4s} {config_name:22s} N={n:4d}: {row.throughput:9,.0f}/s "
                        f"p50 {row.p50_ms:7.2f} ms p99 {row.p99_ms:7.2f} ms",
                        flush=True,
                    )
    finally:
        server.terminate()
        server.wait(60)
    checks = targets(rows, gpu=args.gpu)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"inference_{args.runtime}{'_gpu' if args.gpu else ''}"
    result = {
        "runtime": args.runtime,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            # Other work on the machine skews every figure: recorded, not hidden.
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "devices": {"in_process": devices, "served": served_devices},
        "parameters": {
            "clients": clients,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "load_procs": args.load_procs,
            "batch_threads": args.batch_threads,
            "off_threads": args.off_threads,
            "max_batch_size": MAX_BATCH_SIZE,
        },
        "rows": [asdict(r) for r in rows],
        "targets": checks,
    }
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    plotted = plot(rows, out / f"{name}.png", f"tfmesh inference, {args.runtime} runtime")
    print()
    print(table(rows))
    print(
        f"\nload average at start {load_at_start}, at end {os.getloadavg()} ({os.cpu_count()} cpus)"
    )
    for check in checks:
        print(f"{'MET ' if check['met'] else 'MISS'} {check['target']}: {check['value']}")
    print(
        f"\nresults: {out / (name + '.json')}"
        + (f", plot: {out / (name + '.png')}" if plotted else "")
    )
    return 0


def load(args: argparse.Namespace) -> int:
    latencies = asyncio.run(
        closed_loop(
            args.address, args.model, MODELS[args.kind], args.clients, args.start_at, args.seconds
        )
    )
    json.dump(latencies, sys.stdout)
    return 0


def artifacts_command(args: argparse.Namespace) -> int:
    made = make_artifacts(Path(args.out), args.models.split(","), saved_model=False)
    for kind, paths in made.items():
        print(f"{kind}: {paths['keras']} ({paths['keras'].stat().st_size:,} bytes)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("run", help="measure the table")
    bench.add_argument("--runtime", default="tensorflow", choices=["tensorflow", "keras_jax"])
    bench.add_argument("--models", default="mlp,cnn")
    bench.add_argument("--clients", default="1,8,64")
    bench.add_argument("--seconds", type=float, default=5.0)
    bench.add_argument("--warmup", type=float, default=2.0)
    bench.add_argument("--ceiling-seconds", type=float, default=1.0)
    bench.add_argument("--load-procs", type=int, default=1)
    bench.add_argument("--batch-threads", type=int, default=1)
    bench.add_argument("--off-threads", type=int, default=4)
    bench.add_argument("--artifacts", help="folder of <model>.keras files (made if missing)")
    bench.add_argument("--gpu", action="store_true", help="check the GPU targets")
    bench.add_argument(
        "--expect-device",
        default="",
        help="fail unless every served model's device names this (case-insensitive), e.g. gpu",
    )
    bench.add_argument("--out", default=str(REPO / "bench" / "results"))
    bench.set_defaults(handler=run)
    make = commands.add_parser("artifacts", help="write <model>.keras files")
    make.add_argument("--out", required=True)
    make.add_argument("--models", default="mlp,cnn")
    make.set_defaults(handler=artifacts_command)
    generator = commands.add_parser("load", help="one load-generator process (internal)")
    generator.add_argument("--address", required=True)
    generator.add_argument("--model", required=True)
    generator.add_argument("--kind", required=True, choices=sorted(MODELS))
    generator.add_argument("--clients", type=int, required=True)
    generator.add_argument("--start-at", type=float, required=True)
    generator.add_argument("--seconds", type=float, required=True)
    generator.set_defaults(handler=load)
    args = parser.parse_args()
    if getattr(args, "runtime", "") == "keras_jax":
        # Keras picks its backend at import: this process calls the model in process too.
        os.environ["KERAS_BACKEND"] = "jax"
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
