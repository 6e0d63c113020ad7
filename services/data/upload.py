"""One upload's way from its first chunk to a committed version.

The upload streams into a temp blob while it is hashed; on `finish` the version's name
follows from that digest and how the source is read (format, label column, split ratios,
reference), so identical content returns the existing version without any work (and the
temp blob is dropped). Otherwise ingest reads the temp file itself (no second read to
verify it, no download back from object storage) and writes shard and Parquet blobs;
then the temp blob commits as the version's source, and the version's metadata commits
last, so a crash at any point leaves no visible version, only blobs that
`BlobKeeper.collect` removes at the next start.
Blobs a running ingest has written are held until it ends: deleting a version, or
rejecting an upload, never removes a blob another ingest of the same content is about
to name."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.data.entities import DataFormat, DatasetVersion, SplitRatios, version_name
from services.data.ingest import (
    IngestLimits,
    IngestResult,
    check_bad_rows,
    ingest,
    open_source,
)
from services.data.metrics import ROWS_INGESTED, ROWS_REJECTED
from services.data.store import MetadataStore
from shared.blobstore import BlobStore, BlobWriter
from shared.errors import invalid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestRequest:
    """An upload's header, checked, with the server's defaults filled in."""

    dataset: str
    format: DataFormat
    label_column: str
    ratios: SplitRatios
    max_bad_row_fraction: float
    reference: DatasetVersion | None

    def version_digest(self, source_sha256: str) -> str:
        identity = {
            "source_sha256": source_sha256,
            "format": self.format.value,
            "label_column": self.label_column,
            "split_ratios": list(self.ratios.as_tuple()),
            "reference_version": self.reference.name if self.reference else "",
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class BlobKeeper:
    """Commits the blobs of running ingests and deletes blobs that nothing names (in a
    store of this process's own; in a shared one, shared.blob_collector does)."""

    def __init__(self, blobs: BlobStore, store: MetadataStore) -> None:
        self._blobs = blobs
        self._store = store
        # Held while a version commits, a blob commits, or blobs are collected.
        self.lock = threading.Lock()
        self._held: Counter[str] = Counter()

    def commit(self, writer: BlobWriter) -> str:
        if self._blobs.shared:
            # Nothing is held or collected here (the collector's grace covers it), so a
            # slow upload to object storage holds no other ingest up.
            return writer.commit()
        with self.lock:
            digest = writer.commit()
            self._held[digest] += 1
            return digest

    def release(self, digests: list[str]) -> None:
        """An ingest has ended: its blobs are deleted unless some version names them."""
        with self.lock:
            self._held.subtract(digests)
            self._held = +self._held
            self._collect(set(digests))

    def collect(self, candidates: Iterable[str]) -> int:
        with self.lock:
            return self._collect(set(candidates))

    def _collect(self, candidates: set[str]) -> int:
        if self._blobs.shared:
            # Other replicas' uploads are not held here: the collector's grace covers them.
            return 0
        unheld = {digest for digest in candidates if digest not in self._held}
        garbage = unheld - self._store.referenced(unheld) if unheld else set()
        for digest in garbage:
            self._blobs.delete(digest)
        return len(garbage)


class IngestSink:
    """Where one ingest writes its shard blobs; remembers them for `release`."""

    def __init__(self, blobs: BlobStore, keeper: BlobKeeper) -> None:
        self._blobs = blobs
        self._keeper = keeper
        self.digests: list[str] = []

    def put(self, parts: Iterable[bytes | memoryview]) -> tuple[str, int]:
        writer = self._blobs.writer()
        try:
            for part in parts:
                writer.write(part)
            digest = self._keeper.commit(writer)
        except BaseException:
            writer.abort()
            raise
        self.digests.append(digest)
        return digest, writer.size


class Upload:
    """One upload in progress: `write` the file's chunks, then `finish` (or `abort`)."""

    def __init__(
        self,
        request: IngestRequest,
        blobs: BlobStore,
        store: MetadataStore,
        keeper: BlobKeeper,
        limits: IngestLimits,
        max_upload_bytes: int,
    ) -> None:
        self._request = request
        self._blobs = blobs
        self._store = store
        self._keeper = keeper
        self._limits = limits
        self._max_upload_bytes = max_upload_bytes
        self._writer = blobs.writer()

    def write(self, chunk: bytes) -> None:
        if self._writer.size + len(chunk) > self._max_upload_bytes:
            self.abort()
            raise invalid("chunk", f"the upload is larger than {self._max_upload_bytes} bytes")
        self._writer.write(chunk)

    def abort(self) -> None:
        self._writer.abort()

    def finish(self) -> tuple[DatasetVersion, bool]:
        """The version of the uploaded content, and whether this upload made it visible."""
        if self._writer.size == 0:
            self.abort()
            raise invalid("chunk", "no content: send the file in chunk messages after the header")
        request = self._request
        source_bytes = self._writer.size
        source_sha256 = self._writer.sha256
        sink = IngestSink(self._blobs, self._keeper)
        committed: list[str] = []
        try:
            digest = request.version_digest(source_sha256)
            name = version_name(request.dataset, digest)
            known = self._store.find(name)
            if known is not None:
                self.abort()
                return self._existing(*known)
            # Ingested from the upload's own temp file, hashed as it arrived: no second
            # read to verify it, nor a download back from object storage.
            source = self._writer.seal()
            version, result = self._ingest(name, digest, source, source_sha256, source_bytes, sink)
            committed.append(self._keeper.commit(self._writer))
            with self._keeper.lock:
                known = self._store.find(name)
                if known is not None:
                    return self._existing(*known)
                self._store.insert(version, result.statistics, result.shards, result.parquet_files)
            ROWS_INGESTED.labels(version.dataset).inc(result.rows.kept)
            ROWS_REJECTED.labels(version.dataset).inc(result.rows.dropped)
            log.info(
                "dataset version created",
                extra={
                    "version": name,
                    "source_bytes": source_bytes,
                    "rows": result.rows.total,
                    "dropped_rows": result.rows.dropped,
                    "shards": len(result.shards),
                },
            )
            return version, True
        except BaseException:
            self.abort()
            raise
        finally:
            self._keeper.release([*committed, *sink.digests])

    def _ingest(
        self,
        name: str,
        digest: str,
        source_path: Path,
        source_sha256: str,
        source_bytes: int,
        sink: IngestSink,
    ) -> tuple[DatasetVersion, IngestResult]:
        request = self._request
        source = open_source(
            request.format, source_path, request.label_column, self._limits, self._blobs.temp_dir
        )
        result = ingest(
            source,
            request.ratios,
            request.max_bad_row_fraction,
            request.reference.schema if request.reference else None,
            self._limits,
            sink,
        )
        version = DatasetVersion(
            name=name,
            dataset=request.dataset,
            digest=digest,
            source_sha256=source_sha256,
            source_bytes=source_bytes,
            format=request.format,
            label_column=request.label_column,
            split_ratios=request.ratios,
            max_bad_row_fraction=request.max_bad_row_fraction,
            reference_version=request.reference.name if request.reference else "",
            schema=result.schema,
            rows=result.rows,
            anomalies=result.anomalies,
            created_at=datetime.now(UTC),
        )
        return version, result

    def _existing(self, version: DatasetVersion, deleted: bool) -> tuple[DatasetVersion, bool]:
        """Identical content: the same version, if this upload's policy accepts it."""
        check_bad_rows(
            version.rows.dropped,
            version.rows.total,
            self._request.max_bad_row_fraction,
            version.anomalies.examples,
        )
        if deleted:
            self._store.set_deleted(version.name, None)
        return version, deleted
