"""The mesh's routing, for real: two release tracks of the inference service (real
`services.inference.server` processes on loopback, serving a no-op model as version 1 on
the stable track and version 2 on the canary track) behind a real Envoy whose configuration
is generated from istio/ (tests.deploy.mesh), with the pods labelled as k8s/base labels
them. No Istio control plane runs here; its data plane does.

The canary track runs two replicas: Envoy, like Istio, retries within the subset a request
was routed to (on another host, by the previous-hosts predicate), so retries and outlier
detection can save the requests of a killed canary pod only while the canary track has
another one. A whole track gone is a routing change (the next VirtualService stage), not a
retry."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from shared.tensors import to_tensor
from tests.deploy.conftest import load_yaml, pod_labels
from tests.deploy.envoy import Envoy
from tests.deploy.mesh import Pod, cluster_name, envoy_bootstrap
from tests.support.processes import ServiceProcess, service_process
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc

PORT = 50054
MODEL = "digits"
TRACK_HEADER = "x-tfmesh-track"
REQUEST = pb.PredictRequest(model=MODEL, inputs={"x": to_tensor(np.zeros((1, 64), np.float32))})


@dataclass
class Replica:
    process: ServiceProcess
    labels: dict[str, str]

    @property
    def pod(self) -> Pod:
        return Pod(self.labels, "127.0.0.1", self.process.port)


@dataclass
class Fleet:
    replicas: list[Replica] = field(default_factory=list)

    def pods(self) -> list[Pod]:
        return [r.pod for r in self.replicas]

    def track(self, version: str) -> list[Replica]:
        return [r for r in self.replicas if r.labels["version"] == version]

    def kill(self, replica: Replica) -> None:
        """SIGKILL, then drop it from the endpoints, as Kubernetes would once it noticed."""
        replica.process.kill()
        self.replicas.remove(replica)


def _replica(home: Path, model_version: int, labels: dict[str, str], name: str) -> Replica:
    config = home / f"{name}-models.json"
    config.write_text(
        json.dumps(
            {
                "models": [
                    {"name": MODEL, "runtime": "noop", "versions": [{"version": model_version}]}
                ]
            }
        )
    )
    process = service_process(
        "services.inference.server",
        "TFMESH_INFERENCE_",
        home / name,
        TFMESH_INFERENCE_MODEL_CONFIG_FILE=str(config),
    )
    (home / name).mkdir()
    return Replica(process, labels)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, base_resources):
    """One stable replica (model version 1) and two canary replicas (model version 2),
    labelled like the pods of inference-stable and inference-canary."""
    home = tmp_path_factory.mktemp("fleet")
    stable = pod_labels(base_resources, "inference-stable")
    canary = pod_labels(base_resources, "inference-canary")
    replicas = [
        _replica(home, 1, stable, "stable-0"),
        _replica(home, 2, canary, "canary-0"),
        _replica(home, 2, canary, "canary-1"),
    ]
    with ThreadPoolExecutor(len(replicas)) as pool:
        list(pool.map(lambda r: r.process.start(timeout_s=180), replicas))
    fleet = Fleet(replicas)
    yield fleet
    for replica in replicas:
        replica.process.stop_quietly()


@contextmanager
def mesh(stage: str, fleet: Fleet, folder: Path):
    """Envoy routing like istio/virtual-service-inference-<stage>.yaml and
    istio/destination-rule-inference.yaml, in front of the fleet's live pods."""
    bootstrap = envoy_bootstrap(
        load_yaml(f"istio/virtual-service-inference-{stage}.yaml"),
        load_yaml("istio/destination-rule-inference.yaml"),
        fleet.pods(),
        PORT,
    )
    envoy = Envoy(bootstrap, folder).start()
    try:
        yield envoy
    finally:
        envoy.kill()


async def drive(
    address: str,
    total: int,
    concurrency: int = 16,
    metadata: tuple[tuple[str, str], ...] = (),
    progress: asyncio.Event | None = None,
    progress_at: int = 0,
) -> list[int | grpc.StatusCode]:
    """`total` unpinned Predict calls through the mesh; each result is the model version that
    answered or the status code of the failure. Sets `progress` after `progress_at` results."""
    results: list[int | grpc.StatusCode] = []
    remaining = iter(range(total))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def client() -> None:
            for _ in remaining:
                try:
                    reply = await stub.Predict(REQUEST, timeout=10, metadata=metadata)
                    results.append(reply.version)
                except grpc.aio.AioRpcError as error:
                    results.append(error.code())
                if progress is not None and len(results) == progress_at:
                    progress.set()

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


@pytest.mark.timeout(240)
async def test_ninety_ten_split_within_three_points(fleet, tmp_path):
    with mesh("90-10", fleet, tmp_path) as envoy:
        results = await drive(envoy.address, 2000)
    counts = Counter(results)
    assert set(counts) == {1, 2}, f"every request answered by v1 or v2: {counts}"
    canary_share = counts[2] / len(results)
    assert 0.07 <= canary_share <= 0.13, f"canary share {canary_share:.3f}, wanted 0.10 +- 0.03"


@pytest.mark.timeout(240)
async def test_header_routed_canary_sends_tagged_requests_to_v2_only(fleet, tmp_path):
    tagged = ((TRACK_HEADER, "canary"),)
    with mesh("header-canary", fleet, tmp_path) as envoy:
        canary = await drive(envoy.address, 300, metadata=tagged)
        untagged = await drive(envoy.address, 300)
        other_value = await drive(envoy.address, 100, metadata=((TRACK_HEADER, "stable"),))
        async with grpc.aio.insecure_channel(envoy.address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            stream = stub.PredictStream(metadata=tagged, timeout=10)
            await stream.write(
                pb.PredictRequest(model=MODEL, inputs=REQUEST.inputs, request_id="s")
            )
            streamed = await stream.read()
            await stream.done_writing()
    assert Counter(canary) == {2: 300}
    assert Counter(untagged) == {1: 300}
    assert Counter(other_value) == {1: 100}
    assert streamed.response.version == 2, "PredictStream's own route honours the header too"


@pytest.mark.timeout(300)
async def test_killed_canary_pod_costs_no_requests_through_retries(fleet, tmp_path):
    """SIGKILL one canary pod a third of the way through 3,000 requests at a 90/10 split:
    Envoy retries the requests that hit it (in flight or refused) on the other canary pod and
    ejects it; at least 99.9% of requests succeed, and the canary track keeps serving."""
    victim = fleet.track("v2")[-1]
    total = 3000
    with mesh("90-10", fleet, tmp_path) as envoy:
        third = asyncio.Event()
        load = asyncio.create_task(
            drive(envoy.address, total, progress=third, progress_at=total // 3)
        )
        await third.wait()
        await asyncio.to_thread(fleet.kill, victim)
        results = await load
        counters = envoy.counters()
    canary_cluster = f"cluster.{cluster_name(PORT, 'v2', 'inference')}"
    succeeded = sum(1 for r in results if isinstance(r, int))
    failures = Counter(r for r in results if not isinstance(r, int))
    assert succeeded / total >= 0.999, f"{succeeded}/{total} succeeded; failures {failures}"
    assert counters[f"{canary_cluster}.upstream_rq_retry"] > 0, "requests hit the killed pod"
    assert counters[f"{canary_cluster}.outlier_detection.ejections_enforced_total"] >= 1
    after_kill = results[total // 3 + 50 :]
    assert Counter(after_kill)[2] > 0, "the surviving canary pod kept taking the canary's share"
