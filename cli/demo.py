"""`make demo`: the model lifecycle end to end on embedded defaults, narrated.

Starts the local stack, imports scikit-learn's digits into the data service, trains a
model with a small hyperparameter search (progress shown), registers it and promotes v1,
predicts the test split through the inference service's three APIs (tfmesh, TF Serving,
KServe v2), each over gRPC and over the REST gateway, and checks that the accuracies
agree; sets a rollout policy and trains v2, which the registry's controller rolls out by
itself (canary 10% -> 50% -> 100%, then promotion) while the test split is sent as traffic
and its true labels as feedback, printing each step and its evidence; shows the traffic
move, reads live figures of that traffic back from the stack's Prometheus, then stops the
stack. It ends with a summary table and writes a training-curve PNG."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.prometheus import LocalPrometheus
from cli.stack import LocalStack, built_services, stack_authorization, stack_tls
from inference import grpc_predict_v2_pb2 as v2
from inference import grpc_predict_v2_pb2_grpc as v2_grpc
from shared.aliases import PRODUCTION
from shared.channels import open_channel
from shared.rollout_metrics import BY_NUMBER
from shared.settings import default_home
from shared.tensors import from_tensor, to_tensor
from shared.tls import TlsFiles
from tfmesh.data.v1 import data_pb2 as dpb
from tfmesh.data.v1 import data_pb2_grpc
from tfmesh.inference.v1 import inference_pb2 as ipb
from tfmesh.inference.v1 import inference_pb2_grpc
from tfmesh.registry.v1 import registry_pb2 as rpb
from tfmesh.registry.v1 import registry_pb2_grpc
from tfmesh.training.v1 import training_pb2 as tpb
from tfmesh.training.v1 import training_pb2_grpc

MODEL = "digits"
# Smaller than the test split, so whole-split requests show the large-batch splitting.
MAX_BATCH_SIZE = 32
console = Console()


def step(text: str) -> None:
    console.rule(f"[bold]{text}")


@dataclass
class Curves:
    """Per-epoch metrics of each trained version, for the PNG."""

    by_version: dict[str, list[dict[str, float]]] = field(default_factory=dict)


@dataclass
class Summary:
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, value: object) -> None:
        self.rows.append((what, str(value)))
        console.print(f"  {what}: [bold]{value}[/bold]")


class Demo:
    def __init__(
        self,
        addresses: dict[str, str],
        home: Path,
        tls: TlsFiles,
        authorization: Callable[[], str] | None,
    ) -> None:
        self.addresses = addresses
        self.home = home
        self.tls = tls
        self.authorization = authorization
        self.summary = Summary()
        self.curves = Curves()

    async def run(self) -> None:
        tls = self.tls
        auth = self.authorization
        data = data_pb2_grpc.DataServiceStub(
            open_channel(self.addresses["data"], tls=tls, authorization=auth)
        )
        training = training_pb2_grpc.TrainingServiceStub(
            open_channel(self.addresses["training"], tls=tls, authorization=auth)
        )
        registry = registry_pb2_grpc.RegistryServiceStub(
            open_channel(self.addresses["registry"], tls=tls, authorization=auth)
        )
        inference_channel = open_channel(self.addresses["inference"], tls=tls, authorization=auth)
        inference = inference_pb2_grpc.InferenceServiceStub(inference_channel)

        step("1. import scikit-learn's digits into the data service")
        imported = await data.ImportSample(dpb.ImportSampleRequest(sample="digits"))
        dataset = imported.version
        counts = dataset.rows
        self.summary.add("dataset version", dataset.name)
        self.summary.add(
            "rows (train / validation / test)",
            f"{counts.train} / {counts.validation} / {counts.test}",
        )
        x_test, y_test = await read_split(data, dataset.name, dpb.SPLIT_TEST)

        step("2. train v1 with a small hyperparameter search, register, request promotion")
        spec = tpb.JobSpec(
            dataset_version=dataset.name,
            model_name=MODEL,
            model=tpb.ModelSpec(mlp=tpb.MlpTemplate(hidden_units=[64])),
            hyperparameters=tpb.Hyperparameters(
                optimizer=tpb.OPTIMIZER_ADAM, learning_rate=0.003, epochs=15, batch_size=32
            ),
            search=tpb.SearchSpace(
                parameters=[
                    tpb.SearchParameter(
                        name="learning_rate",
                        float_range=tpb.FloatRange(low=1e-3, high=1e-2, log=True),
                    ),
                    tpb.SearchParameter(
                        name="hidden_units", choice=tpb.Choice(values=["16", "32,16"])
                    ),
                ],
                max_trials=3,
                epochs_per_trial=3,
            ),
            request_promotion=True,
            seed=7,
        )
        v1 = await self.train(training, spec, "v1")
        self.summary.add("v1 test accuracy (training service)", f"{v1.metrics['accuracy']:.4f}")
        self.summary.add("v1 registration", registration_text(v1.registration))
        version1 = v1.registration.version
        if not v1.registration.promoted:
            await registry.SetAlias(
                rpb.SetAliasRequest(
                    model=MODEL,
                    alias=PRODUCTION,
                    version=version1,
                    actor="demo",
                    reason="demo: serve the version just trained",
                    override_gate=True,
                )
            )
            self.summary.add("v1 promoted by override", "gate refused; overridden with a reason")

        step("3. predict the test split over gRPC and REST, through all three APIs")
        status = await wait_for_labels(inference, {PRODUCTION: version1})
        input_name = status.versions[0].inputs[0].name
        accuracies = {
            "tfmesh gRPC": await predict_tfmesh(inference, x_test, y_test, input_name),
            "TF Serving gRPC": await asyncio.to_thread(
                predict_tf_serving,
                self.addresses["inference"],
                x_test,
                y_test,
                input_name,
                tls,
                auth,
            ),
            "KServe v2 gRPC": await predict_kserve(inference_channel, x_test, y_test, input_name),
            **await predict_rest(self.addresses["gateway"], x_test, y_test, input_name, tls, auth),
        }
        for api, accuracy in accuracies.items():
            self.summary.add(f"served accuracy via {api}", f"{accuracy:.4f}")
        agree = len({round(a, 6) for a in accuracies.values()}) == 1
        self.summary.add("gRPC and REST, all three APIs agree", "yes" if agree else "NO")
        if not agree:
            raise SystemExit("served accuracies differ between APIs")

        step("4. set a rollout policy, train v2: the controller rolls it out on live evidence")
        await registry.SetRolloutPolicy(rpb.SetRolloutPolicyRequest(policy=ROLLOUT_POLICY))
        self.summary.add("rollout policy", policy_text(ROLLOUT_POLICY))
        spec2 = tpb.JobSpec()
        spec2.CopyFrom(spec)
        spec2.ClearField("search")
        spec2.request_promotion = False
        spec2.model.mlp.CopyFrom(tpb.MlpTemplate(hidden_units=[256, 128], dropout=0.1))
        spec2.hyperparameters.epochs = 25
        v2_job = await self.train(training, spec2, "v2")
        version2 = v2_job.registration.version
        self.summary.add("v2 test accuracy (training service)", f"{v2_job.metrics['accuracy']:.4f}")
        rollout = await watch_rollout(registry, inference, version2, x_test, y_test, input_name)
        state = rpb.Rollout.State.Name(rollout.state).removeprefix("STATE_").lower()
        self.summary.add(
            "rollout of v2",
            " -> ".join(f"{e.kind} {e.traffic_weight}%" for e in rollout.events) + f": {state}",
        )
        if rollout.state != rpb.Rollout.STATE_PROMOTED:
            raise SystemExit(f"the rollout of v2 ended {state}: {rollout.events[-1].detail}")

        step("5. v2 serves all traffic")
        await wait_for_labels(inference, {PRODUCTION: version2})
        split = await observe_split(inference, x_test, input_name, 200)
        self.summary.add("after promotion: share served by v2", f"{split[version2] / 200:.1%}")
        self.summary.add(
            "served accuracy of v2 (tfmesh gRPC)",
            f"{await predict_tfmesh(inference, x_test, y_test, input_name):.4f}",
        )
        history = await registry.ListAliasHistory(rpb.ListAliasHistoryRequest(model=MODEL))
        self.summary.add("audited alias changes", len(history.changes))

        step("6. read the live figures back from Prometheus")
        await asyncio.to_thread(self.show_monitoring, version2)

    def show_monitoring(self, version2: int) -> None:
        prometheus = LocalPrometheus(self.home)
        self.summary.add("Prometheus", prometheus.url)
        # The last requests are in once a scrape after them has counted v2's answers.
        served = f'sum by (version) (tfmesh_inference_requests_total{{model="{MODEL}"}})'
        deadline = time.monotonic() + 60
        by_version: dict[str, float] = {}
        while time.monotonic() < deadline:
            by_version = {
                r["metric"]["version"]: float(r["value"][1]) for r in prometheus.query(served)
            }
            if by_version.get(str(version2), 0) >= 200:
                break
            time.sleep(1)
        for version, count in sorted(by_version.items()):
            self.summary.add(f"requests answered by v{version} (Prometheus)", f"{count:.0f}")
        p99 = prometheus.query(
            "histogram_quantile(0.99, sum by (le) (rate("
            f'tfmesh_inference_request_duration_seconds_bucket{{model="{MODEL}"}}[5m])))'
        )
        if p99:
            self.summary.add(
                "p99 prediction latency, last 5 min (Prometheus)",
                f"{float(p99[0]['value'][1]) * 1000:.1f} ms",
            )
        queued = prometheus.query(
            f'max_over_time(sum(tfmesh_inference_queued_rows{{model="{MODEL}"}})[10m:])'
        )
        if queued:
            self.summary.add(
                "most rows queued at a scrape (Prometheus)", f"{float(queued[0]['value'][1]):.0f}"
            )

    async def train(self, training, spec: tpb.JobSpec, label: str) -> tpb.Job:  # type: ignore[no-untyped-def]
        submitted = await training.SubmitJob(tpb.SubmitJobRequest(spec=spec))
        name = submitted.job.name
        epochs: list[dict[str, float]] = []
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} {task.fields[metrics]}"),
            TimeElapsedColumn(),
        ]
        with Progress(*columns, console=console) as progress:
            tasks: dict[int, TaskID] = {}
            async for event in training.WatchJob(tpb.WatchJobRequest(name=name)):
                kind = event.WhichOneof("event")
                if kind == "epoch":
                    e = event.epoch
                    title = f"{label} trial {e.trial}" if e.trial else f"{label} final"
                    if e.trial not in tasks:
                        tasks[e.trial] = progress.add_task(title, total=e.epochs, metrics="")
                    shown = " ".join(
                        f"{k}={v:.3f}" for k, v in sorted(e.metrics.items()) if "acc" in k
                    )
                    progress.update(tasks[e.trial], completed=e.epoch, metrics=shown)
                    if not e.trial:
                        epochs.append(dict(e.metrics))
                elif kind == "trial":
                    params = ", ".join(f"{k}={v}" for k, v in sorted(event.trial.params.items()))
                    progress.console.print(
                        f"  trial {event.trial.number + 1}: {params} -> {event.trial.objective:.4f}"
                    )
                elif kind == "state_change":
                    state = tpb.JobState.Name(event.state_change.state)
                    if state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
                        break
        job = (await training.GetJob(tpb.GetJobRequest(name=name))).job
        if job.state != tpb.JOB_STATE_SUCCEEDED:
            raise SystemExit(f"job {name} ended {tpb.JobState.Name(job.state)}: {job.error}")
        self.curves.by_version[label] = epochs
        return job


ROLLOUT_POLICY = rpb.RolloutPolicy(
    model=MODEL,
    steps=[10, 50, 100],
    step_seconds=2,
    step_min_requests=60,
    step_timeout_seconds=90,
    checks=[
        rpb.RolloutCheck(
            metric=rpb.RolloutCheck.METRIC_ERROR_RATIO, max_degradation=0.02, min_samples=50
        ),
        rpb.RolloutCheck(
            metric=rpb.RolloutCheck.METRIC_LATENCY_P99, max_degradation=1.0, min_samples=50
        ),
        rpb.RolloutCheck(
            metric=rpb.RolloutCheck.METRIC_LIVE_ACCURACY, max_degradation=0.05, min_samples=100
        ),
    ],
    confidence=0.99,
)


def policy_text(policy: rpb.RolloutPolicy) -> str:
    checks = ", ".join(
        f"{BY_NUMBER[c.metric]} within {c.max_degradation:g} (n>={c.min_samples})"
        for c in policy.checks
    )
    steps = " -> ".join(f"{s}%" for s in policy.steps)
    return f"{steps}, each >= {policy.step_seconds:g} s; {checks}"


async def watch_rollout(  # type: ignore[no-untyped-def]
    registry, inference, version: int, x: np.ndarray, y: np.ndarray, input_name: str
) -> rpb.Rollout:
    """Send the test split as unpinned traffic, with each answer's true label as feedback,
    and print the rollout's events as the controller records them, until it ends."""
    feedback: list[ipb.FeedbackItem] = []
    stop = asyncio.Event()

    async def client(offset: int) -> None:
        row = offset
        while not stop.is_set():
            request = ipb.PredictRequest(
                model=MODEL, inputs={input_name: to_tensor(x[row % len(x)][None])}
            )
            answer = await inference.Predict(request)
            feedback.append(
                ipb.FeedbackItem(request_id=answer.request_id, labels=[float(y[row % len(x)])])
            )
            row += 8

    clients = [asyncio.create_task(client(i)) for i in range(8)]
    shown = 0
    deadline = time.monotonic() + 300
    try:
        while True:
            await asyncio.sleep(0.25)
            batch, feedback[:] = list(feedback), []
            if batch:
                await inference.ReportFeedback(ipb.ReportFeedbackRequest(model=MODEL, items=batch))
            try:
                reply = await registry.GetRollout(rpb.GetRolloutRequest(model=MODEL))
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                continue
            rollout = reply.rollout
            if rollout.version != version:
                continue
            for event in rollout.events[shown:]:
                console.print(
                    f"  [bold]{event.kind} {event.traffic_weight}%[/bold]: {event.detail}"
                )
            shown = len(rollout.events)
            if rollout.state not in (rpb.Rollout.STATE_RUNNING, rpb.Rollout.STATE_PAUSED):
                return rollout
            if time.monotonic() > deadline:
                raise SystemExit(f"the rollout of v{version} did not end in 300 s")
    finally:
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)


