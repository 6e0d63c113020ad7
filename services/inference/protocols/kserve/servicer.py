"""KServe v2's `inference.GRPCInferenceService` over gRPC: each RPC hands its request's
fields to the data plane (services.inference.protocols.kserve.dataplane) and returns its
message; inference converts tensors here, and the stream answers each request in turn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from inference import grpc_predict_v2_pb2 as pb
from inference import grpc_predict_v2_pb2_grpc
from services.inference.pipeline import Pipeline
from services.inference.protocols.deadlines import deadline_of
from services.inference.protocols.kserve import converters as c
from services.inference.protocols.kserve.dataplane import KServeDataPlane
from services.inference.streaming import answer_stream
from shared.errors import DomainError

log = logging.getLogger(__name__)


class KServeServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, pipeline: Pipeline, max_stream_in_flight: int) -> None:
        self._plane = KServeDataPlane(pipeline)
        self._max_stream_in_flight = max_stream_in_flight

    async def ServerLive(self, request: pb.ServerLiveRequest, context) -> pb.ServerLiveResponse:
        return self._plane.server_live()

    async def ServerReady(self, request: pb.ServerReadyRequest, context) -> pb.ServerReadyResponse:
        return self._plane.server_ready()

    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        return self._plane.model_ready(request.name, request.version)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context
    ) -> pb.ServerMetadataResponse:
        return self._plane.server_metadata()

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context
    ) -> pb.ModelMetadataResponse:
        return self._plane.model_metadata(request.name, request.version)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context) -> pb.ModelConfigResponse:
        return self._plane.model_config(request.name, request.version)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context
    ) -> pb.ModelStatisticsResponse:
        return await self._plane.model_statistics(request.name, request.version)

    async def _infer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        inputs, indexes = c.inputs_from_proto(request)
        prediction = await self._plane.infer(
            request.model_name,
            request.model_version,
            inputs,
            indexes,
            [output.name for output in request.outputs],
            request.id,
            deadline_of(context),
        )
        return c.response_to_proto(prediction, request)

    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        return await self._infer(request, context)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async def answer(request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
            return pb.ModelStreamInferResponse(infer_response=await self._infer(request, context))

        def error_answer(
            request: pb.ModelInferRequest, error: Exception
        ) -> pb.ModelStreamInferResponse:
            if isinstance(error, DomainError):
                message = f"{error.code.name}: {error.message}"
            else:
                log.error("unhandled error in a streamed inference", exc_info=error)
                message = "INTERNAL: internal error"
            # The id (and model) come back with the error too, so a client with many
            # requests in flight knows which one failed.
            echo = pb.ModelInferResponse(
                model_name=request.model_name, model_version=request.model_version, id=request.id
            )
            return pb.ModelStreamInferResponse(error_message=message, infer_response=echo)

        async for response in answer_stream(
            request_iterator, answer, error_answer, self._max_stream_in_flight
        ):
            yield response
