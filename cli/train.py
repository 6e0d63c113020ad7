"""`tfmesh train ...`: submit training jobs (optionally with a hyperparameter search),
follow them live, list and cancel them (the training service, over gRPC).

`watch` (and `submit --watch`) draws one progress bar per search trial and one for the
final training, each advancing per epoch with that epoch's metrics; state changes and
trial results print above the bars. With `--json` it prints the events as NDJSON.
The exit code says how the job ended: 0 when it succeeded, 1 otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from cli.output import console, print_json, print_json_line, table
from cli.rpc import CALL_TIMEOUT_S, JsonFlag, run_rpc
from tfmesh.training.v1 import training_pb2 as pb
from tfmesh.training.v1 import training_pb2_grpc

app = typer.Typer(help="Training jobs: submit, watch, list, cancel.", no_args_is_help=True)

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
OPTIMIZERS = {
    "adam": pb.OPTIMIZER_ADAM,
    "sgd": pb.OPTIMIZER_SGD,
    "rmsprop": pb.OPTIMIZER_RMSPROP,
}
PRUNERS = {
    "none": pb.PRUNER_UNSPECIFIED,
    "median": pb.PRUNER_MEDIAN,
    "hyperband": pb.PRUNER_HYPERBAND,
}
# Searched parameters that take whole numbers; the others are floats or choices.
INTEGER_PARAMETERS = {"batch_size"}
# A job runs as long as it runs: the watch's deadline only stops a client left behind.
WATCH_TIMEOUT_S = 24 * 3600.0


def stub(channel: grpc.aio.Channel) -> training_pb2_grpc.TrainingServiceStub:
    return training_pb2_grpc.TrainingServiceStub(channel)


def state_name(state: pb.JobState.ValueType) -> str:
    return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def integers(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("give comma-separated whole numbers", param_hint=option) from None


def search_parameter(text: str) -> pb.SearchParameter:
    """`name=low..high[:log]` (a range) or `name=a|b|c` (a choice)."""
    name, _, domain = text.partition("=")
    if not name or not domain:
        raise typer.BadParameter(f"{text!r}: write name=low..high[:log] or name=a|b|c")
    if ".." not in domain:
        return pb.SearchParameter(name=name, choice=pb.Choice(values=domain.split("|")))
    bounds, _, scale = domain.partition(":")
    if scale not in ("", "log"):
        raise typer.BadParameter(f"{text!r}: the only scale is `:log`")
    low, _, high = bounds.partition("..")
    try:
        if name in INTEGER_PARAMETERS:
            return pb.SearchParameter(
                name=name, int_range=pb.IntRange(low=int(low), high=int(high), log=bool(scale))
            )
        return pb.SearchParameter(
            name=name,
            float_range=pb.FloatRange(low=float(low), high=float(high), log=bool(scale)),
        )
    except ValueError:
        raise typer.BadParameter(f"{text!r}: the bounds must be numbers") from None


def metrics_text(metrics: dict[str, float]) -> str:
    return "  ".join(f"{key} {value:.4f}" for key, value in sorted(metrics.items()))


class JobView:
    """A live view of a job's events: a bar per trial and one for the final training."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[int, TaskID] = {}

    def show(self, event: pb.WatchJobResponse) -> None:
        kind = event.WhichOneof("event")
        if kind == "state_change":
            change = event.state_change
            note = f": {change.message}" if change.message else ""
            self._progress.console.print(f"[bold]{state_name(change.state)}[/bold]{note}")
        elif kind == "epoch":
            self._epoch(event.epoch)
        elif kind == "trial":
            trial = event.trial
            params = ", ".join(f"{k}={v}" for k, v in sorted(trial.params.items()))
            pruned = ", pruned" if trial.pruned else ""
            self._progress.console.print(
                f"trial {trial.number}: val_accuracy {trial.objective:.4f}{pruned}  ({params})"
            )

    def _epoch(self, epoch: pb.EpochMetrics) -> None:
        if epoch.trial not in self._tasks:
            label = f"trial {epoch.trial - 1}" if epoch.trial else "train"
            self._tasks[epoch.trial] = self._progress.add_task(
                label, total=epoch.epochs, metrics=""
            )
        self._progress.update(
            self._tasks[epoch.trial],
            total=epoch.epochs,
            completed=epoch.epoch,
            metrics=metrics_text(dict(epoch.metrics)),
        )


