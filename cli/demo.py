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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.demo_calls import (
    MODEL,
    observe_split,
    predict_kserve,
    predict_rest,
    predict_tf_serving,
    predict_tfmesh,
    read_split,
    wait_for_labels,
)
from cli.demo_rollout import ROLLOUT_POLICY, policy_text, watch_rollout
from cli.prometheus import LocalPrometheus
from cli.stack import LocalStack, built_services, stack_authorization, stack_tls
from shared.aliases import PRODUCTION
from shared.channels import open_channel
from shared.settings import default_home
from shared.tls import TlsFiles
from tfmesh.data.v1 import data_pb2 as dpb
from tfmesh.data.v1 import data_pb2_grpc
from tfmesh.inference.v1 import inference_pb2_grpc
from tfmesh.registry.v1 import registry_pb2 as rpb
from tfmesh.registry.v1 import registry_pb2_grpc
from tfmesh.training.v1 import training_pb2 as tpb
from tfmesh.training.v1 import training_pb2_grpc

# Smaller than the test split, so whole-split requests show the large-batch splitting.
MAX_BATCH_SIZE = 32
console = Console()
# A split's features and labels.
Split = tuple[np.ndarray, np.ndarray]


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
        tls, auth = self.tls, self.authorization
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
        dataset = await self.import_digits(data)
        test = await read_split(data, dataset, dpb.SPLIT_TEST)
        step("2. train v1 with a small hyperparameter search, register, request promotion")
        spec = v1_spec(dataset)
        version1 = await self.train_v1(training, registry, spec)
        step("3. predict the test split over gRPC and REST, through all three APIs")
        status = await wait_for_labels(inference, {PRODUCTION: version1})
        input_name = status.versions[0].inputs[0].name
        await self.predict_everywhere(inference, inference_channel, test, input_name)
        step("4. set a rollout policy, train v2: the controller rolls it out on live evidence")
        version2 = await self.roll_out_v2(training, registry, inference, spec, test, input_name)
        step("5. v2 serves all traffic")
        await self.show_v2_serving(registry, inference, test, input_name, version2)
        step("6. read the live figures back from Prometheus")
        await asyncio.to_thread(self.show_monitoring, version2)

    async def import_digits(self, data) -> str:  # type: ignore[no-untyped-def]
        imported = await data.ImportSample(dpb.ImportSampleRequest(sample="digits"))
        dataset = imported.version
        counts = dataset.rows
        self.summary.add("dataset version", dataset.name)
        self.summary.add(
            "rows (train / validation / test)",
            f"{counts.train} / {counts.validation} / {counts.test}",
        )
        return str(dataset.name)

    async def train_v1(self, training, registry, spec: tpb.JobSpec) -> int:  # type: ignore[no-untyped-def]
        v1 = await self.train(training, spec, "v1")
        self.summary.add("v1 test accuracy (training service)", f"{v1.metrics['accuracy']:.4f}")
        self.summary.add("v1 registration", registration_text(v1.registration))
        version1 = int(v1.registration.version)
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
        return version1

    async def predict_everywhere(  # type: ignore[no-untyped-def]
        self, inference, inference_channel, test: Split, input_name: str
    ) -> None:
        x, y = test
        tls, auth = self.tls, self.authorization
        address = self.addresses["inference"]
        accuracies = {
            "tfmesh gRPC": await predict_tfmesh(inference, x, y, input_name),
            "TF Serving gRPC": await asyncio.to_thread(
                predict_tf_serving, address, x, y, input_name, tls, auth
            ),
            "KServe v2 gRPC": await predict_kserve(inference_channel, x, y, input_name),
            **await predict_rest(self.addresses["gateway"], x, y, input_name, tls, auth),
        }
        for api, accuracy in accuracies.items():
            self.summary.add(f"served accuracy via {api}", f"{accuracy:.4f}")
        agree = len({round(a, 6) for a in accuracies.values()}) == 1
        self.summary.add("gRPC and REST, all three APIs agree", "yes" if agree else "NO")
        if not agree:
            raise SystemExit("served accuracies differ between APIs")

    async def roll_out_v2(  # type: ignore[no-untyped-def]
        self, training, registry, inference, spec: tpb.JobSpec, test: Split, input_name: str
    ) -> int:
        await registry.SetRolloutPolicy(rpb.SetRolloutPolicyRequest(policy=ROLLOUT_POLICY))
        self.summary.add("rollout policy", policy_text(ROLLOUT_POLICY))
        v2_job = await self.train(training, v2_spec(spec), "v2")
        version2 = int(v2_job.registration.version)
        self.summary.add("v2 test accuracy (training service)", f"{v2_job.metrics['accuracy']:.4f}")
        x, y = test
        rollout = await watch_rollout(
            registry, inference, version2, x, y, input_name, console.print
        )
        state = rpb.Rollout.State.Name(rollout.state).removeprefix("STATE_").lower()
        self.summary.add(
            "rollout of v2",
            " -> ".join(f"{e.kind} {e.traffic_weight}%" for e in rollout.events) + f": {state}",
        )
        if rollout.state != rpb.Rollout.STATE_PROMOTED:
            raise SystemExit(f"the rollout of v2 ended {state}: {rollout.events[-1].detail}")
        return version2

    async def show_v2_serving(  # type: ignore[no-untyped-def]
        self, registry, inference, test: Split, input_name: str, version2: int
    ) -> None:
        x, y = test
        await wait_for_labels(inference, {PRODUCTION: version2})
        split = await observe_split(inference, x, input_name, 200)
        self.summary.add("after promotion: share served by v2", f"{split[version2] / 200:.1%}")
        self.summary.add(
            "served accuracy of v2 (tfmesh gRPC)",
            f"{await predict_tfmesh(inference, x, y, input_name):.4f}",
        )
        history = await registry.ListAliasHistory(rpb.ListAliasHistoryRequest(model=MODEL))
        self.summary.add("audited alias changes", len(history.changes))

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


def v1_spec(dataset: str) -> tpb.JobSpec:
    """v1: a small MLP with a three-trial search over learning rate and layers."""
    return tpb.JobSpec(
        dataset_version=dataset,
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
                tpb.SearchParameter(name="hidden_units", choice=tpb.Choice(values=["16", "32,16"])),
            ],
            max_trials=3,
            epochs_per_trial=3,
        ),
        request_promotion=True,
        seed=7,
    )


def v2_spec(v1: tpb.JobSpec) -> tpb.JobSpec:
    """v2: v1's job without the search, a wider MLP, longer, left to the rollout."""
    spec = tpb.JobSpec()
    spec.CopyFrom(v1)
    spec.ClearField("search")
    spec.request_promotion = False
    spec.model.mlp.CopyFrom(tpb.MlpTemplate(hidden_units=[256, 128], dropout=0.1))
    spec.hyperparameters.epochs = 25
    return spec


def registration_text(registration: tpb.Registration) -> str:
    text = f"{registration.model} v{registration.version}"
    if registration.promoted:
        return text + ", promoted to production"
    return text + f", not promoted ({registration.promotion_message or 'not requested'})"


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
