"""Throughput and latency of the inference service under closed-loop gRPC load.

Two models, because batching pays differently: the digits MLP (64 features, where per-call
framework and RPC overhead dominate) and a CNN of about 2.5 M parameters on 32x32x3 inputs
(the `cnn` template's layers: conv/pool blocks of 64, 128, 256 filters, dense 512; where
compute dominates). The load comes from Triton's C++ load generator, `perf_analyzer`, in
its default KServe mode (from `.venv-triton`, see `make triton`), or from this file's own
Python client where perf_analyzer is missing or `--driver python` asks for it. Every
request carries one row. Three parts, each measured in this one run:

1. Models: for each model and each N concurrent clients,
   - `in-process ceiling`: the runtime called directly at the best batch size up to
     min(N, max_batch_size), no RPC (the compute ceiling);
   - `served, batching`: the server with dynamic batching (max_batch_size 64, timeout 0);
   - `served, batching off`: the same model with max_batch_size 1 on several threads;
   - `served no-op`: a noop-runtime model with the same input shape (the RPC ceiling).
2. Front ends: the no-op model at `--frontend-clients` clients, served by 0 (one
   process), 1, 2, 4, 8 front ends, as many as the machine has cores.
3. Streaming: the no-op model, one ModelStreamInfer stream keeping 64 requests in flight
   against 64 unary clients (both from the Python client, so both pay the same client).

The server runs as its own processes and the load generator in others; results go to
`bench/results/inference_<runtime>.json` with a PNG plot beside it.

    python bench/inference_bench.py run                       # CPU, TensorFlow runtime
    python bench/inference_bench.py artifacts --out DIR       # the .keras files only
    python bench/inference_bench.py run --runtime keras_jax --artifacts DIR --gpu \\
        --clients 1,8,64,256 --driver python --load-procs 8   # the GPU check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
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

from bench import triton_tools, wrk  # noqa: E402 - after the path set-up above
from shared.ports import free_port  # noqa: E402

MODELS = {"mlp": (64,), "cnn": (32, 32, 3)}
MAX_BATCH_SIZE = 64
ALLOWED_SIZES = [1, 2, 4, 8, 16, 32, 64]
CEILING, BATCHING, OFF, NOOP = (
    "in-process ceiling",
    "served, batching",
    "served, batching off",
    "served no-op",
)
CONFIGS = (CEILING, BATCHING, OFF, NOOP)
# The same ceiling with TensorFlow limited to the threads the served model owner gets.
CEILING_SERVER_THREADS = "in-process, server's threads"
# perf_analyzer's stabilisation: three windows within 25 %, else any three windows.
STABLE = ("--stability-percentage", "25", "--max-trials", "6")
ANY = ("--stability-percentage", "1000", "--max-trials", "3")
FRONTENDS_CONFIG = "no-op, front ends"
UNARY_CONFIG = "no-op, unary clients"
STREAM_CONFIG = "no-op, one stream"


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
    # Front-end processes of the server (0: one process); None for in-process rows.
    frontends: int | None = None
    driver: str = ""


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
                CEILING,
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


def ceilings_with_threads(
    runtime: str, path: Path, kind: str, clients: list[int], seconds: float, threads: int
) -> list[Row]:
    """`ceilings` in a process of its own whose TensorFlow has `threads` intra- and
    inter-op threads (the pools are sized once per process)."""
    env = {
        **os.environ,
        "PYTHONPATH": python_path(),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(threads),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    command = [sys.executable, str(Path(__file__).resolve()), "ceiling", "--runtime", runtime]
    command += ["--path", str(path), "--kind", kind, "--clients", ",".join(map(str, clients))]
    finished = subprocess.run(
        [*command, "--seconds", repr(seconds)], env=env, capture_output=True, text=True, timeout=600
    )
    if finished.returncode != 0:
        raise RuntimeError(f"the ceiling process failed:\n{finished.stderr[-2000:]}")
    rows = [Row(**row) for row in json.loads(finished.stdout.splitlines()[-1])]
    for row in rows:
        row.config = CEILING_SERVER_THREADS
    return rows


# --- the served models ---------------------------------------------------------------------


def noop_entry(name: str, kind: str, batching: dict) -> dict:
    return {
        "name": name,
        "runtime": "noop",
        "runtime_options": {
            "inputs": [{"name": "x", "dtype": "float32", "shape": list(MODELS[kind])}]
        },
        "versions": [{"version": 1}],
        "batching": batching,
    }


BATCHING_PARAMETERS = {
    "max_batch_size": MAX_BATCH_SIZE,
    # Waited out only for callers the batcher expects (see services.inference.batcher).
    "batch_timeout_micros": 2000,
    "allowed_batch_sizes": ALLOWED_SIZES,
    "num_batch_threads": 1,
    "max_enqueued_batches": 64,
}


def model_config(runtime: str, artifacts: dict[str, dict[str, Path]], off_threads: int):
    artifact = "saved_model" if runtime == "tensorflow" else "keras"
    off = {
        "max_batch_size": 1,
        "allowed_batch_sizes": [1],
        "num_batch_threads": off_threads,
        "max_enqueued_batches": 4096,
    }
    models = []
    for kind, paths in artifacts.items():
        version = [{"version": 1, "path": str(paths[artifact])}]
        models.append(
            {"name": kind, "runtime": runtime, "versions": version, "batching": BATCHING_PARAMETERS}
        )
        models.append(
            {"name": f"{kind}_off", "runtime": runtime, "versions": version, "batching": off}
        )
        models.append(noop_entry(f"{kind}_noop", kind, BATCHING_PARAMETERS))
    return {"models": models}


def python_path() -> str:
    """The repository and its generated code first, then whatever the caller had."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join([str(REPO), str(REPO / "gen"), *inherited])


