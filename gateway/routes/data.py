"""`/api/v1/datasets/...`: the data service's uploads, samples, versions and statistics.

An upload's body is the file itself (CSV, Parquet, JSON Lines or NPZ, up to the gateway's
body limit), sent in chunks over the data service's client-streaming `UploadDataset`; the
upload's settings travel as query parameters. Versions are named `dataset@<12 hex>`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request

from gateway.backends import Backends
from gateway.jsonio import OrjsonResponse, message_response, parse_body
from gateway.schemas import proto_body, proto_response
from tfmesh.data.v1 import data_pb2 as pb

router = APIRouter(prefix="/api/v1/datasets", tags=["data"])

DatasetName = Annotated[str, Path(min_length=1, max_length=128, description="Dataset name")]
VersionName = Annotated[
    str, Path(min_length=1, max_length=256, description="Dataset version, `name@<12 hex>`")
]
PageSize = Annotated[int, Query(ge=0, le=1000)]
PageToken = Annotated[str, Query(max_length=1024)]
Ratio = Annotated[float, Query(ge=0, le=1, allow_inf_nan=False)]
CHUNK_BYTES = 1024 * 1024
FORMATS = {
    "csv": pb.DATA_FORMAT_CSV,
    "npz": pb.DATA_FORMAT_NPZ,
    "parquet": pb.DATA_FORMAT_PARQUET,
    "jsonl": pb.DATA_FORMAT_JSONL,
}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            "The file: CSV (first row the column names), Parquet, JSON Lines, or numpy NPZ "
            "(x and y)."
        ),
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
VERSION_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: proto_response(pb.UploadDatasetResponse, "A new version"),
    200: proto_response(pb.UploadDatasetResponse, "The content already had this version"),
}


def _backends(request: Request) -> Backends:
    return request.app.state.backends


@router.get(
    "",
    summary="List dataset versions, newest first",
    response_model=None,
    responses={200: proto_response(pb.ListDatasetVersionsResponse)},
)
async def list_versions(
    request: Request,
    dataset: Annotated[str, Query(max_length=128, description="Only this dataset's")] = "",
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> OrjsonResponse:
    b = _backends(request)
    message = pb.ListDatasetVersionsRequest(
        dataset=dataset, page_size=page_size, page_token=page_token
    )
    return message_response(await b.call(b.data.ListDatasetVersions, message))


@router.post(
    "/samples",
    summary="Import a dataset bundled with scikit-learn (digits, iris, wine, breast_cancer)",
    status_code=201,
    response_model=None,
    responses={
        201: proto_response(pb.ImportSampleResponse, "A new version"),
        200: proto_response(pb.ImportSampleResponse, "The sample was imported before"),
    },
    openapi_extra=proto_body(pb.ImportSampleRequest),
)
async def import_sample(request: Request) -> OrjsonResponse:
    b = _backends(request)
    message = await parse_body(request, pb.ImportSampleRequest())
    # Versions are content-addressed: importing again returns the same version.
    reply = await b.call(b.data.ImportSample, message)
    return message_response(reply, 201 if reply.created else 200)


@router.post(
    "/{dataset}/versions",
    summary="Upload a file as a new version of a dataset (validated, split, versioned)",
    status_code=201,
    response_model=None,
    responses=VERSION_RESPONSES,
    openapi_extra=UPLOAD_BODY,
)
async def upload(
    request: Request,
    dataset: DatasetName,
    data_format: Annotated[Literal["csv", "npz", "parquet", "jsonl"], Query(alias="format")],
    label_column: Annotated[str, Query(max_length=256)] = "",
    train: Ratio = 0,
    validation: Ratio = 0,
    test: Ratio = 0,
    max_bad_row_fraction: Annotated[Ratio | None, Query()] = None,
    reference_version: Annotated[str, Query(max_length=256)] = "",
) -> OrjsonResponse:
    b = _backends(request)
    header = pb.UploadHeader(
        dataset=dataset,
        format=FORMATS[data_format],
        label_column=label_column,
        split_ratios=pb.SplitRatios(train=train, validation=validation, test=test),
        max_bad_row_fraction=max_bad_row_fraction,
        reference_version=reference_version,
    )
    # The body is bounded by the gateway's body limit; larger files go over gRPC directly.
    content = await request.body()
    messages = [pb.UploadDatasetRequest(header=header)] + [
        pb.UploadDatasetRequest(chunk=content[start : start + CHUNK_BYTES])
        for start in range(0, len(content), CHUNK_BYTES)
    ]
    reply = await asyncio.to_thread(
        b.data_uploads.UploadDataset, iter(messages), timeout=b.deadline_s
    )
    return message_response(reply, 201 if reply.created else 200)


@router.get(
    "/{version}",
    summary="Get a dataset version: schema, row counts, anomalies",
    response_model=None,
    responses={200: proto_response(pb.GetDatasetVersionResponse)},
)
async def get_version(request: Request, version: VersionName) -> OrjsonResponse:
    b = _backends(request)
    message = pb.GetDatasetVersionRequest(version=version)
    return message_response(await b.call(b.data.GetDatasetVersion, message))


@router.delete(
    "/{version}",
    summary="Delete a dataset version (refused while a registered model names it)",
    response_model=None,
    responses={200: proto_response(pb.DeleteDatasetVersionResponse)},
)
async def delete_version(request: Request, version: VersionName) -> OrjsonResponse:
    b = _backends(request)
    message = pb.DeleteDatasetVersionRequest(version=version)
    return message_response(await b.call(b.data.DeleteDatasetVersion, message))


@router.get(
    "/{version}/statistics",
    summary="Per-feature statistics, label counts per split, and the normalization",
    response_model=None,
    responses={200: proto_response(pb.GetStatisticsResponse)},
)
async def statistics(request: Request, version: VersionName) -> OrjsonResponse:
    b = _backends(request)
    message = pb.GetStatisticsRequest(version=version)
    return message_response(await b.call(b.data.GetStatistics, message))
