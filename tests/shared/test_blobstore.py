"""`shared.blobstore` on a real temp directory: content addressing, dedupe, corruption
detection, aborted and crashed uploads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shared.blobstore import BlobStore, is_sha256_hex
from shared.errors import DataLoss, NotFound


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def stored_files(store: BlobStore) -> list[Path]:
    return sorted(path for path in (store.root / "sha256").rglob("*") if path.is_file())


def test_streamed_blob_round_trips(store: BlobStore) -> None:
    content = bytes(range(256)) * 1000
    writer = store.writer()
    for start in range(0, len(content), 7000):
        writer.write(content[start : start + 7000])
    digest = writer.commit()

    assert digest == hashlib.sha256(content).hexdigest()
    assert writer.size == len(content)
    assert store.path_for(digest) == store.root / "sha256" / digest[:2] / digest
    assert store.exists(digest) and store.size(digest) == len(content)
    chunks = list(store.read_chunks(digest, chunk_bytes=10_000))
    assert b"".join(chunks) == content
    assert max(len(chunk) for chunk in chunks) == 10_000
    assert list(store.temp_dir.iterdir()) == []


def test_empty_blob_round_trips(store: BlobStore) -> None:
    digest = store.put_bytes(b"")
    assert digest == hashlib.sha256(b"").hexdigest()
    assert store.read_bytes(digest) == b""


def test_identical_content_is_stored_once(store: BlobStore) -> None:
    first = store.put_bytes(b"same weights")
    second = store.put_bytes(b"same weights")
    other = store.put_bytes(b"other weights")
    assert first == second != other
    assert stored_files(store) == sorted([store.path_for(first), store.path_for(other)])


def test_corrupt_blob_raises_data_loss(store: BlobStore) -> None:
    digest = store.put_bytes(b"model weights " * 100)
    path = store.path_for(digest)
    damaged = bytearray(path.read_bytes())
    damaged[17] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(DataLoss, match=digest):
        store.read_bytes(digest)


def test_truncated_blob_raises_data_loss(store: BlobStore) -> None:
    digest = store.put_bytes(b"0123456789" * 10)
    path = store.path_for(digest)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataLoss):
        b"".join(store.read_chunks(digest, chunk_bytes=16))


def test_abort_leaves_nothing(store: BlobStore) -> None:
    writer = store.writer()
    writer.write(b"half an upload")
    writer.abort()
    assert list(store.temp_dir.iterdir()) == []
    assert stored_files(store) == []
    assert not store.exists(hashlib.sha256(b"half an upload").hexdigest())


def test_sweep_temp_removes_leftovers_of_a_crash(tmp_path: Path) -> None:
    crashed = BlobStore(tmp_path / "blobs")
    for _ in range(3):
        crashed.writer().write(b"never committed")
    kept = crashed.put_bytes(b"committed")

    restarted = BlobStore(tmp_path / "blobs")
    assert restarted.sweep_temp() == 3
    assert list(restarted.temp_dir.iterdir()) == []
    assert restarted.read_bytes(kept) == b"committed"
    assert restarted.sweep_temp() == 0


def test_missing_blob_is_not_found(store: BlobStore) -> None:
    missing = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(missing)
    with pytest.raises(NotFound):
        store.read_bytes(missing)
    with pytest.raises(NotFound):
        store.size(missing)


def test_delete_removes_a_blob(store: BlobStore) -> None:
    digest = store.put_bytes(b"old version")
    store.delete(digest)
    assert not store.exists(digest)
    store.delete(digest)


@pytest.mark.parametrize("digest", ["", "abc", "../" + "a" * 61, "A" * 64, "g" * 64])
def test_only_sha256_hex_digests_address_blobs(store: BlobStore, digest: str) -> None:
    assert not is_sha256_hex(digest)
    with pytest.raises(ValueError, match="not a sha256"):
        store.path_for(digest)