def summarize(job: pb.Job) -> None:
    rows = [
        ["job", job.name],
        ["state", state_name(job.state)],
        ["dataset", job.spec.dataset_version],
        ["epochs", f"{job.epochs_completed}/{job.epochs}"],
        ["metrics", metrics_text(dict(job.metrics))],
        ["params", ", ".join(f"{k}={v}" for k, v in sorted(job.params.items()))],
        ["artifacts", ", ".join(job.artifacts)],
    ]
    if job.HasField("registration"):
        registration = job.registration
        promotion = ""
        if registration.promotion_requested:
            promotion = (
                " -> production"
                if registration.promoted
                else (f" (promotion refused: {registration.promotion_message})")
            )
        rows.append(["registered", f"{registration.model} v{registration.version}{promotion}"])
    if job.error:
        rows.append(["error", job.error])
    table(f"job {job.name}", ["field", "value"], rows, show_header=False)


def watch_job(name: str, as_json: bool) -> pb.Job:
    """Follow a job until it ends; the job as it ended."""

    async def follow(channel: grpc.aio.Channel) -> pb.Job:
        events = stub(channel).WatchJob(pb.WatchJobRequest(name=name), timeout=WATCH_TIMEOUT_S)
        if as_json:
            async for event in events:
                print_json_line(event)
        else:
            with Progress(
                TextColumn("{task.description:>9}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("epochs  {task.fields[metrics]}"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                view = JobView(progress)
                async for event in events:
                    view.show(event)
        reply = await stub(channel).GetJob(pb.GetJobRequest(name=name), timeout=CALL_TIMEOUT_S)
        return reply.job

    job = run_rpc("training", follow)
    if not as_json:
        summarize(job)
    if job.state != pb.JOB_STATE_SUCCEEDED:
        raise typer.Exit(1)
    return job


@app.command("submit")
def submit(
    dataset_version: Annotated[str, typer.Argument(help="A dataset version, `name@<12 hex>`.")],
    model: Annotated[str, typer.Option(help="Register the result as this model.")] = "",
    template: Annotated[str, typer.Option(help="mlp or cnn.")] = "mlp",
    hidden_units: Annotated[str, typer.Option(help="mlp: units per layer, e.g. 128,64.")] = "",
    filters: Annotated[str, typer.Option(help="cnn: filters per block, e.g. 16,32.")] = "",
    dropout: Annotated[float, typer.Option(min=0, max=0.99)] = 0.0,
    keras_json: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="A Keras model.to_json() file instead."),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    batch_size: Annotated[int, typer.Option(min=0, help="0: the service's default.")] = 0,
    learning_rate: Annotated[float, typer.Option(min=0, help="0: the default.")] = 0.0,
    optimizer: Annotated[str, typer.Option(help="adam, sgd or rmsprop.")] = "adam",
    search: Annotated[
        list[str] | None,
        typer.Option(help="Search a parameter: name=low..high[:log] or name=a|b (repeat)."),
    ] = None,
    trials: Annotated[int, typer.Option(min=0, help="Search trials (with --search).")] = 0,
    trial_epochs: Annotated[int, typer.Option(min=0, help="Epochs per trial; 0: 3.")] = 0,
    pruner: Annotated[
        str, typer.Option(help="Stop trials that fall behind: none, median or hyperband.")
    ] = "none",
    promote: Annotated[bool, typer.Option(help="Ask the registry to promote the result.")] = False,
    tflite: Annotated[bool, typer.Option(help="Also export a quantized TFLite model.")] = False,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes of one data-parallel training (no search).")
    ] = 1,
    seed: int = 0,
    job_id: Annotated[str, typer.Option(help="Your id; a repeated submit is a no-op.")] = "",
    watch: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Submit a training job; the service checks the spec before queuing it."""
    choosers = ((optimizer, OPTIMIZERS, "--optimizer"), (pruner, PRUNERS, "--pruner"))
    for value, choices, hint in choosers:
        if value not in choices:
            raise typer.BadParameter(f"one of {', '.join(choices)}", param_hint=hint)
    spec = pb.JobSpec(
        dataset_version=dataset_version,
        model=model_spec(template, hidden_units, filters, dropout, keras_json),
        hyperparameters=pb.Hyperparameters(
            optimizer=OPTIMIZERS[optimizer],
            learning_rate=learning_rate,
            epochs=epochs,
            batch_size=batch_size,
        ),
        model_name=model,
        request_promotion=promote,
        export_tflite=tflite,
        seed=seed,
        workers=workers,
    )
    if search or trials:
        spec.search.CopyFrom(search_space(search or [], trials, trial_epochs, pruner))
    request = pb.SubmitJobRequest(spec=spec, job_id=job_id)
    reply = run_rpc("training", lambda ch: stub(ch).SubmitJob(request, timeout=CALL_TIMEOUT_S))
    show_submitted(reply.job, as_json, watch)


def show_submitted(job: pb.Job, as_json: bool, watch: bool) -> None:
    """Print the job just submitted (one NDJSON line before its events, with --watch), and
    follow it with --watch."""
    if as_json and watch:
        print_json_line(job)
    elif as_json:
        print_json(job)
    else:
        console.print(f"submitted job [bold]{job.name}[/bold]")
    if watch:
        watch_job(job.name, as_json)


def model_spec(
    template: str, hidden_units: str, filters: str, dropout: float, keras_json: Path | None
) -> pb.ModelSpec:
    """The model of `train submit`: a Keras JSON file, or the mlp or cnn template."""
    if keras_json is not None:
        return pb.ModelSpec(keras_json=keras_json.read_text())
    if template == "mlp":
        hidden = integers(hidden_units, "--hidden-units")
        return pb.ModelSpec(mlp=pb.MlpTemplate(hidden_units=hidden, dropout=dropout))
    if template == "cnn":
        blocks = integers(filters, "--filters")
        return pb.ModelSpec(cnn=pb.CnnTemplate(filters=blocks, dropout=dropout))
    raise typer.BadParameter("mlp or cnn", param_hint="--template")


def search_space(search: list[str], trials: int, trial_epochs: int, pruner: str) -> pb.SearchSpace:
    """The search of `train submit`, from its --search, --trials, --trial-epochs, --pruner."""
    return pb.SearchSpace(
        parameters=[search_parameter(text) for text in search],
        max_trials=trials,
        epochs_per_trial=trial_epochs,
        pruner=PRUNERS[pruner],
    )


@app.command("watch")
def watch(
    job: Annotated[str, typer.Argument(help="The job id.")], as_json: JsonFlag = False
) -> None:
    """Follow a job live: a progress bar per trial and for training, with epoch metrics."""
    watch_job(job, as_json)


@app.command("show")
def show(
    job: Annotated[str, typer.Argument(help="The job id.")], as_json: JsonFlag = False
) -> None:
    """A job's state, metrics, parameters and registration."""
    request = pb.GetJobRequest(name=job)
    reply = run_rpc("training", lambda ch: stub(ch).GetJob(request, timeout=CALL_TIMEOUT_S))
    if as_json:
        print_json(reply.job)
        return
    summarize(reply.job)


@app.command("list")
def list_jobs(
    state: Annotated[str, typer.Option(help=f"Only jobs in this state: {', '.join(STATES)}.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Training jobs, newest first."""
    if state and state not in STATES:
        raise typer.BadParameter(f"one of {', '.join(STATES)}", param_hint="--state")
    request = pb.ListJobsRequest(page_size=1000)
    if state:
        request.state = pb.JobState.Value(f"JOB_STATE_{state.upper()}")
    reply = run_rpc("training", lambda ch: stub(ch).ListJobs(request, timeout=CALL_TIMEOUT_S))
    if as_json:
        print_json(list(reply.jobs))
        return
    table(
        "training jobs",
        ["job", "state", "phase", "epochs", "accuracy", "registered", "created"],
        [
            [
                j.name,
                state_name(j.state),
                j.phase,
                f"{j.epochs_completed}/{j.epochs}",
                f"{j.metrics['accuracy']:.4f}" if "accuracy" in j.metrics else "",
                f"{j.registration.model} v{j.registration.version}"
                if j.HasField("registration")
                else "",
                j.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
            ]
            for j in reply.jobs
        ],
    )


@app.command("cancel")
def cancel(
    job: Annotated[str, typer.Argument(help="The job id.")], as_json: JsonFlag = False
) -> None:
    """Cancel a job: a queued one at once, a running one at its next batch."""
    request = pb.CancelJobRequest(name=job)
    reply = run_rpc("training", lambda ch: stub(ch).CancelJob(request, timeout=CALL_TIMEOUT_S))
    if as_json:
        print_json(reply.job)
        return
    console.print(f"job {reply.job.name}: {state_name(reply.job.state)}")