def registration_text(registration: tpb.Registration) -> str:
    text = f"{registration.model} v{registration.version}"
    if registration.promoted:
        return text + ", promoted to production"
    return text + f", not promoted ({registration.promotion_message or 'not requested'})"


async def read_split(
    data, version: str, split: dpb.Split.ValueType
) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    features, labels = [], []
    async for batch in data.ReadBatches(dpb.ReadBatchesRequest(version=version, split=split)):
        features.append(from_tensor(batch.features))
        labels.append(from_tensor(batch.labels))
    return np.concatenate(features), np.concatenate(labels)


async def wait_for_labels(inference, labels: dict[str, int], timeout_s: float = 120):  # type: ignore[no-untyped-def]
    """Wait until the inference service serves each label at the given version."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = None
        try:
            reply = await inference.GetModelStatus(ipb.GetModelStatusRequest(model=MODEL))
            status = reply.status
            served = {
                label: v.version
                for v in status.versions
                if v.state == ipb.VersionStatus.STATE_AVAILABLE
                for label in v.labels
            }
            if all(served.get(label) == version for label, version in labels.items()):
                return status
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        if time.monotonic() > deadline:
            raise SystemExit(f"inference did not serve {labels} in {timeout_s} s: {status}")
        await asyncio.sleep(0.2)


async def predict_tfmesh(inference, x: np.ndarray, y: np.ndarray, input_name: str) -> float:  # type: ignore[no-untyped-def]
    """Concurrent one-row requests, so the dynamic batcher has something to batch."""

    async def one(row: np.ndarray) -> int:
        request = ipb.PredictRequest(model=MODEL, inputs={input_name: to_tensor(row[None])})
        reply = await inference.Predict(request)
        scores = from_tensor(next(iter(reply.outputs.values())))
        return int(scores.argmax(axis=-1)[0])

    predicted = await asyncio.gather(*(one(row) for row in x))
    return float(np.mean(np.array(predicted) == y))


def predict_tf_serving(
    address: str,
    x: np.ndarray,
    y: np.ndarray,
    input_name: str,
    tls: TlsFiles,
    authorization: Callable[[], str] | None,
) -> float:
    """TF Serving's own client stubs, used exactly as an existing TF Serving client would."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    credentials = tls.channel_credentials()
    with (
        grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    ) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.model_spec.version_label = PRODUCTION
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto(x.astype(np.float32)))
        metadata = (("authorization", authorization()),) if authorization else ()
        reply = stub.Predict(request, timeout=30, metadata=metadata)
    scores = tf.make_ndarray(next(iter(reply.outputs.values())))
    return float(np.mean(scores.argmax(axis=-1) == y))


