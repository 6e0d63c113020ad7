"""Receiving one version's artifacts: bytes routed into blob writers in declared order,
with declared sizes and sha256 digests enforced. Nothing becomes visible here: `finish`
commits the blobs and hands the verified artifact list back for the registry to record."""

from __future__ import annotations

from services.registry.entities import ArtifactSpec
from shared.blobstore import BlobStore, BlobWriter
from shared.errors import invalid


class ArtifactReceiver:
    def __init__(self, blobs: BlobStore, artifacts: list[ArtifactSpec]) -> None:
        self._blobs = blobs
        self._artifacts = artifacts
        self._index = 0
        self._writer: BlobWriter | None = None
        self._finished: list[BlobWriter] = []

    def write(self, data: bytes) -> None:
        """Append `data`; a chunk may end one artifact and begin the next."""
        view = memoryview(data)
        while view:
            if self._index >= len(self._artifacts):
                raise invalid("chunk", "more bytes than the declared artifact sizes add up to")
            spec = self._artifacts[self._index]
            if self._writer is None:
                self._writer = self._blobs.writer()
            take = min(len(view), spec.size_bytes - self._writer.size)
            self._writer.write(view[:take])
            view = view[take:]
            if self._writer.size == spec.size_bytes:
                self._close_current()

    def _close_current(self) -> None:
        assert self._writer is not None
        spec = self._artifacts[self._index]
        if self._writer.sha256 != spec.sha256:
            field = f"header.artifacts[{self._index}].sha256"
            actual = self._writer.sha256
            self._writer.abort()
            self._writer = None
            raise invalid(field, f"declared {spec.sha256} but the content hashes to {actual}")
        self._finished.append(self._writer)
        self._writer = None
        self._index += 1

    def finish(self) -> None:
        """Check every artifact arrived whole, then make their blobs durable."""
        # Zero-byte artifacts need no chunk: open and close them here.
        while self._index < len(self._artifacts) and self._artifacts[self._index].size_bytes == 0:
            self._writer = self._blobs.writer()
            self._close_current()
        if self._index < len(self._artifacts):
            spec = self._artifacts[self._index]
            received = self._writer.size if self._writer else 0
            raise invalid(
                f"header.artifacts[{self._index}].size_bytes",
                f"stream ended after {received} of {spec.size_bytes} bytes of {spec.name!r}",
            )
        for writer in self._finished:
            writer.commit()
        self._finished.clear()

    def abort(self) -> None:
        for writer in self._finished:
            writer.abort()
        if self._writer is not None:
            self._writer.abort()
        self._finished.clear()
        self._writer = None
