"""`tfmesh data ...`: upload files and import samples as dataset versions, and inspect
versions, their schemas, anomalies and statistics (the data service, over gRPC)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cli.output import console, print_json, table
from cli.rpc import CALL_TIMEOUT_S, JsonFlag, blocking_channel, call_metadata, fail, run_rpc
from tfmesh.data.v1 import data_pb2 as pb
from tfmesh.data.v1 import data_pb2_grpc

app = typer.Typer(
    help="Datasets: uploads, bundled samples, versions, statistics.", no_args_is_help=True
)

SAMPLES = ("digits", "iris", "wine", "breast_cancer")
FORMATS = {
    ".csv": pb.DATA_FORMAT_CSV,
    ".npz": pb.DATA_FORMAT_NPZ,
    ".parquet": pb.DATA_FORMAT_PARQUET,
    ".jsonl": pb.DATA_FORMAT_JSONL,
}
CHUNK_BYTES = 1024 * 1024
UPLOAD_TIMEOUT_S = 3600.0


def stub(channel: grpc.aio.Channel) -> data_pb2_grpc.DataServiceStub:
    return data_pb2_grpc.DataServiceStub(channel)


def split_ratios(text: str) -> pb.SplitRatios:
    """`0.8,0.1,0.1` as train, validation and test shares."""
    try:
        train, validation, test = (float(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter("give three shares: train,validation,test") from None
    return pb.SplitRatios(train=train, validation=validation, test=test)


def anomaly_kind(kind: pb.AnomalyKind.ValueType) -> str:
    return pb.AnomalyKind.Name(kind).removeprefix("ANOMALY_KIND_").lower()


def feature_type(kind: pb.FeatureType.ValueType) -> str:
    return pb.FeatureType.Name(kind).removeprefix("FEATURE_TYPE_").lower()


def describe(version: pb.DatasetVersion, created: bool | None = None) -> None:
    rows = version.rows
    news = "" if created is None else (" (new)" if created else " (already there)")
    console.print(f"[bold]{version.name}[/bold]{news}")
    console.print(
        f"rows {rows.kept} kept of {rows.total} ({rows.dropped} dropped): "
        f"train {rows.train}, validation {rows.validation}, test {rows.test}"
    )
    schema = version.schema
    console.print(
        f"features {list(schema.feature_shape)} float32, label {schema.label!r} "
        f"with {len(schema.label_vocabulary)} classes"
    )


def file_format(path: Path) -> pb.DataFormat.ValueType:
    """The upload format its suffix names."""
    data_format = FORMATS.get(path.suffix.lower())
    if data_format is None:
        raise typer.BadParameter(
            f"{path.name}: expected a .csv, .parquet, .jsonl or .npz file", param_hint="PATH"
        )
    return data_format


def send_file(path: Path, header: pb.UploadHeader, quiet: bool) -> pb.UploadDatasetResponse:
    """The header, then the file in chunks, with a progress bar unless `quiet`."""
    with Progress(
        TextColumn("upload {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
        disable=quiet,
    ) as progress:
        task = progress.add_task(path.name, total=path.stat().st_size)

        def messages() -> Iterator[pb.UploadDatasetRequest]:
            yield pb.UploadDatasetRequest(header=header)
            with path.open("rb") as source:
                while chunk := source.read(CHUNK_BYTES):
                    yield pb.UploadDatasetRequest(chunk=chunk)
                    progress.advance(task, len(chunk))

        with blocking_channel("data") as channel:
            try:
                return data_pb2_grpc.DataServiceStub(channel).UploadDataset(
                    messages(), timeout=UPLOAD_TIMEOUT_S, metadata=call_metadata()
                )
            except grpc.RpcError as error:
                raise fail(error) from None


@app.command("upload")
def upload(
    path: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="CSV, Parquet, JSON Lines or NPZ file"),
    ],
    dataset: Annotated[str, typer.Option(help="Dataset name; default: the file's stem.")] = "",
    label_column: Annotated[
        str, typer.Option(help="CSV, Parquet, JSON Lines: the label column.")
    ] = "",
    split: Annotated[str, typer.Option(help="train,validation,test shares.")] = "",
    max_bad_row_fraction: Annotated[
        float | None, typer.Option(min=0, max=1, help="Reject above this share of bad rows.")
    ] = None,
    reference: Annotated[str, typer.Option(help="Validate against this version's schema.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Upload a file as a new dataset version (validated, split, versioned)."""
    header = pb.UploadHeader(
        dataset=dataset or path.stem,
        format=file_format(path),
        label_column=label_column,
        split_ratios=split_ratios(split) if split else None,
        max_bad_row_fraction=max_bad_row_fraction,
        reference_version=reference,
    )
    reply = send_file(path, header, as_json)
    if as_json:
        print_json(reply)
        return
    describe(reply.version, reply.created)
    anomalies = reply.version.anomalies
    if anomalies.bad_rows:
        table(
            f"{anomalies.bad_rows} bad rows dropped",
            ["row", "column", "kind", "detail"],
            [[a.row, a.column, anomaly_kind(a.kind), a.detail] for a in anomalies.examples],
        )


