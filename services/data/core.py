"""The data service's logic, free of gRPC: uploads, samples, versions, reads and deletes.

The core checks requests, hands uploads to `services.data.upload`, and answers reads
from the metadata store and the blob store. A delete asks the lineage checker (the
registry) first when there is one, and is a soft delete when there is none."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from services.data.entities import (
    Batch,
    DataFormat,
    DatasetVersion,
    Page,
    ParquetFile,
    ShardInfo,
    ShardLocation,
    Shards,
    Split,
    SplitRatios,
    Statistics,
    UploadSpec,
    check_version_name,
)
from services.data.ingest import (
    IngestLimits,
)
from services.data.npz_source import LABEL as NPZ_LABEL
from services.data.samples import sample_file
from services.data.shards import FEATURES, LABELS, read_records, rebatch, record_dtype
from services.data.store import MetadataStore
from services.data.upload import BlobKeeper, IngestRequest, Upload
from shared.blobstore import BlobStore
from shared.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, invalid
from shared.names import check_name

# Room left in a ReadBatches message for everything but the two tensors' bytes.
MESSAGE_OVERHEAD_BYTES = 4096


@dataclass(frozen=True)
class CoreConfig:
    ingest: IngestLimits = IngestLimits()
    default_max_bad_row_fraction: float = 0.05
    max_upload_bytes: int = 16 * 1024**3
    default_batch_size: int = 256
    max_batch_size: int = 65536
    max_message_bytes: int = 64 * 1024 * 1024
    default_page_size: int = 50


class LineageChecker(Protocol):
    async def models_using(self, dataset_version: str) -> list[str]:
        """Registered model versions whose lineage names `dataset_version`."""
        ...


def _encode_page_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode()


def _decode_page_token(token: str) -> int | None:
    if not token:
        return None
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise invalid("page_token", "not a page token this server issued") from None
    if not isinstance(after, int):
        raise invalid("page_token", "not a page token this server issued")
    return after


class DataCore:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        config: CoreConfig | None = None,
        lineage: LineageChecker | None = None,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._config = config or CoreConfig()
        self._lineage = lineage
        self._keeper = BlobKeeper(blobs, store)

    def collect_garbage(self) -> int:
        """Delete blobs no version names (left by a crash); run at start-up with a store of
        this process's own. Returns the count."""
        return self._keeper.collect(self._blobs.digests())

    def start_upload(self, spec: UploadSpec, field_prefix: str = "header.") -> Upload:
        """Check an upload's header; InvalidArgument names every problem at once."""
        return Upload(
            self._check_spec(spec, field_prefix),
            self._blobs,
            self._store,
            self._keeper,
            self._config.ingest,
            self._config.max_upload_bytes,
        )

    def import_sample(
        self, sample: str, dataset: str, ratios: SplitRatios | None
    ) -> tuple[DatasetVersion, bool]:
        file = sample_file(sample)
        spec = UploadSpec(
            dataset=dataset or sample,
            format=file.format.value,
            label_column=file.label_column,
            split_ratios=ratios,
            max_bad_row_fraction=0.0,
        )
        upload = self.start_upload(spec, field_prefix="")
        try:
            upload.write(file.content)
        except BaseException:
            upload.abort()
            raise
        return upload.finish()

    def _check_spec(self, spec: UploadSpec, prefix: str) -> IngestRequest:
        problems: list[FieldViolation] = []
        name_violation = check_name(f"{prefix}dataset", spec.dataset)
        if name_violation:
            problems.append(name_violation)
        try:
            data_format = DataFormat(spec.format)
        except ValueError:
            problems.append(
                FieldViolation(
                    f"{prefix}format",
                    f"must be CSV, PARQUET, JSONL or NPZ, got {spec.format or 'none'}",
                )
            )
            data_format = None
        label_column = spec.label_column
        if data_format is not None and data_format.tabular and not label_column:
            problems.append(
                FieldViolation(f"{prefix}label_column", f"a {data_format.name} upload must name it")
            )
        if data_format is DataFormat.NPZ:
            if label_column not in ("", NPZ_LABEL):
                problems.append(
                    FieldViolation(
                        f"{prefix}label_column", "an NPZ's labels are its array y: leave it empty"
                    )
                )
            label_column = NPZ_LABEL
        ratios = spec.split_ratios or SplitRatios()
        values = ratios.as_tuple()
        if not all(math.isfinite(v) and v >= 0 for v in values) or not math.isclose(
            sum(values), 1.0, abs_tol=1e-9
        ):
            problems.append(
                FieldViolation(
                    f"{prefix}split_ratios", f"must be >= 0 and sum to 1, got {list(values)}"
                )
            )
        fraction = spec.max_bad_row_fraction
        if fraction is None:
            fraction = self._config.default_max_bad_row_fraction
        if not 0 <= fraction <= 1:
            problems.append(
                FieldViolation(
                    f"{prefix}max_bad_row_fraction", f"must be in [0, 1], got {fraction}"
                )
            )
        reference = self._reference(spec.reference_version, data_format, prefix, problems)
        if problems:
            raise InvalidArgument(problems)
        assert data_format is not None
        return IngestRequest(spec.dataset, data_format, label_column, ratios, fraction, reference)

    def _reference(
        self,
        name: str,
        data_format: DataFormat | None,
        prefix: str,
        problems: list[FieldViolation],
    ) -> DatasetVersion | None:
        if not name:
            return None
        field = f"{prefix}reference_version"
        try:
            reference = self._store.get(check_version_name(name, field))
        except InvalidArgument as error:
            problems.extend(error.violations)
            return None
        except NotFound:
            problems.append(FieldViolation(field, f"dataset version {name!r} not found"))
            return None
        if data_format is not None and reference.format is not data_format:
            problems.append(
                FieldViolation(
                    field, f"is a {reference.format.name} dataset, not {data_format.name}"
                )
            )
        return reference

    def get_version(self, name: str) -> DatasetVersion:
        return self._store.get(check_version_name(name, "version"))

    def list_versions(self, dataset: str, page_size: int, page_token: str) -> Page[DatasetVersion]:
        if dataset:
            violation = check_name("dataset", dataset)
            if violation:
                raise InvalidArgument(violation)
        if page_size < 0:
            raise invalid("page_size", "must be >= 0")
        limit = min(page_size or self._config.default_page_size, 1000)
        rows = self._store.page(dataset, _decode_page_token(page_token), limit + 1)
        token = _encode_page_token(rows[limit - 1][0]) if len(rows) > limit else ""
        return Page([version for _, version in rows[:limit]], token)

    def statistics(self, name: str) -> Statistics:
        return self._store.statistics(check_version_name(name, "version"))

    def shards(self, name: str, split: Split | None, parquet: bool = False) -> Shards:
        """Where a version's .npy shards lie, or (`parquet`) its Parquet files."""
        version = self.get_version(name)
        files: list[ShardInfo] | list[ParquetFile] = (
            self._store.parquet_files(name, split) if parquet else self._store.shards(name, split)
        )
        return Shards(
            version=name,
            feature_shape=version.schema.feature_shape,
            record_bytes=0 if parquet else record_dtype(version.schema.feature_shape).itemsize,
            locations=[ShardLocation(file, self._blobs.uri(file.sha256)) for file in files],
        )

    def read_batches(self, name: str, split: Split, batch_size: int) -> Iterator[Batch]:
        """Batches of a split's rows in stored order; checks the request before it returns."""
        return self.version_batches(name, split, batch_size)[1]

    def version_batches(
        self, name: str, split: Split, batch_size: int
    ) -> tuple[DatasetVersion, Iterator[Batch]]:
        """The version, and its split's batches as `read_batches` gives them, from one
        lookup of the version."""
        version = self.get_version(name)
        dtype = record_dtype(version.schema.feature_shape)
        size = self._batch_size(batch_size, dtype.itemsize)
        return version, self._batches(self._store.shards(name, split), dtype, size)

    def _batch_size(self, requested: int, record_bytes: int) -> int:
        if requested < 0:
            raise invalid("batch_size", "must be >= 0")
        fits = max(1, (self._config.max_message_bytes - MESSAGE_OVERHEAD_BYTES) // record_bytes)
        if requested == 0:
            return min(self._config.default_batch_size, fits)
        limit = min(self._config.max_batch_size, fits)
        if requested > limit:
            raise invalid(
                "batch_size", f"at most {limit} rows of {record_bytes} bytes fit in one message"
            )
        return requested

    def _batches(self, shards: list[ShardInfo], dtype: np.dtype, size: int) -> Iterator[Batch]:
        records = (
            chunk
            for shard in shards
            for chunk in read_records(
                self._blobs.read_chunks(shard.sha256), shard.header_bytes, dtype
            )
        )
        first_row = 0
        for batch in rebatch(records, size):
            yield Batch(first_row, batch[FEATURES], batch[LABELS])
            first_row += len(batch)

    async def delete_version(self, name: str) -> bool:
        """Delete a version; True when it was a soft delete (content kept)."""
        await asyncio.to_thread(self.get_version, name)
        if self._lineage is None:
            await asyncio.to_thread(self._store.set_deleted, name, datetime.now(UTC))
            return True
        users = await self._lineage.models_using(name)
        if users:
            raise FailedPrecondition(
                f"dataset version {name} is in the lineage of registered model versions "
                f"({', '.join(users)}); delete those first"
            )
        await asyncio.to_thread(self._purge, name)
        return False

    def _purge(self, name: str) -> None:
        with self._keeper.lock:
            digests = self._store.purge(name)
        self._keeper.collect(digests)
