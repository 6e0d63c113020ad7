"""gRPC adapter of `tfmesh.inference.v1.InferenceService`: convert, call the core, convert."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from services.inference import converters as c
from services.inference.core import InferenceCore
from shared.errors import DomainError, invalid
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, core: InferenceCore) -> None:
        self._core = core

    async def _predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        prediction = await self._core.predict(
            request.model,
            c.inputs_from_proto(request.inputs),
            version=request.version,
            label=request.label,
            deadline=c.deadline_of(context),
            output_filter=list(request.output_filter),
        )
        return c.prediction_to_proto(prediction, request.request_id)

    async def Predict(self, request: pb.PredictRequest, context) -> pb.PredictResponse:
        return await self._predict(request, context)

    async def PredictStream(
        self, request_iterator: AsyncIterator[pb.PredictRequest], context
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        answers: asyncio.Queue[pb.PredictStreamResponse | None] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()

        async def answer(request: pb.PredictRequest) -> None:
            try:
                response = pb.PredictStreamResponse(
                    request_id=request.request_id, response=await self._predict(request, context)
                )
            except DomainError as error:
                response = pb.PredictStreamResponse(
                    request_id=request.request_id, error=c.error_to_proto(error)
                )
            except Exception:  # noqa: BLE001 - one failed request must not end the stream
                log.exception("unhandled error in a streamed prediction")
                response = pb.PredictStreamResponse(
                    request_id=request.request_id,
                    error=pb.Status(code=grpc.StatusCode.INTERNAL.value[0], message="internal"),
                )
            await answers.put(response)

        async def read() -> None:
            async for request in request_iterator:
                task = asyncio.create_task(answer(request))
                running.add(task)
                task.add_done_callback(running.discard)
            while running:
                await asyncio.gather(*running)
            await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (response := await answers.get()) is not None:
                yield response
            await reader
        finally:
            for task in [reader, *running]:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def GetModelStatus(
        self, request: pb.GetModelStatusRequest, context
    ) -> pb.GetModelStatusResponse:
        return pb.GetModelStatusResponse(
            status=c.model_status_to_proto(self._core.model(request.model))
        )

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        if request.page_size < 0:
            raise invalid("page_size", "must be >= 0")
        models = self._core.models()
        start = 0
        if request.page_token:
            names = [m.name for m in models]
            if request.page_token not in names:
                raise invalid("page_token", "not a page token this server issued")
            start = names.index(request.page_token) + 1
        size = request.page_size or DEFAULT_PAGE_SIZE
        page = models[start : start + size]
        more = start + size < len(models)
        return pb.ListModelsResponse(
            models=[c.model_status_to_proto(m) for m in page],
            next_page_token=page[-1].name if more else "",
        )
