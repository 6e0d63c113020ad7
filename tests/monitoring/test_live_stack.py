"""The whole stack, scraped by a real Prometheus (Debian's), driven as a user would.

One module-scoped stack (`tfmesh up --monitoring` on free loopback ports, a 1 s scrape
and rule interval, every request sampled for drift) gets a little of everything: the
digits sample imported, two short training jobs, v1 in production and v2 on a 20 %
canary, predictions pinned to each version (v2's inputs shifted by 8 grey levels, so its
drift is real), unpinned ones through the canary split, REST through the gateway, and a
few refused requests. Then: every panel of every dashboard returns data from the real
Prometheus, the drift score and alert go up for v2 only, the metric names follow the
conventions, and drift questions about unknown models get NOT_FOUND / 404."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.demo_calls import read_split, wait_for_labels
from cli.prometheus import LocalPrometheus
from cli.stack import LocalStack, ServiceSpec, built_services
from monitoring.panels import dashboard_files, panel_queries
from shared.aliases import CANARY, PRODUCTION
from shared.channels import open_channel
from shared.tensors import to_tensor
from tests.support.stack import (
    RunningStack,
    http_json,
    service_stubs,
    stack_environment,
    train,
)
from tfmesh.data.v1 import data_pb2 as dpb
from tfmesh.inference.v1 import inference_pb2 as ipb
from tfmesh.inference.v1 import inference_pb2_grpc
from tfmesh.registry.v1 import registry_pb2 as rpb
from tfmesh.training.v1 import training_pb2 as tpb

MODEL = "digits"
SHIFT = 8.0
ROWS_PER_REQUEST = 8


@dataclass
class LiveStack(RunningStack):
    prometheus: LocalPrometheus = field(init=False)

    def __post_init__(self) -> None:
        self.prometheus = LocalPrometheus(self.home)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    home = tmp_path_factory.mktemp("live")
    patch = pytest.MonkeyPatch()
    environment = stack_environment(
        home,
        TFMESH_PROMETHEUS_INTERVAL="1s",
        TFMESH_INFERENCE_MODELS=MODEL,
        TFMESH_INFERENCE_DRIFT_SAMPLING_RATE="1",
    )
    for name, value in environment.items():
        patch.setenv(name, value)
    stack = LocalStack(home)
    try:
        live = LiveStack(home, stack.up(monitoring=True), environment)
        asyncio.run(drive(live))
        # Two rule evaluations after the last request: every series has its newest sample.
        time.sleep(3)
        yield live
    finally:
        stack.down()
        patch.undo()


async def drive(live: LiveStack) -> None:
    async with service_stubs(live) as stubs:
        data, training, registry, inference = (
            stubs.data,
            stubs.training,
            stubs.registry,
            stubs.inference,
        )
        dataset = (await data.ImportSample(dpb.ImportSampleRequest(sample="digits"))).version
        x_test, _ = await read_split(data, dataset.name, dpb.SPLIT_TEST)
        spec = tpb.JobSpec(
            dataset_version=dataset.name,
            model_name=MODEL,
            model=tpb.ModelSpec(mlp=tpb.MlpTemplate(hidden_units=[16])),
            hyperparameters=tpb.Hyperparameters(epochs=2, batch_size=64, learning_rate=0.01),
            seed=1,
        )
        version1 = await train(training, spec)
        spec.seed = 2
        version2 = await train(training, spec)
        spec.seed = 3
        version3 = await train(training, spec)

        async def set_alias(alias: str, version: int, weight: int = 0) -> None:
            request = rpb.SetAliasRequest(
                model=MODEL,
                alias=alias,
                version=version,
                traffic_weight=weight,
                actor="test",
                reason="monitoring test",
                override_gate=alias == PRODUCTION,
            )
            await registry.SetAlias(request)

        # v3 is canary first, then v2 takes its place: a swap, and v3's unload.
        await set_alias(PRODUCTION, version1)
        await set_alias(CANARY, version3, 20)
        await wait_for_labels(inference, {PRODUCTION: version1, CANARY: version3})
        await set_alias(CANARY, version2, 20)
        status = await wait_for_labels(inference, {PRODUCTION: version1, CANARY: version2})
        input_name = status.versions[0].inputs[0].name

        async def predict(rows: np.ndarray, version: int = 0) -> None:
            tensor = to_tensor(rows.astype(np.float32))
            await inference.Predict(
                ipb.PredictRequest(model=MODEL, version=version, inputs={input_name: tensor})
            )

        # Enough rows for a drift score (services.inference.drift.MIN_ROWS) per version.
        for start in range(0, 240, ROWS_PER_REQUEST):
            rows = x_test[np.arange(start, start + ROWS_PER_REQUEST) % len(x_test)]
            await predict(rows, version1)
            await predict(rows + SHIFT, version2)
            await predict(rows)
        with pytest.raises(grpc.aio.AioRpcError):
            await inference.Predict(ipb.PredictRequest(model=MODEL))
    rest = {"inputs": {input_name: {"dtype": "float32", "data": x_test[:2].tolist()}}}
    gateway = live.address("gateway")
    assert http_json(f"http://{gateway}/api/v1/models/{MODEL}/predict", rest)[0] == 200
    # KServe v2 REST: forwarded by the gateway to the inference service's own REST port.
    v2 = {
        "inputs": [
            {
                "name": input_name,
                "datatype": "FP32",
                "shape": list(x_test[:2].shape),
                "data": x_test[:2].ravel().tolist(),
            }
        ]
    }
    assert http_json(f"http://{gateway}/v2/models/{MODEL}/infer", v2)[0] == 200


def test_every_dashboard_panel_returns_data_from_the_real_prometheus(live: LiveStack) -> None:
    empty, refused, asked = [], [], 0
    for path in dashboard_files():
        dashboard = json.loads(path.read_text())
        for title, expression in panel_queries(dashboard, "1m"):
            asked += 1
            try:
                if not live.prometheus.query(expression):
                    empty.append(f"{path.name} / {title}: {expression}")
            except Exception as error:  # noqa: BLE001 - every refusal is listed below
                refused.append(f"{path.name} / {title}: {error}")
    assert asked >= 20
    assert not refused, "\n".join(refused)
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_drift_is_scored_and_alerted_for_the_shifted_version_only(live: LiveStack) -> None:
    query = live.prometheus.query
    scores = {
        r["metric"]["version"]: float(r["value"][1])
        for r in query(f'max by (version) (tfmesh_inference_drift_score{{model="{MODEL}"}})')
    }
    assert scores["2"] > 0.25, scores
    assert scores["1"] < 0.25, scores
    # The alert holds for 5 minutes before it fires; its condition is met at once, so
    # Prometheus lists it pending (promtool's rule tests check the firing itself).
    alerts = query('ALERTS{alertname="TfmeshFeatureDrift"}')
    assert {a["metric"]["version"] for a in alerts} == {"2"}, alerts
    assert {a["metric"]["alertstate"] for a in alerts} <= {"pending", "firing"}

    async def drift() -> ipb.GetDriftResponse:
        async with open_channel(live.address("inference")) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            return await stub.GetDrift(ipb.GetDriftRequest(model=MODEL))

    reply = asyncio.run(drift())
    drifted = {v.version: any(f.drifted for f in v.features) for v in reply.versions}
    assert drifted == {1: False, 2: True}
    assert all(v.baseline.startswith("digits@") for v in reply.versions)
    assert all(v.window_rows >= 100 for v in reply.versions)


def test_drift_of_an_unknown_model_is_not_found(live: LiveStack) -> None:
    async def drift() -> grpc.StatusCode:
        async with open_channel(live.address("inference")) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetDrift(ipb.GetDriftRequest(model="nope"))
            return refused.value.code()

    assert asyncio.run(drift()) == grpc.StatusCode.NOT_FOUND
    gateway = live.address("gateway")
    status, body = http_json(f"http://{gateway}/api/v1/serving/nope/drift")
    assert status == 404, body
    status, body = http_json(f"http://{gateway}/api/v1/serving/{MODEL}/drift?version=2")
    assert status == 200 and body["versions"][0]["version"] in ("2", 2), body


def scrape(spec: ServiceSpec) -> str:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{spec.metrics_port}/metrics", timeout=10
    ) as answer:
        return answer.read().decode()


UNITS = ("_seconds", "_bytes", "_rows", "_ratio")


def test_metric_names_follow_the_conventions(live: LiveStack) -> None:
    problems = []
    seen: dict[str, set[str]] = {}
    for spec in live.services:
        for family in text_string_to_metric_families(scrape(spec)):
            if family.name.startswith(("python_", "process_")) or not family.samples:
                continue
            labels = set().union(*(sample.labels for sample in family.samples))
            seen.setdefault(spec.name, set()).add(family.name)
            if family.type == "counter":
                bad = [
                    s.name for s in family.samples if not s.name.endswith(("_total", "_created"))
                ]
                if bad:
                    problems.append(f"{spec.name}: counter samples without _total: {bad}")
            if family.type == "histogram" and not family.name.endswith(UNITS):
                problems.append(f"{spec.name}: histogram {family.name} names no unit")
            if (
                family.name.startswith("grpc_server_")
                and not {
                    "grpc_type",
                    "grpc_service",
                    "grpc_method",
                }
                <= labels
            ):
                problems.append(f"{spec.name}: {family.name} lacks the gRPC labels: {labels}")
            if family.name.startswith("tfmesh_inference_") and "model" not in labels:
                problems.append(f"{spec.name}: {family.name} has no model label")
    assert not problems, "\n".join(problems)
    every = {s.name for s in built_services()}
    assert every == set(seen)
    for name in every - {"gateway"}:
        assert "grpc_server_handled" in seen[name], name
    assert {"http_requests", "http_request_duration_seconds"} <= seen["gateway"]
    assert {"grpc_client_handled", "grpc_client_handling_seconds"} <= seen["gateway"]
    assert {
        "tfmesh_inference_requests",
        "tfmesh_inference_request_duration_seconds",
        "tfmesh_inference_model_loads",
        "tfmesh_inference_drift_score",
        "tfmesh_inference_route_weight_ratio",
        "http_requests",
    } <= seen["inference"]
    # The training API counts jobs by state; its worker process trains them.
    assert "tfmesh_training_jobs" in seen["training"]
    assert {"tfmesh_training_epoch_seconds", "tfmesh_training_jobs_finished"} <= seen["worker"]
    assert {"tfmesh_data_rows_ingested", "tfmesh_data_rows_rejected"} <= seen["data"]


def test_access_log_lines_name_the_model_version_and_trace(live: LiveStack) -> None:
    lines = [
        json.loads(line)
        for line in (live.home / "logs" / "gateway.log").read_text().splitlines()
        if line.startswith("{")
    ]
    access = {
        entry["path"]: entry
        for entry in lines
        if entry["name"] == "tfmesh.access" and entry["status"] == 200
    }
    for path in (f"/api/v1/models/{MODEL}/predict", f"/v2/models/{MODEL}/infer"):
        entry = access[path]
        assert entry["model"] == MODEL and entry["version"] in (1, 2), entry
        assert len(entry["trace_id"]) == 32 and entry["duration_ms"] > 0, entry
