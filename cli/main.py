"""The `tfmesh` command: the local stack, datasets, training, the registry and predictions
from a shell.

Each group talks gRPC to its service (addresses from `TFMESH_<SERVICE>_ADDR`, defaulting to
the local stack's ports; see cli.rpc). A failed call prints its status code and message
and exits 1; `--json` switches any output to machine-readable JSON. The groups `data`,
`train` and the `predict` command live in their own modules."""

from __future__ import annotations

from typing import Annotated

import grpc
import typer

from cli import data, db, predict, rollout, train
from cli.output import print_json, table
from cli.rpc import JsonFlag, run_rpc
from cli.stack import LocalStack
from shared.aliases import CANARY, PRODUCTION
from shared.settings import default_home
from tfmesh.inference.v1 import inference_pb2, inference_pb2_grpc
from tfmesh.registry.v1 import registry_pb2 as pb
from tfmesh.registry.v1 import registry_pb2_grpc

app = typer.Typer(
    help="tfmesh: data, training, registry and inference from one command.", no_args_is_help=True
)
models = typer.Typer(
    help="Models, versions, aliases and promotion in the registry.", no_args_is_help=True
)
app.add_typer(models, name="models")
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.add_typer(rollout.app, name="rollout")
app.add_typer(db.app, name="db")
app.command("predict")(predict.predict)


def registry(channel: grpc.aio.Channel) -> registry_pb2_grpc.RegistryServiceStub:
    return registry_pb2_grpc.RegistryServiceStub(channel)


@app.command()
def up(
    monitoring: Annotated[
        bool, typer.Option(help="Also start Prometheus, scraping every service.")
    ] = False,
    tls: Annotated[bool, typer.Option(help="Run the stack on mutual TLS with a local CA.")] = False,
    auth: Annotated[
        bool, typer.Option(help="Every call needs a principal's token; prints the admin's.")
    ] = False,
    scaled: Annotated[
        bool,
        typer.Option(
            help="The cluster's shape on loopback: PostgreSQL, SeaweedFS (S3), two replicas "
            "of data, registry and training, two training workers."
        ),
    ] = False,
) -> None:
    """Start every built service on loopback and wait until each is SERVING."""
    LocalStack(default_home()).up(monitoring=monitoring, tls=tls, auth=auth, scaled=scaled)


@app.command()
def down() -> None:
    """Stop the local stack (SIGTERM, then SIGKILL after a grace period)."""
    LocalStack(default_home()).down()


@app.command()
def status() -> None:
    """Health of each service of the local stack, its metrics URL, and Prometheus's."""
    LocalStack(default_home()).status()


@models.command("list")
def models_list(as_json: JsonFlag = False) -> None:
    """List registered models."""
    reply = run_rpc(
        "registry", lambda ch: registry(ch).ListModels(pb.ListModelsRequest(page_size=1000))
    )
    if as_json:
        print_json(list(reply.models))
        return
    table(
        "models",
        ["name", "latest", "promotion rule", "created"],
        [
            [
                m.name,
                m.latest_version,
                f"{m.promotion_rule.metric} "
                f"{'+' if m.promotion_rule.higher_is_better else '-'}"
                f"{m.promotion_rule.min_improvement:g}",
                m.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
            ]
            for m in reply.models
        ],
    )


@models.command("show")
def models_show(model: str, as_json: JsonFlag = False) -> None:
    """A model's versions with their metrics, lineage and aliases."""

    async def fetch(channel: grpc.aio.Channel) -> pb.ListVersionsResponse:
        return await registry(channel).ListVersions(
            pb.ListVersionsRequest(model=model, page_size=1000)
        )

    reply = run_rpc("registry", fetch)
    if as_json:
        print_json(list(reply.versions))
        return
    table(
        f"model {model}",
        ["version", "aliases", "metrics", "dataset", "job", "artifacts"],
        [
            [
                v.version,
                ", ".join(v.aliases),
                " ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items())),
                v.lineage.dataset_version,
                v.lineage.training_job,
                ", ".join(a.name for a in v.artifacts),
            ]
            for v in reply.versions
        ],
    )


