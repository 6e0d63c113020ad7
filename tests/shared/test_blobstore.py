"""`shared.blobstore` on both backends, a real temp directory and a real S3 server
(SeaweedFS): content addressing, dedupe, corruption detection, aborted and crashed
uploads, multipart uploads and what a killed process leaves of them, start-up checks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cli.seaweedfs import LocalObjectStore
from shared.blobstore import BlobStore, LocalBlobStore, is_sha256_hex, open_blob_store
from shared.errors import DataLoss, NotFound
from shared.s3_blobstore import S3BlobStore
from shared.settings import SettingsError

SETTING = "TFMESH_TEST_BLOB_URL"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    request.getfixturevalue("object_store")
    s3 = open_blob_store(os.environ["TFMESH_BLOB_URL"], tmp_path, tmp_path / "spool", SETTING)
    assert isinstance(s3, S3BlobStore)
    # Small parts, so a few hundred kilobytes already take the multipart path.
    s3.part_bytes = 5 * 1024 * 1024
    return s3


def overwrite(store: BlobStore, digest: str, content: bytes) -> None:
    """Corrupt a stored blob behind the store's back (a bad disk, a hand edit)."""
    if isinstance(store, LocalBlobStore):
        store.path_for(digest).write_bytes(content)
    else:
        assert isinstance(store, S3BlobStore)
        store.client.put_object(Bucket=store.bucket, Key=store.key(digest), Body=content)


def test_streamed_blob_round_trips(store: BlobStore) -> None:
    content = bytes(range(256)) * 1000
    writer = store.writer()
    for start in range(0, len(content), 7000):
        writer.write(content[start : start + 7000])
    digest = writer.commit()

    assert digest == hashlib.sha256(content).hexdigest()
    assert writer.size == len(content)
    assert store.exists(digest) and store.size(digest) == len(content)
    chunks = list(store.read_chunks(digest, chunk_bytes=10_000))
    assert b"".join(chunks) == content
    assert max(len(chunk) for chunk in chunks) == 10_000
    assert list(store.temp_dir.iterdir()) == []
    with store.local_copy(digest) as path:
        assert path.read_bytes() == content
    assert list(store.temp_dir.iterdir()) == []


def test_local_blobs_live_under_their_digest(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    digest = store.put_bytes(b"x")
    assert store.path_for(digest) == store.root / "sha256" / digest[:2] / digest
    assert store.uri(digest) == store.path_for(digest).resolve().as_uri()


def test_a_multipart_blob_round_trips_and_leaves_no_upload(store: BlobStore) -> None:
    content = os.urandom(12 * 1024 * 1024 + 17)
    digest = store.put_bytes(content)
    assert store.read_bytes(digest) == content
    if isinstance(store, S3BlobStore):
        assert (
            store.uri(digest) == f"s3://{store.bucket}/{store.prefix}sha256/{digest[:2]}/{digest}"
        )
        uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
        assert uploads.get("Uploads", []) == []


def test_empty_blob_round_trips(store: BlobStore) -> None:
    digest = store.put_bytes(b"")
    assert digest == hashlib.sha256(b"").hexdigest()
    assert store.read_bytes(digest) == b""


def test_identical_content_is_stored_once(store: BlobStore) -> None:
    first = store.put_bytes(b"same")
    assert store.put_bytes(b"same") == first
    other = store.put_bytes(b"different")
    assert sorted(store.digests()) == sorted([first, other])


def test_corrupt_blob_raises_data_loss(store: BlobStore) -> None:
    digest = store.put_bytes(b"precious weights")
    overwrite(store, digest, b"precious weightz")
    with pytest.raises(DataLoss, match=digest):
        store.read_bytes(digest)
    with pytest.raises(DataLoss), store.local_copy(digest):
        pytest.fail("a corrupt blob must not reach a reader")
    assert list(store.temp_dir.iterdir()) == []


def test_truncated_blob_raises_data_loss(store: BlobStore) -> None:
    digest = store.put_bytes(b"0123456789")
    overwrite(store, digest, b"01234")
    with pytest.raises(DataLoss):
        store.read_bytes(digest)


def test_abort_leaves_nothing(store: BlobStore) -> None:
    writer = store.writer()
    writer.write(b"half an upload")
    writer.abort()
    assert list(store.temp_dir.iterdir()) == []
    assert list(store.digests()) == []
    assert not store.exists(hashlib.sha256(b"half an upload").hexdigest())


def test_sweep_temp_removes_leftovers_of_a_crash(tmp_path: Path) -> None:
    crashed = LocalBlobStore(tmp_path / "blobs")
    for _ in range(3):
        crashed.writer().write(b"never committed")
    kept = crashed.put_bytes(b"committed")

    restarted = LocalBlobStore(tmp_path / "blobs")
    assert restarted.sweep_temp(older_than_s=3600) == 0
    assert restarted.sweep_temp() == 3
    assert list(restarted.temp_dir.iterdir()) == []
    assert restarted.read_bytes(kept) == b"committed"
    assert restarted.sweep_temp() == 0


def test_multipart_uploads_a_killed_process_left_are_aborted(
    object_store: LocalObjectStore, tmp_path: Path
) -> None:
    store = open_blob_store(os.environ["TFMESH_BLOB_URL"], tmp_path, tmp_path / "spool", SETTING)
    assert isinstance(store, S3BlobStore)
    key = store.key(hashlib.sha256(b"never completed").hexdigest())
    upload = store.client.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
    store.client.upload_part(
        Bucket=store.bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 1024
    )
    assert not store.exists(key.rsplit("/", 1)[1])

    # A young upload may be another replica's, still running: the grace period keeps it.
    assert store.abort_abandoned_uploads(older_than_s=3600) == 0
    assert store.abort_abandoned_uploads(older_than_s=0) == 1
    left = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    assert left.get("Uploads", []) == []


def test_digests_older_than_a_grace_period(store: BlobStore) -> None:
    digest = store.put_bytes(b"fresh")
    assert list(store.digests(older_than_s=3600)) == []
    assert list(store.digests()) == [digest]


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
        store.exists(digest)


def test_a_missing_bucket_stops_the_start_naming_the_setting(
    object_store: LocalObjectStore, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match=f"^{SETTING}: bucket 'no-such-bucket' does not exist"):
        open_blob_store("s3://no-such-bucket/x", tmp_path, tmp_path, SETTING)


def test_wrong_credentials_stop_the_start_naming_the_setting(
    object_store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(SettingsError, match=f"^{SETTING}: .* refuses the credentials"):
        open_blob_store(os.environ["TFMESH_BLOB_URL"], tmp_path, tmp_path, SETTING)


def test_an_unreachable_endpoint_stops_the_start_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A port nothing listens on: connections are refused at once.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(SettingsError, match=f"^{SETTING}: .*127.0.0.1:9.* cannot be reached"):
        open_blob_store("s3://tfmesh", tmp_path, tmp_path, SETTING)


@pytest.mark.parametrize("url", ["gs://bucket", "s3://", "relative/path"])
def test_a_url_of_no_known_store_is_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=SETTING):
        open_blob_store(url, tmp_path, tmp_path, SETTING)


def test_a_blob_is_deleted_only_when_older_than_asked(store: BlobStore) -> None:
    digest = store.put_bytes(b"young")
    assert 0 <= (store.age_s(digest) or 0) < 60
    assert not store.delete_if_older(digest, 3600)
    assert store.exists(digest)
    assert store.delete_if_older(digest, 0)
    assert not store.exists(digest) and store.age_s(digest) is None