async def predict_kserve(channel, x: np.ndarray, y: np.ndarray, input_name: str) -> float:  # type: ignore[no-untyped-def]
    """The Open Inference Protocol with raw_input_contents, as a Triton client sends it."""
    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    request = v2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=input_name, datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    reply = await stub.ModelInfer(request)
    output = reply.outputs[0]
    scores = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(output.shape)
    return float(np.mean(scores.argmax(axis=-1) == y))


async def predict_rest(
    gateway: str,
    x: np.ndarray,
    y: np.ndarray,
    input_name: str,
    tls: TlsFiles,
    authorization: Callable[[], str] | None,
) -> dict[str, float]:
    """The same predictions over the REST gateway: its own API, TF Serving's, KServe v2's."""
    data = x.astype(np.float32).tolist()
    base = f"{tls.scheme()}://{gateway}"
    verify = tls.client_context() or True
    headers = {"authorization": authorization()} if authorization else {}
    async with httpx.AsyncClient(
        base_url=base, timeout=60, verify=verify, headers=headers
    ) as client:
        own = await client.post(
            f"/api/v1/models/{MODEL}/predict",
            json={"inputs": {input_name: {"dtype": "float32", "data": data}}},
        )
        tf_serving = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": data})
        kserve = await client.post(
            f"/v2/models/{MODEL}/infer",
            json={
                "inputs": [
                    {
                        "name": input_name,
                        "shape": list(x.shape),
                        "datatype": "FP32",
                        "data": x.astype(np.float32).ravel().tolist(),
                    }
                ]
            },
        )
    kserve_output = kserve.raise_for_status().json()["outputs"][0]
    scores = {
        "tfmesh REST": next(iter(own.raise_for_status().json()["outputs"].values()))["data"],
        "TF Serving REST": tf_serving.raise_for_status().json()["predictions"],
        "KServe v2 REST": np.reshape(kserve_output["data"], kserve_output["shape"]),
    }
    return {api: float(np.mean(np.argmax(s, axis=-1) == y)) for api, s in scores.items()}