def _set_alias(request: pb.SetAliasRequest, as_json: bool) -> None:
    reply = run_rpc("registry", lambda ch: registry(ch).SetAlias(request))
    if as_json:
        print_json(reply)
        return
    weight = f" at {reply.alias.traffic_weight}%" if reply.alias.name == CANARY else ""
    note = " (gate overridden)" if reply.change.overridden else ""
    typer.echo(f"{request.model}@{reply.alias.name} -> v{reply.alias.version}{weight}{note}")


Actor = Annotated[str, typer.Option(envvar="USER", help="Who asks; recorded in the audit log.")]
Reason = Annotated[str, typer.Option(help="Why; recorded in the audit log.")]


@models.command("promote")
def models_promote(
    model: str,
    version: int,
    actor: Actor = "",
    reason: Reason = "",
    override: Annotated[
        bool, typer.Option(help="Bypass the promotion gate (needs --reason).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Move `production` to a version; the registry's gate decides."""
    _set_alias(
        pb.SetAliasRequest(
            model=model,
            alias=PRODUCTION,
            version=version,
            actor=actor,
            reason=reason,
            override_gate=override,
        ),
        as_json,
    )


@models.command("alias")
def models_alias(
    model: str,
    alias: str,
    version: int,
    actor: Actor = "",
    reason: Reason = "",
    as_json: JsonFlag = False,
) -> None:
    """Point any alias at a version."""
    _set_alias(
        pb.SetAliasRequest(model=model, alias=alias, version=version, actor=actor, reason=reason),
        as_json,
    )


@models.command(CANARY)
def models_canary(
    model: str,
    version: int,
    weight: Annotated[int, typer.Option(min=0, max=100, help="Percent of unpinned traffic.")],
    actor: Actor = "",
    reason: Reason = "",
    as_json: JsonFlag = False,
) -> None:
    """Put a version on `canary` with a traffic weight."""
    _set_alias(
        pb.SetAliasRequest(
            model=model,
            alias=CANARY,
            version=version,
            traffic_weight=weight,
            actor=actor,
            reason=reason,
        ),
        as_json,
    )


@models.command("history")
def models_history(model: str, as_json: JsonFlag = False) -> None:
    """The audit log of a model's alias changes."""
    reply = run_rpc(
        "registry",
        lambda ch: registry(ch).ListAliasHistory(
            pb.ListAliasHistoryRequest(model=model, page_size=1000)
        ),
    )
    if as_json:
        print_json(list(reply.changes))
        return
    table(
        f"alias history of {model}",
        ["rev", "alias", "from", "to", "weight", "actor", "reason"],
        [
            [
                c.revision,
                c.alias,
                c.old_version,
                c.new_version,
                c.new_traffic_weight,
                c.actor,
                c.reason + (" (override)" if c.overridden else ""),
            ]
            for c in reply.changes
        ],
    )


@models.command("drift")
def models_drift(
    model: str,
    version: Annotated[int, typer.Option(help="One loaded version; 0 shows them all.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """How far the live inputs of a served model have drifted from its training data."""
    reply = run_rpc(
        "inference",
        lambda ch: inference_pb2_grpc.InferenceServiceStub(ch).GetDrift(
            inference_pb2.GetDriftRequest(model=model, version=version)
        ),
    )
    if as_json:
        print_json(reply)
        return
    for served in reply.versions:
        title = (
            f"drift of {model} v{served.version} from {served.baseline or 'no baseline'} "
            f"({served.window_rows} rows in the window, {served.sampled_rows} sampled)"
        )
        if not served.features:
            table(title, ["note"], [[served.note]])
            continue
        table(
            title,
            ["feature", "statistic", "score", "threshold", "drifted"],
            [
                [
                    f.feature,
                    f.statistic,
                    f"{f.score:.4f}",
                    f.threshold,
                    "DRIFT" if f.drifted else "",
                ]
                for f in served.features
            ],
        )