def listeners(port: int) -> int:
    """Sockets listening on `port` (each front end has one), from /proc/net/tcp."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def wait_serving(port: int, process: subprocess.Popen, frontends: int, timeout_s: float = 300):
    """Until every front end listens (or, with one process, the port answers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        if listeners(port) >= max(1, frontends):
            return
        time.sleep(0.2)
    raise TimeoutError(f"port {port} did not serve within {timeout_s} s")


@dataclass
class Server:
    process: subprocess.Popen
    address: str
    frontends: int
    http_address: str = ""

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def start_server(
    work: Path, config: dict, runtime: str, frontends: int, grpc_front: str = "grpcio"
) -> Server:
    config_path = work / f"models-{time.monotonic_ns()}.json"
    config_path.write_text(json.dumps(config, indent=1))
    port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "TFMESH_HOME": str(work),
        "TFMESH_INFERENCE_PORT": str(port),
        "TFMESH_INFERENCE_HTTP_PORT": str(http_port),
        "TFMESH_INFERENCE_MODEL_CONFIG_FILE": str(config_path),
        "TFMESH_INFERENCE_FRONTENDS": str(frontends),
        "TFMESH_INFERENCE_GRPC_FRONT": grpc_front,
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
    # Behind Envoy one listener holds the port, whatever the front ends.
    wait_serving(port, process, frontends if grpc_front == "grpcio" else 1)
    return Server(process, f"127.0.0.1:{port}", frontends, f"127.0.0.1:{http_port}")


def start_gateway(work: Path, server: Server) -> Server:
    """The REST gateway in front of `server`, as `make up` runs it."""
    port = free_port()
    env = {
        **os.environ,
        "TFMESH_GATEWAY_PORT": str(port),
        "TFMESH_GATEWAY_INFERENCE_ADDR": server.address,
        "TFMESH_GATEWAY_INFERENCE_HTTP_ADDR": server.http_address,
        "TFMESH_LOG_LEVEL": "WARNING",
        "PYTHONPATH": python_path(),
    }
    log = (work / "gateway.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.server"], cwd=REPO, env=env, stdout=log, stderr=log
    )
    wait_serving(port, process, 1)
    return Server(process, f"127.0.0.1:{port}", 0, f"127.0.0.1:{port}")


