"""The gRPC face of the data core: each RPC converts its request, calls the core (blocking
work on a worker thread) and converts the answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator

import grpc

from services.data import converters
from services.data.arrow_reads import ipc_stream
from services.data.core import DataCore, Upload
from services.data.entities import Batch
from shared.errors import invalid
from tfmesh.data.v1 import data_pb2 as pb
from tfmesh.data.v1 import data_pb2_grpc

# The most Arrow bytes in one ReadArrow message: with the message's framing, within a
# gRPC client's default limit (4 MiB).
ARROW_MESSAGE_BYTES = 4 * 1024 * 1024 - 1024


class DataServicer(data_pb2_grpc.DataServiceServicer):
    def __init__(self, core: DataCore) -> None:
        self._core = core

    async def UploadDataset(
        self,
        request_iterator: AsyncIterable[pb.UploadDatasetRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadDatasetResponse:
        upload: Upload | None = None
        try:
            async for request in request_iterator:
                part = request.WhichOneof("part")
                if part == "header":
                    if upload is not None:
                        raise invalid("header", "sent twice: one header, then chunks")
                    spec = converters.upload_spec_from_proto(request.header)
                    upload = await asyncio.to_thread(self._core.start_upload, spec)
                elif part == "chunk":
                    if upload is None:
                        raise invalid("chunk", "came before the header: send the header first")
                    await asyncio.to_thread(upload.write, request.chunk)
                else:
                    raise invalid("part", "a message must carry a header or a chunk")
            if upload is None:
                raise invalid("header", "the stream ended without a header")
        except BaseException:
            if upload is not None:
                upload.abort()
            raise
        version, created = await asyncio.to_thread(upload.finish)
        return pb.UploadDatasetResponse(
            version=converters.version_to_proto(version), created=created
        )

    async def ImportSample(
        self, request: pb.ImportSampleRequest, context: grpc.aio.ServicerContext
    ) -> pb.ImportSampleResponse:
        version, created = await asyncio.to_thread(
            self._core.import_sample,
            request.sample,
            request.dataset,
            converters.split_ratios_from_proto(request.split_ratios),
        )
        return pb.ImportSampleResponse(
            version=converters.version_to_proto(version), created=created
        )

    async def GetDatasetVersion(
        self, request: pb.GetDatasetVersionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDatasetVersionResponse:
        version = await asyncio.to_thread(self._core.get_version, request.version)
        return pb.GetDatasetVersionResponse(version=converters.version_to_proto(version))

    async def ListDatasetVersions(
        self, request: pb.ListDatasetVersionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDatasetVersionsResponse:
        page = await asyncio.to_thread(
            self._core.list_versions, request.dataset, request.page_size, request.page_token
        )
        return pb.ListDatasetVersionsResponse(
            versions=[converters.version_to_proto(v) for v in page.items],
            next_page_token=page.next_page_token,
        )

    async def DeleteDatasetVersion(
        self, request: pb.DeleteDatasetVersionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDatasetVersionResponse:
        content_kept = await self._core.delete_version(request.version)
        return pb.DeleteDatasetVersionResponse(content_kept=content_kept)

    async def GetStatistics(
        self, request: pb.GetStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatisticsResponse:
        statistics = await asyncio.to_thread(self._core.statistics, request.version)
        return converters.statistics_to_proto(request.version, statistics)

    async def ReadBatches(
        self, request: pb.ReadBatchesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReadBatchesResponse]:
        split = converters.split_from_proto(request.split)
        batches = await asyncio.to_thread(
            self._core.read_batches, request.version, split, request.batch_size
        )
        while (message := await asyncio.to_thread(_next_message, batches)) is not None:
            yield message

    async def ReadArrow(
        self, request: pb.ReadArrowRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReadArrowResponse]:
        split = converters.split_from_proto(request.split)
        version, batches = await asyncio.to_thread(
            self._core.version_batches, request.version, split, request.batch_size
        )
        pieces = ipc_stream(version.schema, version.name, split, batches)
        try:
            while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
                # Message boundaries are not the stream's: a piece larger than a default
                # client takes (a wide first batch with its dictionaries) goes in slices.
                for start in range(0, max(len(piece), 1), ARROW_MESSAGE_BYTES):
                    yield pb.ReadArrowResponse(arrow=piece[start : start + ARROW_MESSAGE_BYTES])
        finally:
            # A cancelled call may leave the generator running in its thread: it ends there.
            with contextlib.suppress(ValueError):
                pieces.close()

    async def GetShards(
        self, request: pb.GetShardsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetShardsResponse:
        split = converters.optional_split_from_proto(request.split)
        parquet = converters.parquet_from_proto(request.format)
        shards = await asyncio.to_thread(self._core.shards, request.version, split, parquet)
        return converters.shards_to_proto(shards)


def _next_message(batches: Iterator[Batch]) -> pb.ReadBatchesResponse | None:
    """The next batch as a message (reading and copying off the event loop), or None."""
    batch = next(batches, None)
    return None if batch is None else converters.batch_to_proto(batch)