async def observe_split(inference, x: np.ndarray, input_name: str, count: int) -> Counter[int]:  # type: ignore[no-untyped-def]
    rows = x[np.arange(count) % len(x)]

    async def one(row: np.ndarray) -> int:
        request = ipb.PredictRequest(model=MODEL, inputs={input_name: to_tensor(row[None])})
        return (await inference.Predict(request)).version

    return Counter(await asyncio.gather(*(one(row) for row in rows)))


def write_curves(curves: Curves, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, epochs in curves.by_version.items():
        for axis, metric in zip(axes, ("accuracy", "loss"), strict=True):
            for prefix in ("", "val_"):
                values = [e[prefix + metric] for e in epochs if prefix + metric in e]
                axis.plot(range(1, len(values) + 1), values, label=f"{label} {prefix}{metric}")
    for axis, metric in zip(axes, ("accuracy", "loss"), strict=True):
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cli.demo", description=__doc__)
    parser.add_argument("--tls", action="store_true", help="run the stack on mutual TLS")
    parser.add_argument("--auth", action="store_true", help="every call needs a token")
    args = parser.parse_args(argv)
    started = time.monotonic()
    home = default_home()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TFMESH_INFERENCE_MODELS", MODEL)
    os.environ.setdefault("TFMESH_INFERENCE_MAX_BATCH_SIZE", str(MAX_BATCH_SIZE))
    stack = LocalStack(home)
    step("0. start the local stack")
    stack.down()
    try:
        # Inside the try: a part that fails to start must not leave the others running.
        stack.up(monitoring=True, tls=args.tls, auth=args.auth)
        addresses = {spec.name: spec.address for spec in built_services()}
        demo = Demo(addresses, home, stack_tls(home), stack_authorization(home))
        asyncio.run(demo.run())
        png = home / "demo" / "training_curve.png"
        write_curves(demo.curves, png)
        demo.summary.add("training curves", png)
    finally:
        step("7. stop the local stack")
        stack.down()
    table = Table(title="tfmesh demo summary", title_justify="left")
    table.add_column("what")
    table.add_column("result")
    for what, value in demo.summary.rows:
        table.add_row(what, value)
    console.print(table)
    console.print(f"demo finished in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
