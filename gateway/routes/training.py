"""`/api/v1/jobs/...`: submit, list, inspect and cancel training jobs, and follow one.

A job's events (state changes, per-epoch metrics, trial results) stream as
newline-delimited JSON, one `WatchJobResponse` per line, until the job ends; a failure
after the stream has begun arrives as a last line `{"error": {...}}`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

import grpc
import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import StreamingResponse

from gateway.backends import Backends
from gateway.errors import rpc_error_response
from gateway.jsonio import OrjsonResponse, message_response, parse_body, to_json
from gateway.schemas import proto_body, proto_ref, proto_response
from tfmesh.training.v1 import training_pb2 as pb

router = APIRouter(prefix="/api/v1/jobs", tags=["training"])

JobName = Annotated[str, Path(min_length=1, max_length=128, description="Job id")]
PageSize = Annotated[int, Query(ge=0, le=1000)]
PageToken = Annotated[str, Query(max_length=1024)]
StateName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
NDJSON = "application/x-ndjson"


def _backends(request: Request) -> Backends:
    return request.app.state.backends


@router.post(
    "",
    summary="Submit a training job (validated before anything is queued)",
    status_code=201,
    response_model=None,
    responses={201: proto_response(pb.SubmitJobResponse)},
    openapi_extra=proto_body(pb.SubmitJobRequest),
)
async def submit_job(request: Request) -> OrjsonResponse:
    b = _backends(request)
    message = await parse_body(request, pb.SubmitJobRequest())
    # With a client-chosen id a repeated submit returns the same job, so it may be retried.
    send = b.call_keyed if message.job_id else b.call
    return message_response(await send(b.training.SubmitJob, message), 201)


@router.get(
    "",
    summary="List training jobs, newest first",
    response_model=None,
    responses={200: proto_response(pb.ListJobsResponse)},
)
async def list_jobs(
    request: Request,
    state: Annotated[StateName | None, Query(description="Only jobs in this state")] = None,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> OrjsonResponse:
    b = _backends(request)
    message = pb.ListJobsRequest(page_size=page_size, page_token=page_token)
    if state is not None:
        message.state = pb.JobState.Value(f"JOB_STATE_{state.upper()}")
    return message_response(await b.call(b.training.ListJobs, message))


@router.get(
    "/{job}",
    summary="Get a job: state, progress, metrics, trials, registration",
    response_model=None,
    responses={200: proto_response(pb.GetJobResponse)},
)
async def get_job(request: Request, job: JobName) -> OrjsonResponse:
    b = _backends(request)
    return message_response(await b.call(b.training.GetJob, pb.GetJobRequest(name=job)))


@router.post(
    "/{job}/cancel",
    summary="Cancel a job (a running one stops at its next batch)",
    response_model=None,
    responses={200: proto_response(pb.CancelJobResponse)},
)
async def cancel_job(request: Request, job: JobName) -> OrjsonResponse:
    b = _backends(request)
    return message_response(await b.call(b.training.CancelJob, pb.CancelJobRequest(name=job)))


@router.get(
    "/{job}/events",
    summary="Follow a job: its events as NDJSON, until it ends",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One WatchJobResponse per line",
            "content": {NDJSON: {"schema": proto_ref(pb.WatchJobResponse)}},
        }
    },
)
async def watch_job(
    request: Request,
    job: JobName,
    since_sequence: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> StreamingResponse:
    b = _backends(request)
    call = b.training.WatchJob(
        pb.WatchJobRequest(name=job, since_sequence=since_sequence), timeout=b.watch_deadline_s
    )
    try:
        # The first event (or the failure of an unknown job) before the status line is sent.
        first = await call.read()
    except BaseException:
        call.cancel()
        raise
    return StreamingResponse(_lines(call, first), media_type=NDJSON)


async def _lines(call: grpc.aio.UnaryStreamCall, first: object) -> AsyncIterator[bytes]:
    event = first
    try:
        while isinstance(event, pb.WatchJobResponse):
            yield orjson.dumps(to_json(event)) + b"\n"
            event = await call.read()
    except grpc.aio.AioRpcError as error:
        yield orjson.dumps(rpc_error_response(error)[1]) + b"\n"
    finally:
        call.cancel()
