"""An asyncio client of the registry for other services: uploads that stream files in
chunks, downloads that verify the digest before a file appears, and retries (tenacity,
bounded by a deadline) on the calls that are safe to repeat, uploads with an idempotency
key among them."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from shared.errors import DataLoss
from shared.retries import retry_idempotent
from tfmesh.registry.v1 import registry_pb2 as pb
from tfmesh.registry.v1 import registry_pb2_grpc

CHUNK_BYTES = 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ArtifactFile:
    name: str
    path: Path
    media_type: str = ""


@dataclass
class NewVersion:
    model: str
    artifacts: list[ArtifactFile]
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lineage: pb.Lineage = field(default_factory=pb.Lineage)
    idempotency_key: str = ""
    create_model: bool = True


class RegistryClient:
    def __init__(self, channel: grpc.aio.Channel, deadline_s: float = 30.0) -> None:
        self.stub = registry_pb2_grpc.RegistryServiceStub(channel)
        self._deadline_s = deadline_s

    async def _requests(
        self, header: pb.UploadVersionHeader, files: list[ArtifactFile]
    ) -> AsyncIterator[pb.UploadVersionRequest]:
        yield pb.UploadVersionRequest(header=header)
        for artifact in files:
            with artifact.path.open("rb") as handle:
                while block := handle.read(CHUNK_BYTES):
                    yield pb.UploadVersionRequest(chunk=block)

    async def upload_version(
        self, new: NewVersion, deadline_s: float | None = None
    ) -> pb.UploadVersionResponse:
        """Upload a version; retried only when it carries an idempotency key."""
        header = pb.UploadVersionHeader(
            model=new.model,
            artifacts=[
                pb.Artifact(
                    name=a.name,
                    size_bytes=a.path.stat().st_size,
                    sha256=sha256_file(a.path),
                    media_type=a.media_type,
                )
                for a in new.artifacts
            ],
            metrics=new.metrics,
            params=new.params,
            tags=new.tags,
            lineage=new.lineage,
            idempotency_key=new.idempotency_key,
            create_model=new.create_model,
        )
        deadline = deadline_s or self._deadline_s

        async def attempt(timeout_s: float | None) -> pb.UploadVersionResponse:
            return await self.stub.UploadVersion(
                self._requests(header, new.artifacts), timeout=timeout_s
            )

        if not new.idempotency_key:
            return await attempt(deadline)
        return await retry_idempotent(attempt, deadline_s=deadline)

    async def get_version(self, model: str, version: int = 0, alias: str = "") -> pb.ModelVersion:
        request = pb.GetVersionRequest(model=model, version=version, alias=alias)
        response = await self.stub.GetVersion(request, timeout=self._deadline_s)
        return response.version

    async def list_aliases(self, model: str) -> list[pb.Alias]:
        request = pb.ListAliasesRequest(model=model)
        response = await self.stub.ListAliases(request, timeout=self._deadline_s)
        return list(response.aliases)

    async def download_artifact(
        self, model: str, version: int, artifact: str, destination: Path
    ) -> pb.Artifact:
        """Write the artifact to `destination` only once its sha256 has been checked."""

        async def attempt(timeout_s: float | None) -> pb.Artifact:
            request = pb.DownloadArtifactRequest(model=model, version=version, artifact=artifact)
            destination.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=destination.parent, prefix=".download-")
            digest = hashlib.sha256()
            info = None
            try:
                with os.fdopen(fd, "wb") as handle:
                    async for part in self.stub.DownloadArtifact(request, timeout=timeout_s):
                        if part.HasField("info"):
                            info = part.info
                        else:
                            handle.write(part.chunk)
                            digest.update(part.chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
                if info is None or digest.hexdigest() != info.sha256:
                    raise DataLoss(
                        f"artifact {model}/{version}/{artifact} hashes to {digest.hexdigest()}, "
                        f"the registry recorded {info.sha256 if info else 'nothing'}"
                    )
                os.replace(temp, destination)
                return info
            finally:
                Path(temp).unlink(missing_ok=True)

        return await retry_idempotent(attempt, deadline_s=self._deadline_s * 4)
