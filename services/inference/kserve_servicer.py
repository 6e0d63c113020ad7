"""gRPC adapter of KServe v2's `inference.GRPCInferenceService` onto the service, with
Triton's extensions beside the protocol: streaming inference, model configuration and
statistics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from inference import grpc_predict_v2_pb2 as pb
from inference import grpc_predict_v2_pb2_grpc
from services.inference import kserve_converters as c
from services.inference import triton_converters as triton
from services.inference.catalog import VersionState
from services.inference.controls import Controls
from services.inference.converters import deadline_of
from services.inference.pipeline import Pipeline
from services.inference.streaming import answer_stream
from shared.errors import DomainError, InvalidArgument
from shared.serving_names import SERVER_NAME, SERVER_VERSION

log = logging.getLogger(__name__)

EXTENSIONS = ["model_configuration", "statistics", "streaming"]


def platform_of(runtime: str) -> str:
    """The `platform` of a model's metadata and configuration: `tfmesh_<runtime>`."""
    return f"tfmesh_{runtime}"


class KServeServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, pipeline: Pipeline, max_stream_in_flight: int) -> None:
        self._pipeline = pipeline
        self._max_stream_in_flight = max_stream_in_flight

    async def ServerLive(self, request: pb.ServerLiveRequest, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context) -> pb.ServerReadyResponse:
        ready = self._pipeline.ready() and self._pipeline.catalog().ready()
        return pb.ServerReadyResponse(ready=ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        if not self._pipeline.ready():
            return pb.ModelReadyResponse(ready=False)
        catalog = self._pipeline.catalog()
        if not catalog.knows(request.name):
            return pb.ModelReadyResponse(ready=False)
        version, label = c.version_pin(request.version, "version")
        return pb.ModelReadyResponse(ready=catalog.model(request.name).ready(version, label))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context
    ) -> pb.ModelMetadataResponse:
        version, label = c.version_pin(request.version, "version")
        catalog = self._pipeline.catalog()
        target = catalog.resolve(request.name, version, label)
        model = catalog.model(request.name)
        assert target.signature is not None  # routable versions are loaded
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=[
                str(number)
                for number, view in sorted(model.versions.items())
                if view.state is VersionState.AVAILABLE
            ],
            platform=platform_of(target.runtime),
            inputs=[c.tensor_metadata(s) for s in target.signature.inputs],
            outputs=[c.tensor_metadata(s) for s in target.signature.outputs],
        )

    async def _infer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        version, label = c.version_pin(request.model_version, "model_version")
        inputs, indexes = c.inputs_from_proto(request)
        try:
            prediction = await self._pipeline.predict(
                request.model_name,
                inputs,
                version=version,
                label=label,
                deadline=deadline_of(context),
                output_filter=[output.name for output in request.outputs],
                request_id=request.id,
            )
        except InvalidArgument as error:
            raise error.renamed(c.field_renamer(indexes)) from None
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

    async def ModelConfig(self, request: pb.ModelConfigRequest, context) -> pb.ModelConfigResponse:
        version, label = c.version_pin(request.version, "version")
        catalog = self._pipeline.catalog()
        target = catalog.resolve(request.name, version, label)
        config = triton.model_config(
            catalog.model(request.name), target, platform_of(target.runtime)
        )
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context
    ) -> pb.ModelStatisticsResponse:
        version, label = c.version_pin(request.version, "version")
        if label:
            version = self._pipeline.catalog().resolve(request.name, 0, label).version
        statistics = await self._pipeline.control(Controls.statistics, request.name, version)
        return pb.ModelStatisticsResponse(
            model_stats=[triton.model_statistics(s) for s in statistics]
        )
