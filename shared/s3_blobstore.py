"""Blobs in S3-compatible object storage (AWS S3, GCS's interoperability API, MinIO, Ceph
RGW, SeaweedFS) through boto3, under `s3://bucket/prefix/sha256/<2 hex>/<64 hex>`.

The endpoint, region and credentials come the standard AWS way (`AWS_ENDPOINT_URL`,
`AWS_REGION`, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, profiles, instance roles);
a custom endpoint is addressed path-style, as MinIO, Ceph and SeaweedFS expect. A blob
becomes visible only whole and verified: the spooled file is re-hashed while it is sent,
a small one goes up in one PUT after its digest matches, a large one as a multipart upload
completed only when the digest matches and aborted otherwise; uploads abandoned by a
killed process are aborted by `sweep_temp`. Reads re-hash and raise `DataLoss` on a
mismatch. An endpoint that does not answer, or answers with a server error, is
`Unavailable` (retryable); a bucket, key or endpoint that is wrong at start is a
`SettingsError` naming the setting."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from urllib3.exceptions import HTTPError as Urllib3Error

from shared.blobstore import DEFAULT_CHUNK_BYTES, BlobStore, blob_key, is_sha256_hex
from shared.errors import DataLoss, NotFound, Unavailable
from shared.settings import SettingsError

log = logging.getLogger(__name__)

# S3's smallest part but the last is 5 MiB; blobs up to one part go up in a single PUT.
PART_BYTES = 8 * 1024 * 1024
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_REFUSED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
RETRY_AFTER_S = 1.0


def endpoint_from_environment() -> str:
    """The S3 endpoint the standard AWS variables name (empty: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")


def s3_client(endpoint: str, access_key: str | None = None, secret_key: str | None = None) -> Any:
    """A boto3 S3 client that gives up quickly enough for a health check to notice; the
    credentials are boto3's own lookup unless given."""
    config = Config(
        connect_timeout=2,
        read_timeout=30,
        retries={"mode": "standard", "max_attempts": 3},
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


class S3BlobStore(BlobStore):
    shared = True

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        temp_dir: Path,
        *,
        endpoint: str = "",
        setting: str = "blob URL",
        part_bytes: int = PART_BYTES,
    ) -> None:
        super().__init__(temp_dir)
        self.client = client
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint = endpoint
        self.setting = setting
        self.part_bytes = part_bytes

    @classmethod
    def from_url(cls, url: str, spool_root: Path, setting: str) -> S3BlobStore:
        parsed = urlparse(url)
        if not parsed.netloc:
            raise SettingsError(f"{setting}: {url!r} names no bucket (s3://bucket[/prefix])")
        endpoint = endpoint_from_environment()
        return cls(
            s3_client(endpoint),
            parsed.netloc,
            parsed.path,
            spool_root,
            endpoint=endpoint,
            setting=setting,
        )

    def describe(self) -> str:
        where = self.endpoint or "AWS"
        return f"s3://{self.bucket}/{self.prefix} at {where}"

    def key(self, digest: str) -> str:
        return self.prefix + blob_key(digest)

    def uri(self, digest: str) -> str:
        return f"s3://{self.bucket}/{self.key(digest)}"

    @contextmanager
    def _translated(self, action: str, digest: str = "") -> Iterator[None]:
        """Turn boto3's failures into the domain's: a missing blob is NotFound, anything
        else the store does not answer is Unavailable."""
        try:
            yield
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if digest and code in _MISSING:
                raise NotFound("blob", digest) from None
            raise Unavailable(
                f"object store {self.describe()}: {action} failed ({code})", RETRY_AFTER_S
            ) from None
        except (BotoCoreError, Urllib3Error, OSError) as error:
            raise Unavailable(
                f"object store {self.describe()}: {action} failed: {error}", RETRY_AFTER_S
            ) from None

    def check(self) -> None:
        with self._translated("a bucket check"):
            self.client.head_bucket(Bucket=self.bucket)

    def check_at_start(self) -> None:
        """Stop the start, naming the setting, when the bucket cannot be used."""
        where = self.endpoint or "AWS"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise SettingsError(
                f"{self.setting}: no credentials for {where} (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or a profile)"
            ) from None
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                problem = f"bucket {self.bucket!r} does not exist at {where}"
            elif code in _REFUSED:
                problem = (
                    f"{where} refuses the credentials for bucket {self.bucket!r} "
                    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
                )
            else:
                problem = f"bucket {self.bucket!r} at {where} answered {code}"
            raise SettingsError(f"{self.setting}: {problem}") from None
        except (BotoCoreError, OSError) as error:
            raise SettingsError(
                f"{self.setting}: the object store endpoint {where} (AWS_ENDPOINT_URL) "
                f"cannot be reached: {error}"
            ) from None

    def publish(self, temp: Path, digest: str, size: int) -> None:
        # Written even when the blob is there already: the write renews its age, which the
        # collector's grace period counts from (shared.blob_collector).
        key = self.key(digest)
        with self._translated("an upload"):
            if size <= self.part_bytes:
                data = temp.read_bytes()
                self._check_spool(hashlib.sha256(data).hexdigest(), digest)
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, Metadata={"sha256": digest}
                )
                return
            self._multipart(temp, key, digest)

    def _multipart(self, temp: Path, key: str, digest: str) -> None:
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, Metadata={"sha256": digest}
        )["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            hasher = hashlib.sha256()
            with temp.open("rb") as handle:
                while part := handle.read(self.part_bytes):
                    hasher.update(part)
                    number = len(parts) + 1
                    answer = self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=part
                    )
                    parts.append({"ETag": answer["ETag"], "PartNumber": number})
            self._check_spool(hasher.hexdigest(), digest)
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            raise

    @staticmethod
    def _check_spool(actual: str, digest: str) -> None:
        if actual != digest:
            raise DataLoss(f"the spooled upload of blob {digest} changed on disk ({actual})")

    def _head(self, digest: str) -> dict[str, Any] | None:
        """The blob's object metadata, or None when it is not there."""
        with self._translated("a lookup"):
            try:
                head: dict[str, Any] = self.client.head_object(
                    Bucket=self.bucket, Key=self.key(digest)
                )
            except ClientError as error:
                if str(error.response.get("Error", {}).get("Code", "")) in _MISSING:
                    return None
                raise
        return head

    def digests(self, older_than_s: float = 0.0) -> Iterator[str]:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + "sha256/"
        )
        with self._translated("a listing"):
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"].rsplit("/", 1)[-1]
                    if is_sha256_hex(name) and (not older_than_s or item["LastModified"] <= cutoff):
                        yield name

    def exists(self, digest: str) -> bool:
        return self._head(digest) is not None

    def age_s(self, digest: str) -> float | None:
        head = self._head(digest)
        return None if head is None else (datetime.now(UTC) - head["LastModified"]).total_seconds()

    def size(self, digest: str) -> int:
        head = self._head(digest)
        if head is None:
            raise NotFound("blob", digest)
        return int(head["ContentLength"])

    def read_chunks(self, digest: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
        hasher = hashlib.sha256()
        with self._translated("a read", digest):
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"]
            try:
                for chunk in body.iter_chunks(chunk_bytes):
                    hasher.update(chunk)
                    yield chunk
            finally:
                body.close()
        if hasher.hexdigest() != digest:
            raise DataLoss(f"blob {digest} is corrupt: content hashes to {hasher.hexdigest()}")

    @contextmanager
    def local_copy(self, digest: str) -> Iterator[Path]:
        fd, name = tempfile.mkstemp(dir=self.temp_dir, prefix="download-")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in self.read_chunks(digest):
                    handle.write(chunk)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def delete(self, digest: str) -> None:
        with self._translated("a delete"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    def abort_abandoned_uploads(self, older_than_s: float) -> int:
        """The multipart uploads under the prefix begun `older_than_s` ago: a live upload
        older than that is aborted too, so the grace must outlast the longest upload."""
        removed = 0
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        with self._translated("a sweep of abandoned uploads"):
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] <= cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
        return removed