@app.command("import-sample")
def import_sample(
    sample: Annotated[str, typer.Argument(help=f"One of {', '.join(SAMPLES)}.")],
    dataset: Annotated[str, typer.Option(help="Dataset name; default: the sample's.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Import a dataset bundled with scikit-learn (no network needed)."""
    if sample not in SAMPLES:
        raise typer.BadParameter(f"choose one of {', '.join(SAMPLES)}", param_hint="SAMPLE")
    request = pb.ImportSampleRequest(sample=sample, dataset=dataset)
    reply = run_rpc("data", lambda ch: stub(ch).ImportSample(request, timeout=CALL_TIMEOUT_S))
    if as_json:
        print_json(reply)
        return
    describe(reply.version, reply.created)


@app.command("list")
def list_versions(
    dataset: Annotated[str, typer.Option(help="Only this dataset's versions.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Dataset versions, newest first."""
    request = pb.ListDatasetVersionsRequest(dataset=dataset, page_size=1000)
    reply = run_rpc(
        "data", lambda ch: stub(ch).ListDatasetVersions(request, timeout=CALL_TIMEOUT_S)
    )
    if as_json:
        print_json(list(reply.versions))
        return
    table(
        "dataset versions",
        ["version", "rows", "train/val/test", "features", "classes", "created"],
        [
            [
                v.name,
                v.rows.kept,
                f"{v.rows.train}/{v.rows.validation}/{v.rows.test}",
                list(v.schema.feature_shape),
                len(v.schema.label_vocabulary),
                v.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
            ]
            for v in reply.versions
        ],
    )


@app.command("show")
def show(
    version: Annotated[str, typer.Argument(help="A version, `name@<12 hex>`.")],
    as_json: JsonFlag = False,
) -> None:
    """A version's schema, row counts and anomalies."""
    request = pb.GetDatasetVersionRequest(version=version)
    reply = run_rpc("data", lambda ch: stub(ch).GetDatasetVersion(request, timeout=CALL_TIMEOUT_S))
    if as_json:
        print_json(reply.version)
        return
    describe(reply.version)
    table(
        "features",
        ["name", "type", "min", "max", "vocabulary"],
        [
            [
                f.name,
                feature_type(f.type),
                f"{f.min:g}",
                f"{f.max:g}",
                ", ".join(f.vocabulary),
            ]
            for f in reply.version.schema.features
        ],
    )
    counts = reply.version.anomalies.counts
    if counts:
        table(
            "anomalies",
            ["kind", "count"],
            [[anomaly_kind(c.kind), c.count] for c in counts],
        )


@app.command("stats")
def stats(
    version: Annotated[str, typer.Argument(help="A version, `name@<12 hex>`.")],
    as_json: JsonFlag = False,
) -> None:
    """Per-feature statistics and label counts per split."""
    request = pb.GetStatisticsRequest(version=version)
    reply = run_rpc("data", lambda ch: stub(ch).GetStatistics(request, timeout=CALL_TIMEOUT_S))
    if as_json:
        print_json(reply)
        return
    table(
        f"features of {reply.version}",
        ["name", "type", "count", "missing", "invalid", "mean", "std", "min", "max"],
        [
            [
                f.name,
                feature_type(f.type),
                f.count,
                f.missing,
                f.invalid,
                f"{f.mean:.4g}",
                f"{f.std:.4g}",
                f"{f.min:g}",
                f"{f.max:g}",
            ]
            for f in reply.features
        ],
    )
    table(
        "labels",
        ["label", "index", "rows", "train", "validation", "test"],
        [[c.label, c.index, c.count, c.train, c.validation, c.test] for c in reply.labels],
    )
