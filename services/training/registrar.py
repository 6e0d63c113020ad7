"""Registration through the registry's gRPC API (the `Registrar` the worker pool uses).

Uploads go through the registry's own client (`services.registry.client`), which retries
with tenacity within a deadline; the job id is the idempotency key, so an upload retried
after a lost reply, or repeated by a job resumed after a crash, returns the version the
first one created instead of making a second. Promotion is `SetAlias(production)`; when
the registry's gate refuses it (FAILED_PRECONDITION) that is recorded, not raised."""

from __future__ import annotations

import grpc

from services.registry.client import ArtifactFile as RegistryArtifact
from services.registry.client import NewVersion, RegistryClient
from services.training.jobs import PromotionOutcome, UploadedVersion, VersionUpload
from shared.aliases import PRODUCTION
from tfmesh.registry.v1 import registry_pb2 as registry_pb


class RegistryRegistrar:
    def __init__(self, channel: grpc.aio.Channel, deadline_s: float) -> None:
        self._client = RegistryClient(channel, deadline_s)
        self._deadline_s = deadline_s

    async def upload(self, upload: VersionUpload) -> UploadedVersion:
        response = await self._client.upload_version(
            NewVersion(
                model=upload.model,
                artifacts=[
                    RegistryArtifact(artifact.name, artifact.path, artifact.media_type)
                    for artifact in upload.artifacts
                ],
                metrics=upload.metrics,
                params=upload.params,
                lineage=registry_pb.Lineage(
                    dataset_version=upload.dataset_version,
                    training_job=upload.job_id,
                    code_version=upload.code_version,
                ),
                idempotency_key=upload.job_id,
                create_model=True,
            )
        )
        return UploadedVersion(response.version.version, response.created)

    async def promote(self, model: str, version: int, job_id: str, reason: str) -> PromotionOutcome:
        request = registry_pb.SetAliasRequest(
            model=model,
            alias=PRODUCTION,
            version=version,
            actor=f"training:{job_id}",
            reason=reason,
        )
        try:
            await self._client.stub.SetAlias(request, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            return PromotionOutcome(False, error.details() or "refused by the promotion gate")
        return PromotionOutcome(True, "")
