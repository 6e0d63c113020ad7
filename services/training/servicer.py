"""gRPC adapter of the training service: converts messages and awaits the core."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.training import converters as c
from services.training.core import TrainingCore
from tfmesh.training.v1 import training_pb2 as pb
from tfmesh.training.v1 import training_pb2_grpc


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, core: TrainingCore) -> None:
        self._core = core

    async def SubmitJob(self, request: pb.SubmitJobRequest, context) -> pb.SubmitJobResponse:
        job = await self._core.submit(c.spec_from_proto(request.spec), request.job_id)
        return pb.SubmitJobResponse(job=c.job_to_proto(job))

    async def GetJob(self, request: pb.GetJobRequest, context) -> pb.GetJobResponse:
        job = await self._core.get(request.name)
        return pb.GetJobResponse(job=c.job_to_proto(job))

    async def ListJobs(self, request: pb.ListJobsRequest, context) -> pb.ListJobsResponse:
        jobs, token = await self._core.list_jobs(
            request.page_size, request.page_token, c.state_from_proto(request.state)
        )
        return pb.ListJobsResponse(
            jobs=[c.job_to_proto(job) for job in jobs], next_page_token=token
        )

    async def CancelJob(self, request: pb.CancelJobRequest, context) -> pb.CancelJobResponse:
        job = await self._core.cancel(request.name)
        return pb.CancelJobResponse(job=c.job_to_proto(job))

    async def WatchJob(
        self, request: pb.WatchJobRequest, context
    ) -> AsyncIterator[pb.WatchJobResponse]:
        async for event in self._core.watch(request.name, request.since_sequence):
            yield c.event_to_proto(event)
