"""What monitoring costs the data plane: serving throughput with drift sampling and a
Prometheus scraping every second, against the same stack with both off.

Each configuration gets a fresh local stack (`cli.stack`) on free loopback ports: the
digits sample imported, a small MLP trained and put in production (so the version has
lineage and drift a baseline), then closed-loop unary Predict calls of one row each from
`--clients` concurrent clients for `--seconds`. The metrics themselves are always counted
(prometheus_client has no off switch); what the configurations change is drift sampling
(`TFMESH_INFERENCE_DRIFT_SAMPLING_RATE`, 0 turns it off) and whether a Prometheus scrapes.
Results go to `bench/results/monitoring_overhead.json`.

    python -m bench.monitoring_bench [--clients 16] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cli.demo_calls import read_split, wait_for_labels
from cli.stack import LocalStack
from shared.aliases import PRODUCTION
from shared.channels import open_channel
from shared.ports import free_ports
from shared.tensors import to_tensor
from tfmesh.data.v1 import data_pb2 as dpb
from tfmesh.data.v1 import data_pb2_grpc
from tfmesh.inference.v1 import inference_pb2 as ipb
from tfmesh.inference.v1 import inference_pb2_grpc
from tfmesh.registry.v1 import registry_pb2 as rpb
from tfmesh.registry.v1 import registry_pb2_grpc
from tfmesh.training.v1 import training_pb2 as tpb
from tfmesh.training.v1 import training_pb2_grpc

RESULTS = Path(__file__).resolve().parent / "results" / "monitoring_overhead.json"
MODEL = "digits"
SERVICES = ("REGISTRY", "DATA", "TRAINING", "INFERENCE", "GATEWAY")


@dataclass(frozen=True)
class Config:
    name: str
    drift_sampling_rate: float
    prometheus: bool


CONFIGS = (
    Config("off (no drift, no scrape)", 0.0, False),
    Config("on (drift 10% of requests, 1 s scrape)", 0.1, True),
    Config("on (drift every request, 1 s scrape)", 1.0, True),
)


@dataclass
class Result:
    config: str
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float


def stack_environment(home: Path, config: Config) -> dict[str, str]:
    ports = iter(free_ports(12))
    environment = {
        "TFMESH_HOME": str(home),
        "TFMESH_PROMETHEUS_PORT": str(next(ports)),
        "TFMESH_PROMETHEUS_INTERVAL": "1s",
        "TFMESH_INFERENCE_MODELS": MODEL,
        "TFMESH_INFERENCE_DRIFT_SAMPLING_RATE": str(config.drift_sampling_rate),
        "TFMESH_INFERENCE_HTTP_PORT": str(next(ports)),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    for prefix in SERVICES:
        environment[f"TFMESH_{prefix}_PORT"] = str(next(ports))
        environment[f"TFMESH_{prefix}_METRICS_PORT"] = str(next(ports))
    return environment


async def serve_digits(addresses: dict[str, str]) -> tuple[np.ndarray, str]:
    """Import digits, train a small MLP, put it in production; the test rows and input."""
    async with (
        open_channel(addresses["data"]) as data_channel,
        open_channel(addresses["training"]) as training_channel,
        open_channel(addresses["registry"]) as registry_channel,
        open_channel(addresses["inference"]) as inference_channel,
    ):
        data = data_pb2_grpc.DataServiceStub(data_channel)
        training = training_pb2_grpc.TrainingServiceStub(training_channel)
        dataset = (await data.ImportSample(dpb.ImportSampleRequest(sample="digits"))).version
        x_test, _ = await read_split(data, dataset.name, dpb.SPLIT_TEST)
        spec = tpb.JobSpec(
            dataset_version=dataset.name,
            model_name=MODEL,
            model=tpb.ModelSpec(mlp=tpb.MlpTemplate(hidden_units=[64])),
            hyperparameters=tpb.Hyperparameters(epochs=2, batch_size=64),
            seed=1,
        )
        job = (await training.SubmitJob(tpb.SubmitJobRequest(spec=spec))).job
        while job.state not in (tpb.JOB_STATE_SUCCEEDED, tpb.JOB_STATE_FAILED):
            await asyncio.sleep(0.5)
            job = (await training.GetJob(tpb.GetJobRequest(name=job.name))).job
        if job.state != tpb.JOB_STATE_SUCCEEDED:
            raise SystemExit(f"training failed: {job.error}")
        await registry_pb2_grpc.RegistryServiceStub(registry_channel).SetAlias(
            rpb.SetAliasRequest(
                model=MODEL,
                alias=PRODUCTION,
                version=job.registration.version,
                actor="bench",
                reason="monitoring overhead bench",
                override_gate=True,
            )
        )
        inference = inference_pb2_grpc.InferenceServiceStub(inference_channel)
        status = await wait_for_labels(inference, {PRODUCTION: job.registration.version})
        return x_test, status.versions[0].inputs[0].name


async def closed_loop(
    address: str, rows: np.ndarray, input_name: str, clients: int, seconds: float
) -> list[float]:
    """Latencies (s) of the calls that completed within `seconds` after a 2 s warm-up."""
    requests = [
        ipb.PredictRequest(model=MODEL, inputs={input_name: to_tensor(rows[i : i + 1])})
        for i in range(len(rows))
    ]
    latencies: list[float] = []
    async with open_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        warm_until = time.monotonic() + 2
        stop_at = warm_until + seconds

        async def client(offset: int) -> None:
            i = offset
            while (now := time.monotonic()) < stop_at:
                await stub.Predict(requests[i % len(requests)], timeout=30)
                if now >= warm_until:
                    latencies.append(time.monotonic() - now)
                i += clients

        await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies


def measure(config: Config, clients: int, seconds: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="tfmesh-monitoring-bench-") as work:
        home = Path(work)
        saved = dict(os.environ)
        os.environ.update(stack_environment(home, config))
        stack = LocalStack(home)
        try:
            services = stack.up(monitoring=config.prometheus)
            addresses = {s.name: s.address for s in services}
            rows, input_name = asyncio.run(serve_digits(addresses))
            rows = rows.astype(np.float32)
            latencies = asyncio.run(
                closed_loop(addresses["inference"], rows, input_name, clients, seconds)
            )
        finally:
            stack.down()
            os.environ.clear()
            os.environ.update(saved)
    ms = np.array(latencies) * 1000
    return Result(
        config.name,
        len(latencies),
        seconds,
        len(latencies) / seconds,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    results = []
    for config in CONFIGS:
        result = measure(config, args.clients, args.seconds)
        print(
            f"{result.config:<42} {result.requests_per_s:8.0f} req/s  "
            f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms"
        )
        results.append(result)
    baseline = results[0].requests_per_s
    ratios = {r.config: round(r.requests_per_s / baseline, 3) for r in results[1:]}
    for name, ratio in ratios.items():
        verdict = "MET" if ratio >= 0.95 else "MISSED"
        print(f"{name}: {ratio:.3f}x of off (target >= 0.95, {verdict})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "clients": args.clients,
                "results": [asdict(r) for r in results],
                "throughput_vs_off": ratios,
                "target": 0.95,
            },
            indent=2,
        )
    )
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
