"""`tfmesh predict`: rows from a JSON, CSV or NPY file (or JSON on stdin) through a served
model, printed as a table (predicted class and score per row) or as JSON.

The inputs are fitted to the model's signature, which comes from the inference service:
a file's rows are reshaped to the input's shape when their sizes match (a CSV of 64
columns feeds an 8 x 8 x 1 image model) and cast to its dtype. Rows go in requests of the
model's batch size; unpinned ones follow production and the canary's share, so each row
reports the version that answered it."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import grpc
import numpy as np
import typer

from cli.output import print_json, table
from cli.rpc import CALL_TIMEOUT_S, JsonFlag, run_rpc
from shared.aliases import PRODUCTION
from shared.tensors import from_tensor, numpy_dtype, to_tensor
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc


def _json_inputs(document: Any) -> dict[str, Any] | Any:
    """A JSON document as named inputs (a dict) or the rows of a single input."""
    if isinstance(document, dict) and "instances" in document:
        rows = document["instances"]
        if rows and all(isinstance(row, dict) for row in rows):
            return {name: [row[name] for row in rows] for name in rows[0]}
        return rows
    if isinstance(document, dict) and "inputs" in document:
        return document["inputs"]
    return document


def _csv_rows(text: str) -> list[list[str]]:
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    try:
        [float(cell) for cell in rows[0]]
    except (ValueError, IndexError):
        return rows[1:]  # a header row
    return rows


def read_inputs(path: str) -> dict[str, Any] | Any:
    """The file's content: named inputs, or the rows of the model's only input."""
    if path == "-":
        return _json_inputs(json.load(sys.stdin))
    file = Path(path)
    suffix = file.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(file, allow_pickle=False)
        if suffix == ".csv":
            return np.asarray(_csv_rows(file.read_text()), dtype=np.float64)
        if suffix == ".json":
            return _json_inputs(json.loads(file.read_text()))
    except (OSError, ValueError) as error:
        raise typer.BadParameter(f"{path}: {error}", param_hint="INPUT") from None
    raise typer.BadParameter(f"{path}: expected .json, .csv or .npy (or - for JSON on stdin)")


def _target(status: pb.ModelStatus, version: int, label: str) -> pb.VersionStatus:
    wanted = label or PRODUCTION
    for candidate in status.versions:
        if (candidate.version == version) if version else (wanted in candidate.labels):
            return candidate
    raise typer.BadParameter(
        f"model {status.name!r} serves no version {version or wanted!r}", param_hint="MODEL"
    )


def fit(values: Any, spec: pb.TensorSpec) -> np.ndarray:
    """`values` as a batch for `spec`: its dtype, and its shape when only that differs."""
    try:
        array = np.asarray(values, dtype=numpy_dtype(spec.dtype))
    except (ValueError, TypeError, KeyError) as error:
        raise typer.BadParameter(f"input {spec.name!r}: {error}", param_hint="INPUT") from None
    row_shape = [int(d) for d in spec.shape[1:]]
    reshapes = (
        array.ndim >= 1
        and -1 not in row_shape
        and list(array.shape[1:]) != row_shape
        and math.prod(array.shape[1:]) == math.prod(row_shape)
    )
    return array.reshape((array.shape[0], *row_shape)) if reshapes else array


def predict(
    model: Annotated[str, typer.Argument(help="A served model.")],
    input_path: Annotated[
        str, typer.Argument(metavar="INPUT", help="A .json, .csv or .npy file, or - for stdin.")
    ],
    version: Annotated[int, typer.Option(min=0, help="Pin a version.")] = 0,
    label: Annotated[str, typer.Option(help="Pin a label, e.g. canary.")] = "",
    input_name: Annotated[str, typer.Option("--input", help="The input the rows feed.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Predict with a served model: rows from a file in, a table or JSON out."""
    if version and label:
        raise typer.BadParameter("pin a version or a label, not both", param_hint="--label")
    content = read_inputs(input_path)

    async def go(channel: grpc.aio.Channel) -> list[pb.PredictResponse]:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        status = (
            await stub.GetModelStatus(pb.GetModelStatusRequest(model=model), timeout=CALL_TIMEOUT_S)
        ).status
        specs = {spec.name: spec for spec in _target(status, version, label).inputs}
        named = content if isinstance(content, dict) else {input_name or next(iter(specs)): content}
        arrays = {
            name: fit(values, specs[name]) if name in specs else np.asarray(values)
            for name, values in named.items()
        }
        rows = len(next(iter(arrays.values())))
        size = status.batching.max_batch_size or rows
        answers = []
        for start in range(0, rows, size):
            request = pb.PredictRequest(
                model=model,
                inputs={n: to_tensor(a[start : start + size]) for n, a in arrays.items()},
            )
            if version:
                request.version = version
            elif label:
                request.label = label
            answers.append(await stub.Predict(request, timeout=CALL_TIMEOUT_S))
        return answers

    predictions = rows_of(run_rpc("inference", go))
    if as_json:
        print_json({"model": model, "predictions": predictions})
        return
    names = [name for name in predictions[0] if name != "version"] if predictions else []
    columns = ["row", "version"]
    for name in names:
        columns += [f"{name} class", f"{name} score"]
    table(
        f"predictions of {model}",
        columns,
        [
            [i, p["version"], *[cell for name in names for cell in _class_and_score(p[name])]]
            for i, p in enumerate(predictions)
        ],
    )


def rows_of(answers: list[pb.PredictResponse]) -> list[dict[str, Any]]:
    """One dict per row: the version that answered it and each output's values."""
    rows = []
    for answer in answers:
        outputs = {name: from_tensor(t).tolist() for name, t in answer.outputs.items()}
        count = len(next(iter(outputs.values())))
        for i in range(count):
            rows.append(
                {"version": answer.version, **{name: value[i] for name, value in outputs.items()}}
            )
    return rows


def _class_and_score(value: Any) -> list[str]:
    """A row's output as (class, score): argmax and max of a vector, else the value."""
    flat = np.asarray(value).reshape(-1)
    if flat.size > 1:
        return [str(int(flat.argmax())), f"{flat.max():.4f}"]
    return ["", f"{flat[0]:.4g}"]
