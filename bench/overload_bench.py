"""How fast an overloaded inference service says no: the time to a RESOURCE_EXHAUSTED answer.

A no-op model that takes 50 ms a batch, with a small queue (batches of 4, one queued
batch), is driven by `--clients` closed-loop gRPC clients (one row a request) for
`--seconds`, served by one process and by the default front ends. Most requests find the
queue full; each is timed from send to answer at the client. A refusal is decided before
any work (services.inference.batcher), so it should come back in about the time of a
no-op call, whatever the model is doing: the target is a p99 within 5 ms at 32 clients.
Two kinds of clients: ones that retry at once (the refusals themselves then saturate the
server, and their latency is the server's queue of refusals: Little's law), and ones that
pause 50 ms after a refusal, as a client honouring the refusal's RetryInfo would. The floor
of this machine comes with them: the same clients, pausing 50 ms after each call, calling
KServe's `ServerLive` (no work at all, the same interceptors) on the same server, so a
refusal's latency reads against the fastest answer the server gives under that load.
Results go to `bench/results/overload.json`.

    python -m bench.overload_bench [--clients 32] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from bench.inference_bench import start_server
from inference import grpc_predict_v2_pb2 as v2
from inference import grpc_predict_v2_pb2_grpc as v2_grpc
from shared.tensors import to_tensor
from tfmesh.inference.v1 import inference_pb2 as ipb
from tfmesh.inference.v1 import inference_pb2_grpc

RESULTS = Path(__file__).resolve().parent / "results" / "overload.json"
MODEL = "slow"
TARGET_P99_MS = 5.0


def config() -> dict:
    return {
        "models": [
            {
                "name": MODEL,
                "runtime": "noop",
                "runtime_options": {
                    "inputs": [{"name": "x", "dtype": "float32", "shape": [64]}],
                    "delay_ms": 50,
                },
                "versions": [{"version": 1}],
                "batching": {
                    "max_batch_size": 4,
                    "allowed_batch_sizes": [4],
                    "batch_timeout_micros": 0,
                    "num_batch_threads": 1,
                    "max_enqueued_batches": 1,
                },
            }
        ]
    }


async def drive(
    address: str, clients: int, seconds: float, pause_s: float, live: bool = False
) -> dict[str, list[float]]:
    """Latencies (s) by status code name, after a 1 s warm-up; each client waits `pause_s`
    after a refusal (`live`: calls `ServerLive` instead, pausing after every call)."""
    request = ipb.PredictRequest(
        model=MODEL, inputs={"x": to_tensor(np.zeros((1, 64), np.float32))}
    )
    found: dict[str, list[float]] = {}
    warm_until = time.monotonic() + 1
    stop_at = warm_until + seconds
    channels = [grpc.aio.insecure_channel(address) for _ in range(min(clients, 8))]

    async def client(index: int) -> None:
        channel = channels[index % len(channels)]
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        liveness = v2_grpc.GRPCInferenceServiceStub(channel)
        while (started := time.monotonic()) < stop_at:
            try:
                if live:
                    await liveness.ServerLive(v2.ServerLiveRequest(), timeout=10)
                else:
                    await stub.Predict(request, timeout=10)
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            if started >= warm_until:
                found.setdefault(code, []).append(time.monotonic() - started)
            if (code != "OK" or live) and pause_s:
                await asyncio.sleep(pause_s)

    await asyncio.gather(*(client(i) for i in range(clients)))
    for channel in channels:
        await channel.close()
    return found


def summary(latencies: dict[str, list[float]], seconds: float) -> dict[str, dict[str, float]]:
    return {
        code: {
            "count": len(values),
            "per_s": round(len(values) / seconds, 1),
            "p50_ms": round(float(np.percentile(values, 50)) * 1000, 3),
            "p99_ms": round(float(np.percentile(values, 99)) * 1000, 3),
        }
        for code, values in sorted(latencies.items())
    }


def report(label: str, result: dict[str, dict[str, float]]) -> None:
    refused = result.get("RESOURCE_EXHAUSTED", {})
    served = result.get("OK", {})
    verdict = "MET" if refused and refused["p99_ms"] <= TARGET_P99_MS else "MISSED"
    print(
        f"{label:<32} refused {refused.get('per_s', 0):7.0f}/s "
        f"p50 {refused.get('p50_ms', 0):6.2f} ms p99 {refused.get('p99_ms', 0):6.2f} ms "
        f"({verdict}, target p99 <= {TARGET_P99_MS} ms); "
        f"served {served.get('per_s', 0):.0f}/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    frontends = [0, max(1, (os.cpu_count() or 1))]
    results = {}
    with tempfile.TemporaryDirectory(prefix="tfmesh-overload-") as work:
        for count in frontends:
            server = start_server(Path(work), config(), "noop", count)
            shape = f"{count} front ends" if count else "one process"
            try:
                # The floor first: the fastest answer under the same clients, no refusal.
                floor = asyncio.run(drive(server.address, args.clients, args.seconds, 0.05, True))
                results[f"{shape}, floor: ServerLive pausing 50 ms"] = summary(floor, args.seconds)
                ok = results[f"{shape}, floor: ServerLive pausing 50 ms"].get("OK", {})
                print(
                    f"{shape + ', floor (ServerLive)':<32} answered {ok.get('per_s', 0):7.0f}/s "
                    f"p50 {ok.get('p50_ms', 0):6.2f} ms p99 {ok.get('p99_ms', 0):6.2f} ms"
                )
                for pause_s in (0.0, 0.05):
                    latencies = asyncio.run(
                        drive(server.address, args.clients, args.seconds, pause_s)
                    )
                    label = f"{shape}, {'pausing 50 ms' if pause_s else 'retrying at once'}"
                    results[label] = summary(latencies, args.seconds)
                    report(label, results[label])
            finally:
                server.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "clients": args.clients,
                "seconds": args.seconds,
                "model": "no-op, 50 ms a batch of 4, one queued batch",
                "results": results,
                "target_p99_ms": TARGET_P99_MS,
            },
            indent=2,
        )
    )
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
