"""`shared.blob_collector` on a real S3 server (SeaweedFS): unnamed blobs go once older than
the grace period, named ones and young ones stay, abandoned multipart uploads go too."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cli.seaweedfs import LocalObjectStore
from shared.blob_collector import BlobCollector
from shared.blobstore import open_blob_store
from shared.s3_blobstore import S3BlobStore


def test_only_old_unnamed_blobs_are_collected(
    object_store: LocalObjectStore, tmp_path: Path
) -> None:
    blobs = open_blob_store(os.environ["TFMESH_BLOB_URL"], tmp_path, tmp_path / "spool", "URL")
    assert isinstance(blobs, S3BlobStore) and blobs.shared
    named = blobs.put_bytes(b"named by a row")
    unnamed = blobs.put_bytes(b"left by a crash")
    key = blobs.key("0" * 64)
    blobs.client.create_multipart_upload(Bucket=blobs.bucket, Key=key)
    asked: list[set[str]] = []

    def referenced(digests: set[str]) -> set[str]:
        asked.append(digests)
        return digests & {named}

    assert BlobCollector(blobs, referenced, grace_s=3600).collect() == (0, 0)
    assert BlobCollector(blobs, referenced, grace_s=0).collect() == (1, 1)
    assert set(blobs.digests()) == {named}
    assert asked[-1] == {named, unnamed}


def test_a_blob_rewritten_while_collecting_stays(
    object_store: LocalObjectStore, tmp_path: Path
) -> None:
    blobs = open_blob_store(os.environ["TFMESH_BLOB_URL"], tmp_path, tmp_path / "spool", "URL")
    digest = blobs.put_bytes(b"the same content, uploaded again")
    # S3 keeps LastModified to the second, so an age read back may be up to a second
    # more than the truth: a grace of 2 s keeps the rewritten blob, 3 s ages the first.
    time.sleep(3)

    def referenced(digests: set[str]) -> set[str]:
        # Another replica uploads the same content between the listing and the delete.
        blobs.put_bytes(b"the same content, uploaded again")
        return set()

    assert BlobCollector(blobs, referenced, grace_s=2).collect() == (0, 0)
    assert blobs.exists(digest)