def model_status(address: str, model: str):
    import grpc

    from tfmesh.inference.v1 import inference_pb2 as pb
    from tfmesh.inference.v1 import inference_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return stub.GetModelStatus(
            pb.GetModelStatusRequest(model=model), timeout=10, wait_for_ready=True
        ).status


# --- load from Python ----------------------------------------------------------------------


def infer_request(shape: tuple[int, ...], model: str):
    from inference import grpc_predict_v2_pb2 as v2

    row = np.random.default_rng(1).random((1, *shape), dtype=np.float32)
    request = v2.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=row.shape)
    request.raw_input_contents.append(row.tobytes())
    return request


def connections(address: str, count: int):
    """Channels with a connection each, so the kernel spreads them over the front ends."""
    import grpc

    options = [("grpc.use_local_subchannel_pool", 1)]
    return [grpc.aio.insecure_channel(address, options=options) for _ in range(count)]


async def closed_loop(
    address: str, model: str, shape: tuple[int, ...], clients: int, start_at: float, seconds: float
) -> list[float]:
    """`clients` unary clients (four to a connection), each sending the next one-row
    request when the last one answers; latencies of the requests that start inside
    [start_at, start_at + seconds)."""
    import grpc

    from inference import grpc_predict_v2_pb2_grpc

    request = infer_request(shape, model)
    end_at = start_at + seconds
    latencies: list[float] = []
    failures = 0
    channels = connections(address, -(-clients // 4))

    async def client(channel) -> None:
        nonlocal failures
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        while (began := time.time()) < end_at:
            try:
                await stub.ModelInfer(request, timeout=30)
            except grpc.aio.AioRpcError:
                failures += 1
                continue
            if began >= start_at:
                latencies.append(time.time() - began)

    try:
        await asyncio.gather(*(client(channels[i % len(channels)]) for i in range(clients)))
    finally:
        for channel in channels:
            await channel.close()
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    return latencies


async def stream_loop(
    address: str,
    model: str,
    shape: tuple[int, ...],
    in_flight: int,
    start_at: float,
    seconds: float,
) -> list[float]:
    """One ModelStreamInfer stream that keeps `in_flight` one-row requests unanswered."""
    from inference import grpc_predict_v2_pb2_grpc

    template = infer_request(shape, model)
    end_at = start_at + seconds
    latencies: list[float] = []
    sent_at: dict[str, float] = {}
    (channel,) = connections(address, 1)
    async with channel:
        call = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer()
        counter = 0

        async def send() -> None:
            nonlocal counter
            request = type(template)()
            request.CopyFrom(template)
            request.id = str(counter)
            sent_at[request.id] = time.time()
            counter += 1
            await call.write(request)

        for _ in range(in_flight):
            await send()
        while sent_at:
            answer = await call.read()
            if answer.error_message:
                raise RuntimeError(answer.error_message)
            began = sent_at.pop(answer.infer_response.id)
            if began >= start_at:
                latencies.append(time.time() - began)
            if time.time() < end_at:
                await send()
        await call.done_writing()
    return latencies


def python_load(
    address: str,
    model: str,
    kind: str,
    clients: int,
    procs: int,
    warmup_s: float,
    seconds: float,
    stream: bool = False,
) -> Row:
    start_at = time.time() + warmup_s
    shares = (
        [clients] if stream else [clients // procs + (i < clients % procs) for i in range(procs)]
    )
    command = [sys.executable, str(Path(__file__).resolve()), "load", "--address", address]
    workers = [
        subprocess.Popen(
            [
                *command,
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
                *(["--stream"] if stream else []),
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
        driver="python",
    )


def measure(args: argparse.Namespace, driver: str, address: str, model: str, kind: str, n: int):
    if driver == "perf_analyzer":
        interval_ms = int(args.seconds * 1000)
        try:
            found = triton_tools.perf_analyzer(
                model, address, n, interval_ms, *STABLE, timeout_s=20 * args.seconds + 120
            )
        except RuntimeError as error:
            if "stable measurement" not in str(error):
                raise
            # A noisy machine: take the last windows as they are, and say so.
            print(f"  {model} N={n}: no stable measurement; taking one as it is", flush=True)
            found = triton_tools.perf_analyzer(
                model, address, n, interval_ms, *ANY, timeout_s=20 * args.seconds + 120
            )
        throughput = found["Inferences/Second"]
        return Row(
            kind,
            "",
            n,
            throughput,
            found["p50 latency"] / 1e3,
            found["p99 latency"] / 1e3,
            int(throughput * args.seconds),
            driver=driver,
        )
    procs = max(1, min(args.load_procs, n))
    return python_load(address, model, kind, n, procs, args.warmup, args.seconds)


# --- report --------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = [
        "| model | configuration | front ends | N | samples/s | p50 ms | p99 ms | batch |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        frontends = "" if r.frontends is None else str(r.frontends)
        lines.append(
            f"| {r.model} | {r.config} | {frontends} | {r.clients} | {r.throughput:,.0f} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.batch_size or ''} |"
        )
    return "\n".join(lines)


def find(rows: list[Row], model: str, config: str, clients: int, frontends=-1) -> Row | None:
    return next(
        (
            r
            for r in rows
            if (r.model, r.config, r.clients) == (model, config, clients)
            and frontends in (-1, r.frontends)
        ),
        None,
    )


def targets(rows: list[Row], gpu: bool) -> list[dict]:
    """The issues' targets, with the ratios measured; missing rows are skipped."""
    checks = []

    def check(name: str, value: float | None, goal: float, at_least: bool = True) -> None:
        if value is not None:
            met = value >= goal if at_least else value <= goal
            checks.append({"target": name, "value": round(value, 3), "goal": goal, "met": met})

    def ratio(top: Row | None, bottom: Row | None) -> float | None:
        return top.throughput / bottom.throughput if top and bottom else None

    if gpu:
        check(
            "cnn N=256 served / batching off >= 10",
            ratio(find(rows, "cnn", BATCHING, 256), find(rows, "cnn", OFF, 256)),
            10,
        )
        check(
            "cnn N=256 served / no-op >= 0.8",
            ratio(find(rows, "cnn", BATCHING, 256), find(rows, "cnn", NOOP, 256)),
            0.8,
        )
        return checks
    served = find(rows, "cnn", BATCHING, 64)
    check("cnn N=64 served / ceiling >= 0.7", ratio(served, find(rows, "cnn", CEILING, 64)), 0.7)
    check(
        "cnn N=64 served / ceiling at the server's threads >= 0.7",
        ratio(served, find(rows, "cnn", CEILING_SERVER_THREADS, 64)),
        0.7,
    )
    if served:
        check("cnn N=64 served p99 / p50 <= 2", served.p99_ms / served.p50_ms, 2, at_least=False)
    check(
        "cnn N=64 served / batching off >= 1.5",
        ratio(served, find(rows, "cnn", OFF, 64)),
        1.5,
    )
    one, local = find(rows, "cnn", BATCHING, 1), find(rows, "cnn", CEILING, 1)
    if one and local:
        check(
            "cnn N=1 served p50 - in-process p50 <= 1.5 ms",
            one.p50_ms - local.p50_ms,
            1.5,
            at_least=False,
        )
    fronts = [r for r in rows if r.config == FRONTENDS_CONFIG]
    if fronts:
        n = fronts[0].clients
        check(
            f"no-op N={n}: 2 front ends / 1 front end >= 1.5",
            ratio(
                find(rows, "mlp", FRONTENDS_CONFIG, n, 2), find(rows, "mlp", FRONTENDS_CONFIG, n, 1)
            ),
            1.5,
        )
    rest = find(rows, "cnn", "REST JSON, via gateway", 64)
    check("REST JSON via gateway / gRPC at 64 >= 0.8", ratio(rest, served), 0.8)
    check(
        "REST binary / JSON at 64 connections >= 1.3",
        ratio(
            find(rows, "cnn", "REST binary, direct", 64), find(rows, "cnn", "REST JSON, direct", 64)
        ),
        1.3,
    )
    check(
        "REST JSON via gateway / direct at 64 >= 0.85",
        ratio(rest, find(rows, "cnn", "REST JSON, direct", 64)),
        0.85,
    )
    streams = [r for r in rows if r.config == STREAM_CONFIG]
    if streams:
        n = streams[0].clients
        check(
            f"no-op: one stream, {n} in flight / {n} unary clients >= 2",
            ratio(streams[0], find(rows, "mlp", UNARY_CONFIG, n)),
            2,
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
    models = sorted({r.model for r in rows if r.config in CONFIGS})
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


def pick_driver(asked: str) -> str:
    if asked != "auto":
        if asked == "perf_analyzer" and triton_tools.perf_analyzer_env() is None:
            raise SystemExit("perf_analyzer is not installed: run `make triton`")
        return asked
    if triton_tools.perf_analyzer_env() is not None:
        return "perf_analyzer"
    print("perf_analyzer not found (`make triton` installs it): the Python client drives")
    return "python"


def log_row(row: Row) -> None:
    frontends = "" if row.frontends is None else f" {row.frontends} front ends"
    print(
        f"  {row.model:4s} {row.config:22s}{frontends} N={row.clients:4d}: "
        f"{row.throughput:9,.0f}/s p50 {row.p50_ms:7.2f} ms p99 {row.p99_ms:7.2f} ms",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    clients = [int(n) for n in args.clients.split(",")]
    kinds = args.models.split(",")
    driver = pick_driver(args.driver)
    cores = len(os.sched_getaffinity(0))
    frontends = cores if args.frontends is None else args.frontends
    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="tfmesh-bench-"))
    artifacts_dir = Path(args.artifacts) if args.artifacts else work / "artifacts"
    artifacts = make_artifacts(artifacts_dir, kinds, saved_model=args.runtime == "tensorflow")
    artifact = "saved_model" if args.runtime == "tensorflow" else "keras"
    rows: list[Row] = []
    devices = {}
    threads = max(1, cores - frontends)
    for kind in kinds:
        print(f"in-process ceiling of {kind} ({args.runtime})", flush=True)
        kind_rows, devices[kind] = ceilings(
            args.runtime, artifacts[kind][artifact], kind, clients, args.ceiling_seconds
        )
        rows += kind_rows
        if args.runtime == "tensorflow" and threads < cores:
            print(f"  ... and with {threads} TensorFlow thread(s), as the server has", flush=True)
            rows += ceilings_with_threads(
                args.runtime,
                artifacts[kind][artifact],
                kind,
                clients,
                args.ceiling_seconds,
                threads,
            )
    server = start_server(
        work, model_config(args.runtime, artifacts, args.off_threads), args.runtime, frontends
    )
    try:
        served_devices = {
            kind: model_status(server.address, kind).versions[0].device for kind in kinds
        }
        print(f"serving at {server.address} ({frontends} front ends); weights on {served_devices}")
        expected = args.expect_device.lower()
        misplaced = {k: d for k, d in served_devices.items() if expected not in d.lower()}
        if misplaced:
            print(f"weights are not on {args.expect_device!r}: {misplaced}", flush=True)
            return 1
        for kind in kinds:
            for config_name, model in (
                (BATCHING, kind),
                (OFF, f"{kind}_off"),
                (NOOP, f"{kind}_noop"),
            ):
                for n in clients:
                    row = measure(args, driver, server.address, model, kind, n)
                    row.config, row.frontends = config_name, frontends
                    rows.append(row)
                    log_row(row)
    finally:
        server.stop()
    if not args.gpu:
        rows += frontend_rows(args, driver, work, cores)
        rows += stream_rows(args, work, frontends)
        if wrk.available() and "cnn" in kinds:
            rows += rest_rows(args, work, clients, artifacts, frontends)
        else:
            print("wrk is not installed (`make debs` installs it): no REST rows", flush=True)
    report(args, rows, devices, served_devices, load_at_start, driver, frontends)
    return 0


def frontend_rows(args: argparse.Namespace, driver: str, work: Path, cores: int) -> list[Row]:
    """The no-op model (the MLP's input) at one load, by number of front-end processes."""
    rows = []
    config = {"models": [noop_entry("mlp_noop", "mlp", BATCHING_PARAMETERS)]}
    for count in [0, *(c for c in (1, 2, 4, 8) if c <= cores)]:
        server = start_server(work, config, "noop", count)
        try:
            row = measure(args, driver, server.address, "mlp_noop", "mlp", args.frontend_clients)
        finally:
            server.stop()
        row.config, row.frontends = FRONTENDS_CONFIG, count
        rows.append(row)
        log_row(row)
    return rows


def stream_rows(args: argparse.Namespace, work: Path, frontends: int) -> list[Row]:
    """The no-op model: 64 unary clients against one stream with 64 requests in flight."""
    rows = []
    config = {"models": [noop_entry("mlp_noop", "mlp", BATCHING_PARAMETERS)]}
    server = start_server(work, config, "noop", frontends)
    n = args.stream_in_flight
    try:
        for config_name, stream in ((UNARY_CONFIG, False), (STREAM_CONFIG, True)):
            row = python_load(
                server.address, "mlp_noop", "mlp", n, 1, args.warmup, args.seconds, stream
            )
            row.config, row.frontends = config_name, frontends
            rows.append(row)
            log_row(row)
    finally:
        server.stop()
    return rows


def kserve_bodies(kind: str) -> dict[str, tuple[bytes, str, int | None]]:
    """One row of `kind` as a KServe v2 JSON body and as a binary one (JSON header, raw
    tensor, output asked for raw): body, content type, JSON header length."""
    row = np.random.default_rng(1).random((1, *MODELS[kind]), dtype=np.float32)
    shape = list(row.shape)
    json_body = {
        "inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": row.tolist()}]
    }
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": shape,
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": row.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return {
        "JSON": (json.dumps(json_body).encode(), "application/json", None),
        "binary": (header + row.tobytes(), "application/octet-stream", len(header)),
    }


def rest_rows(
    args: argparse.Namespace,
    work: Path,
    clients: list[int],
    artifacts: dict[str, dict[str, Path]],
    frontends: int,
) -> list[Row]:
    """The CNN over REST with wrk: KServe v2 JSON and binary, straight to the front ends'
    HTTP port and through the gateway, at each number of connections."""
    config = {
        "models": [
            m
            for m in model_config(args.runtime, artifacts, args.off_threads)["models"]
            if m["name"] == "cnn"
        ]
    }
    server = start_server(work, config, args.runtime, frontends)
    gateway = start_gateway(work, server)
    rows = []
    try:
        for body_name, (body, content_type, header_length) in kserve_bodies("cnn").items():
            for path_name, address in (
                ("direct", server.http_address),
                ("via gateway", gateway.http_address),
            ):
                for n in clients:
                    url = f"http://{address}/v2/models/cnn/infer"
                    found = wrk.post(url, body, content_type, n, args.seconds, work, header_length)
                    if found.bad_status or found.socket_errors:
                        raise RuntimeError(f"REST {body_name} {path_name} N={n}: {found}")
                    row = Row(
                        "cnn",
                        f"REST {body_name}, {path_name}",
                        n,
                        found.requests_per_s,
                        found.p50_ms,
                        found.p99_ms,
                        found.requests,
                        frontends=frontends,
                        driver="wrk",
                    )
                    rows.append(row)
                    log_row(row)
    finally:
        gateway.stop()
        server.stop()
    return rows


def report(args, rows, devices, served_devices, load_at_start, driver, frontends) -> None:
    checks = targets(rows, gpu=args.gpu)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"inference_{args.runtime}{'_gpu' if args.gpu else ''}"
    result = {
        "runtime": args.runtime,
        "driver": driver,
        "machine": {
            "cpus": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "python": platform.python_version(),
            # Other work on the machine skews every figure: recorded, not hidden.
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "devices": {"in_process": devices, "served": served_devices},
        "parameters": {
            "clients": args.clients,
            "seconds": args.seconds,
            "frontends": frontends,
            "frontend_clients": args.frontend_clients,
            "stream_in_flight": args.stream_in_flight,
            "load_procs": args.load_procs,
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
        f"\ndriver {driver}; load average at start {load_at_start}, at end {os.getloadavg()} "
        f"({os.cpu_count()} cpus)"
    )
    for check in checks:
        print(f"{'MET ' if check['met'] else 'MISS'} {check['target']}: {check['value']}")
    print(
        f"\nresults: {out / (name + '.json')}"
        + (f", plot: {out / (name + '.png')}" if plotted else "")
    )


def ceiling_command(args: argparse.Namespace) -> int:
    clients = [int(n) for n in args.clients.split(",")]
    rows, _ = ceilings(args.runtime, Path(args.path), args.kind, clients, args.seconds)
    print(json.dumps([asdict(row) for row in rows]))
    return 0


def load(args: argparse.Namespace) -> int:
    loop = stream_loop if args.stream else closed_loop
    latencies = asyncio.run(
        loop(args.address, args.model, MODELS[args.kind], args.clients, args.start_at, args.seconds)
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
    bench.add_argument("--driver", default="auto", choices=["auto", "perf_analyzer", "python"])
    bench.add_argument(
        "--frontends", type=int, help="front ends of the model rows (default: cores)"
    )
    bench.add_argument("--frontend-clients", type=int, default=64)
    bench.add_argument("--stream-in-flight", type=int, default=64)
    bench.add_argument("--seconds", type=float, default=3.0)
    bench.add_argument("--warmup", type=float, default=2.0)
    bench.add_argument("--ceiling-seconds", type=float, default=1.0)
    bench.add_argument("--load-procs", type=int, default=1, help="Python load processes")
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
    ceiling = commands.add_parser("ceiling", help="in-process ceilings as JSON (internal)")
    ceiling.add_argument("--runtime", default="tensorflow", choices=["tensorflow", "keras_jax"])
    ceiling.add_argument("--path", required=True)
    ceiling.add_argument("--kind", required=True, choices=sorted(MODELS))
    ceiling.add_argument("--clients", required=True)
    ceiling.add_argument("--seconds", type=float, required=True)
    ceiling.set_defaults(handler=ceiling_command)
    generator = commands.add_parser("load", help="one load-generator process (internal)")
    generator.add_argument("--address", required=True)
    generator.add_argument("--model", required=True)
    generator.add_argument("--kind", required=True, choices=sorted(MODELS))
    generator.add_argument("--clients", type=int, required=True)
    generator.add_argument("--start-at", type=float, required=True)
    generator.add_argument("--seconds", type=float, required=True)
    generator.add_argument("--stream", action="store_true", help="one stream, CLIENTS in flight")
    generator.set_defaults(handler=load)
    args = parser.parse_args()
    if getattr(args, "runtime", "") == "keras_jax":
        # Keras picks its backend at import: this process calls the model in process too.
        os.environ["KERAS_BACKEND"] = "jax"
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
