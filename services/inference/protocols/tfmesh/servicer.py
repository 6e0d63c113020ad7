"""gRPC adapter of `tfmesh.inference.v1.InferenceService`: convert, call the service, convert."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from services.inference.controls import Controls
from services.inference.pipeline import Pipeline
from services.inference.protocols.deadlines import deadline_of
from services.inference.protocols.tfmesh import converters as c
from services.inference.streaming import answer_stream
from shared.errors import DomainError, invalid
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, pipeline: Pipeline, max_stream_in_flight: int) -> None:
        self._pipeline = pipeline
        self._max_stream_in_flight = max_stream_in_flight

    async def _predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        prediction = await self._pipeline.predict(
            request.model,
            c.inputs_from_proto(request.inputs),
            version=request.version,
            label=request.label,
            deadline=deadline_of(context),
            output_filter=list(request.output_filter),
            request_id=request.request_id,
        )
        return c.prediction_to_proto(prediction)

    async def Predict(self, request: pb.PredictRequest, context) -> pb.PredictResponse:
        return await self._predict(request, context)

    async def PredictStream(
        self, request_iterator: AsyncIterator[pb.PredictRequest], context
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        async def answer(request: pb.PredictRequest) -> pb.PredictStreamResponse:
            response = await self._predict(request, context)
            return pb.PredictStreamResponse(request_id=response.request_id, response=response)

        def error_answer(request: pb.PredictRequest, error: Exception) -> pb.PredictStreamResponse:
            if not isinstance(error, DomainError):
                log.error("unhandled error in a streamed prediction", exc_info=error)
            return pb.PredictStreamResponse(
                request_id=request.request_id, error=c.error_to_proto(error)
            )

        async for response in answer_stream(
            request_iterator, answer, error_answer, self._max_stream_in_flight
        ):
            yield response

    async def GetModelStatus(
        self, request: pb.GetModelStatusRequest, context
    ) -> pb.GetModelStatusResponse:
        model = self._pipeline.catalog().model(request.model)
        statistics = await self._pipeline.control(Controls.statistics, model.name, 0)
        queued = {s.version: s.queued_rows for s in statistics}
        return pb.GetModelStatusResponse(status=c.model_status_to_proto(model, queued))

    async def GetDrift(self, request: pb.GetDriftRequest, context) -> pb.GetDriftResponse:
        if not request.model:
            raise invalid("model", "name the model whose drift to show")
        if request.version < 0:
            raise invalid(
                "version", f"must be >= 0 (0: every loaded version), got {request.version}"
            )
        model = self._pipeline.catalog().model(request.model)
        statistics = await self._pipeline.control(Controls.statistics, model.name, request.version)
        return c.drift_to_proto(model.name, statistics)

    async def ReportFeedback(
        self, request: pb.ReportFeedbackRequest, context
    ) -> pb.ReportFeedbackResponse:
        if not request.model:
            raise invalid("model", "name the model whose predictions the feedback is about")
        outcome = await self._pipeline.control(
            Controls.report_feedback, request.model, c.feedback_items_from_proto(request.items)
        )
        return pb.ReportFeedbackResponse(
            matched=outcome.matched, unknown=outcome.unknown, late=outcome.late
        )

    async def GetVersionStats(
        self, request: pb.GetVersionStatsRequest, context
    ) -> pb.GetVersionStatsResponse:
        if not request.model:
            raise invalid("model", "name the model whose versions to describe")
        model = self._pipeline.catalog().model(request.model)
        statistics = await self._pipeline.control(Controls.statistics, model.name, 0)
        return pb.GetVersionStatsResponse(
            model=model.name, versions=[c.version_stats_to_proto(model, s) for s in statistics]
        )

    async def GetQueue(self, request: pb.GetQueueRequest, context) -> pb.GetQueueResponse:
        if not request.model:
            raise invalid("model", "name the model whose queues to show")
        model = self._pipeline.catalog().model(request.model)
        queues = await self._pipeline.control(Controls.queues, model.name)
        return pb.GetQueueResponse(
            model=model.name,
            versions=[
                pb.VersionQueue(
                    version=q.version,
                    labels=model.labels_of(q.version),
                    queued_requests=q.queue.requests,
                    queued_rows=q.queue.rows,
                    capacity_rows=q.queue.capacity_rows,
                    oldest_wait_seconds=q.queue.oldest_wait_s,
                    running_batches=q.queue.running_batches,
                    expected_rows=q.queue.expected_rows,
                )
                for q in queues
            ],
        )

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        if request.page_size < 0:
            raise invalid("page_size", "must be >= 0")
        models = self._pipeline.catalog().ordered()
        start = 0
        if request.page_token:
            names = [m.name for m in models]
            if request.page_token not in names:
                raise invalid("page_token", "not a page token this server issued")
            start = names.index(request.page_token) + 1
        size = request.page_size or DEFAULT_PAGE_SIZE
        page = models[start : start + size]
        more = start + size < len(models)
        queued = {
            (s.model, s.version): s.queued_rows
            for s in await self._pipeline.control(Controls.statistics, "", 0)
        }
        return pb.ListModelsResponse(
            models=[
                c.model_status_to_proto(
                    m, {v: rows for (name, v), rows in queued.items() if name == m.name}
                )
                for m in page
            ],
            next_page_token=page[-1].name if more else "",
        )
