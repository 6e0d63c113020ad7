"""Content-addressed blob storage on the local filesystem.

Blobs live at `<root>/sha256/<2 hex>/<64 hex>`. A writer streams into a temp file under
`<root>/tmp`, hashing as it goes; `commit` fsyncs it and renames it into place, so a blob
path either holds complete, verified content or does not exist. Temp files left by a
killed process are swept by `sweep_temp` at start-up. Readers verify the digest as
they stream and raise `DataLoss` on a mismatch."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shared.errors import DataLoss, NotFound

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_CHUNK_BYTES = 1024 * 1024


def is_sha256_hex(value: str) -> bool:
    return bool(_HEX64.match(value))


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory so that renames into it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobWriter:
    """One blob being written; `commit` makes it visible, `abort` throws it away."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=store.temp_dir, prefix="upload-")
        self._file = os.fdopen(fd, "wb")
        self._temp = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def commit(self) -> str:
        """Make the blob durable and visible; returns its sha256."""
        digest = self.sha256
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._store.path_for(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._temp, final)
        fsync_path(final.parent)
        return digest

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._temp.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp_dir = root / "tmp"
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        (root / "sha256").mkdir(parents=True, exist_ok=True)

    def path_for(self, digest: str) -> Path:
        if not is_sha256_hex(digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return self.root / "sha256" / digest[:2] / digest

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put_bytes(self, data: bytes) -> str:
        writer = self.writer()
        try:
            writer.write(data)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def digests(self) -> Iterator[str]:
        """Every stored blob's digest (for collecting blobs that no metadata names)."""
        for path in (self.root / "sha256").glob("*/*"):
            if is_sha256_hex(path.name):
                yield path.name

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path_for(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound("blob", digest) from None

    def read_chunks(self, digest: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
        """Yield the blob's content; raise DataLoss after the last chunk if it is corrupt."""
        path = self.path_for(digest)
        hasher = hashlib.sha256()
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise NotFound("blob", digest) from None
        with handle:
            while chunk := handle.read(chunk_bytes):
                hasher.update(chunk)
                yield chunk
        if hasher.hexdigest() != digest:
            raise DataLoss(f"blob {digest} is corrupt: content hashes to {hasher.hexdigest()}")

    def read_bytes(self, digest: str) -> bytes:
        return b"".join(self.read_chunks(digest))

    def delete(self, digest: str) -> None:
        self.path_for(digest).unlink(missing_ok=True)

    def sweep_temp(self) -> int:
        """Remove temp files of uploads that never committed (a crash); returns the count."""
        removed = 0
        for leftover in self.temp_dir.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed
