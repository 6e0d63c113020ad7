"""Content-addressed blob storage: one interface, a local-filesystem backend, and a factory
that picks the backend from a URL (`s3://bucket/prefix` for object storage,
`shared.s3_blobstore`; a path or `file://` URL for the local filesystem).

The contract both backends keep: a blob is named by the sha256 of its content and is
visible only whole and verified. A writer spools into a temp file under the store's spool
directory, hashing as it goes; `commit` publishes it under its digest (a rename on the
local filesystem, a multipart upload completed only after the digest matches in object
storage), `abort` throws it away. Leftovers of a killed process are swept by `sweep_temp`.
Readers verify the digest as they stream and raise `DataLoss` on a mismatch.

Local layout: blobs at `<root>/sha256/<2 hex>/<64 hex>`, temp files under `<root>/tmp`."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from shared.errors import DataLoss, NotFound
from shared.settings import SettingsError, StatefulSettings

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_CHUNK_BYTES = 1024 * 1024


def is_sha256_hex(value: str) -> bool:
    return bool(_HEX64.match(value))


def check_digest(digest: str) -> str:
    if not is_sha256_hex(digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return digest


def blob_key(digest: str) -> str:
    """Where a blob lives relative to the store's root or prefix."""
    return f"sha256/{digest[:2]}/{check_digest(digest)}"


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

    def seal(self) -> Path:
        """Flush, fsync and close the content written so far; it may then be read at the
        returned path (a temp file) until `commit` or `abort`."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        return self._temp

    def commit(self) -> str:
        """Make the blob durable and visible; returns its sha256."""
        digest = self.sha256
        self.seal()
        try:
            self._store.publish(self._temp, digest, self.size)
        finally:
            self._temp.unlink(missing_ok=True)
        return digest

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._temp.unlink(missing_ok=True)


class BlobStore(ABC):
    """What the services store blobs through, whichever backend holds them."""

    # Whether other processes (replicas) share the store: then only blobs older than a
    # grace period may be collected, since another replica may be about to name them.
    shared: bool = False

    def __init__(self, temp_dir: Path) -> None:
        self.temp_dir = temp_dir
        self.temp_dir.mkdir(parents=True, exist_ok=True)

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

    def read_bytes(self, digest: str) -> bytes:
        return b"".join(self.read_chunks(digest))

    def sweep_temp(self, older_than_s: float = 0.0) -> int:
        """Remove this process's host's spool files of uploads that never committed (a
        crash), older than `older_than_s`; returns the count."""
        cutoff = time.time() - older_than_s
        removed = 0
        for leftover in self.temp_dir.iterdir():
            try:
                if older_than_s and leftover.stat().st_mtime > cutoff:
                    continue
                leftover.unlink()
            except FileNotFoundError:
                continue
            removed += 1
        return removed

    def abort_abandoned_uploads(self, older_than_s: float) -> int:
        """Abort uploads to the store begun `older_than_s` ago and never completed (by a
        process killed mid-upload, on any host); returns the count. Nothing to do here."""
        return 0

    def delete_if_older(self, digest: str, older_than_s: float) -> bool:
        """Delete a blob unless it was (re)written within `older_than_s`: an upload of the
        same content in another replica renews it. True when it was deleted."""
        age = self.age_s(digest)
        if age is None or age < older_than_s:
            return False
        self.delete(digest)
        return True

    @abstractmethod
    def age_s(self, digest: str) -> float | None:
        """Seconds since the blob was last written, or None when it is not there."""

    @abstractmethod
    def describe(self) -> str:
        """Where the blobs live, for logs and errors (no credentials)."""

    @abstractmethod
    def publish(self, temp: Path, digest: str, size: int) -> None:
        """Make a complete, fsynced temp file visible as blob `digest` (the writer's commit)."""

    @abstractmethod
    def uri(self, digest: str) -> str:
        """A URL other tools can read the blob at (`file://...` or `s3://...`)."""

    @abstractmethod
    def digests(self, older_than_s: float = 0.0) -> Iterator[str]:
        """Every stored blob's digest, or those stored at least `older_than_s` ago (for
        collecting blobs that no metadata names)."""

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    def size(self, digest: str) -> int: ...

    @abstractmethod
    def read_chunks(self, digest: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
        """Yield the blob's content; raise DataLoss after the last chunk if it is corrupt."""

    @abstractmethod
    def local_copy(self, digest: str) -> AbstractContextManager[Path]:
        """A context manager giving a local file with the blob's content, verified first,
        for readers that need a path (a checkpoint archive to unpack)."""

    @abstractmethod
    def delete(self, digest: str) -> None: ...

    @abstractmethod
    def check(self) -> None:
        """Raise `Unavailable` when the store cannot be reached now (health checks)."""


class LocalBlobStore(BlobStore):
    """Blobs as files under one directory: the embedded default, one host's replicas only."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / "tmp")
        self.root = root
        (root / "sha256").mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return str(self.root)

    def path_for(self, digest: str) -> Path:
        return self.root / blob_key(digest)

    def publish(self, temp: Path, digest: str, size: int) -> None:
        final = self.path_for(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)
        fsync_path(final.parent)

    def uri(self, digest: str) -> str:
        return self.path_for(digest).resolve().as_uri()

    def digests(self, older_than_s: float = 0.0) -> Iterator[str]:
        cutoff = time.time() - older_than_s
        for path in (self.root / "sha256").glob("*/*"):
            if not is_sha256_hex(path.name):
                continue
            try:
                if older_than_s and path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            yield path.name

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def age_s(self, digest: str) -> float | None:
        try:
            return time.time() - self.path_for(digest).stat().st_mtime
        except FileNotFoundError:
            return None

    def size(self, digest: str) -> int:
        try:
            return self.path_for(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound("blob", digest) from None

    def read_chunks(self, digest: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
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

    @contextmanager
    def local_copy(self, digest: str) -> Iterator[Path]:
        for _ in self.read_chunks(digest):
            pass
        yield self.path_for(digest)

    def delete(self, digest: str) -> None:
        self.path_for(digest).unlink(missing_ok=True)

    def check(self) -> None:
        """A local directory is always there while the process runs."""


def open_blob_store(url: str, default_root: Path, spool_root: Path, setting: str) -> BlobStore:
    """The store a service's blob URL names: empty means the local default root, a path or
    `file://` URL another local root, `s3://bucket[/prefix]` object storage (with the
    endpoint and credentials the standard AWS way). `setting` names the variable in errors;
    an object store is checked here, so a missing bucket or a bad key stops the start."""
    if not url:
        return LocalBlobStore(default_root)
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        from shared.s3_blobstore import S3BlobStore

        store = S3BlobStore.from_url(url, spool_root, setting)
        store.check_at_start()
        return store
    if parsed.scheme == "file":
        return LocalBlobStore(Path(unquote(parsed.path)))
    if parsed.scheme == "" and url.startswith("/"):
        return LocalBlobStore(Path(url))
    raise SettingsError(f"{setting}: {url!r} is neither s3://bucket[/prefix] nor a local path")


def open_service_blobs(settings: StatefulSettings, home: Path) -> BlobStore:
    """A service's blob store, as its settings say: blobs under `home` by default, a spool
    for uploads to object storage under `home` too."""
    return open_blob_store(
        settings.blob_location(), home / "blobs", home / "spool", settings.blob_setting()
    )
