"""The data service as a `DataSource`: a version's shape and classes, its train-split
normalization statistics, and its splits.

A split is read straight from the version's Parquet files where the data service stored
them (services.training.version_files) when this process can reach them: a shared disk,
or the same object store. Otherwise (files out of reach, a version stored before Parquet
files, `direct_reads` off) it arrives as a ReadBatches server stream of float32 feature
/ int64 label tensors (decoded with `numpy.frombuffer`, no copies), read again from the
start on a transient error within the deadline. Either way the arrays are the same, and
feed Keras through `tf.data` in the trainer. A version the data service does not know is
NOT_FOUND on `spec.dataset_version`."""

from __future__ import annotations

import asyncio
import logging

import grpc
import numpy as np

from services.training.datasource import (
    DatasetInfo,
    TrainingData,
    check_dataset_version,
    split_validation,
)
from services.training.metrics import SPLIT_READS
from services.training.version_files import Corrupt, Unreachable, VersionFiles
from shared.errors import NotFound, invalid
from shared.retries import retry_idempotent
from shared.tensors import from_tensor
from tfmesh.data.v1 import data_pb2 as pb
from tfmesh.data.v1 import data_pb2_grpc

log = logging.getLogger(__name__)

FIELD = "spec.dataset_version"
READ_BATCH_ROWS = 4096


class DataServiceSource:
    def __init__(
        self, channel: grpc.aio.Channel, deadline_s: float = 120.0, direct_reads: bool = True
    ) -> None:
        self._stub = data_pb2_grpc.DataServiceStub(channel)
        self._deadline_s = deadline_s
        self._files = VersionFiles() if direct_reads else None

    async def _version(self, dataset_version: str) -> pb.DatasetVersion:
        check_dataset_version(dataset_version, FIELD)
        request = pb.GetDatasetVersionRequest(version=dataset_version)
        try:
            response = await self._stub.GetDatasetVersion(request, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound("dataset version", dataset_version, FIELD) from None
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise invalid(FIELD, error.details() or "refused by the data service") from None
            raise
        return response.version

    async def describe(self, dataset_version: str) -> DatasetInfo:
        return self._info(await self._version(dataset_version))

    @staticmethod
    def _info(version: pb.DatasetVersion) -> DatasetInfo:
        schema = version.schema
        return DatasetInfo(
            version=version.name,
            feature_shape=tuple(int(dim) for dim in schema.feature_shape),
            num_classes=len(schema.label_vocabulary),
        )

    async def _read_split(
        self, version: pb.DatasetVersion, split: pb.Split.ValueType
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._files is not None and (files := await self._parquet_files(version, split)):
            try:
                read = await asyncio.wait_for(
                    asyncio.to_thread(self._files.read_split, files, version.schema),
                    self._deadline_s,
                )
            except (Unreachable, TimeoutError) as reason:
                level = logging.ERROR if isinstance(reason, Corrupt) else logging.WARNING
                why = str(reason) or f"the files took longer than {self._deadline_s} s"
                log.log(level, "reading the split through the data service: %s", why)
            else:
                SPLIT_READS.labels("files").inc()
                return read
        SPLIT_READS.labels("service").inc()
        return await self._stream_split(version, split)

    async def _parquet_files(
        self, version: pb.DatasetVersion, split: pb.Split.ValueType
    ) -> list[pb.Shard]:
        """The split's Parquet files; none for a version stored before them, and none
        when the data service does not answer (its stream then tells why)."""
        request = pb.GetShardsRequest(
            version=version.name, split=split, format=pb.SHARD_FORMAT_PARQUET
        )
        try:
            shards = (await self._stub.GetShards(request, timeout=self._deadline_s)).shards
        except grpc.aio.AioRpcError as error:
            log.warning("no Parquet files listed: %s", error.details() or error.code())
            return []
        return [s for s in shards if s.format == pb.SHARD_FORMAT_PARQUET]

    async def _stream_split(
        self, version: pb.DatasetVersion, split: pb.Split.ValueType
    ) -> tuple[np.ndarray, np.ndarray]:
        feature_shape = tuple(int(dim) for dim in version.schema.feature_shape)
        request = pb.ReadBatchesRequest(
            version=version.name, split=split, batch_size=READ_BATCH_ROWS
        )

        async def attempt(timeout_s: float | None) -> tuple[np.ndarray, np.ndarray]:
            features, labels = [], []
            async for batch in self._stub.ReadBatches(request, timeout=timeout_s):
                features.append(from_tensor(batch.features, "features"))
                labels.append(from_tensor(batch.labels, "labels"))
            if not features:
                return np.zeros((0, *feature_shape), np.float32), np.zeros((0,), np.int64)
            return np.concatenate(features), np.concatenate(labels)

        return await retry_idempotent(attempt, deadline_s=self._deadline_s)

    async def load(self, dataset_version: str) -> TrainingData:
        version = await self._version(dataset_version)
        info = self._info(version)
        statistics = await self._stub.GetStatistics(
            pb.GetStatisticsRequest(version=version.name), timeout=self._deadline_s
        )
        x_train, y_train = await self._read_split(version, pb.SPLIT_TRAIN)
        x_val, y_val = await self._read_split(version, pb.SPLIT_VALIDATION)
        x_test, y_test = await self._read_split(version, pb.SPLIT_TEST)
        if len(x_val) == 0:
            x_train, y_train, x_val, y_val = split_validation(x_train, y_train)
        normalization = statistics.normalization
        return TrainingData(
            info=info,
            x_train=x_train,
            y_train=y_train,
            x_val=x_val,
            y_val=y_val,
            x_test=x_test,
            y_test=y_test,
            mean=np.asarray(normalization.mean, np.float32),
            std=np.asarray(normalization.std, np.float32),
        )
