"""Registration against a real registry server (in-process, loopback): a retried upload
never makes a second version, and a refused promotion is an outcome, not an error."""

from __future__ import annotations

from services.training.jobs import ArtifactFile, VersionUpload
from services.training.registrar import RegistryRegistrar
from shared.channels import open_channel
from tfmesh.registry.v1 import registry_pb2 as registry_pb


def upload_of(tmp_path, job_id: str, accuracy: float) -> VersionUpload:
    artifact = tmp_path / f"{job_id}.keras"
    artifact.write_bytes(job_id.encode() * 1000)
    return VersionUpload(
        model="digits",
        artifacts=[ArtifactFile("model.keras", artifact, "application/vnd.keras+zip")],
        metrics={"accuracy": accuracy},
        params={"optimizer": "adam"},
        dataset_version="digits@0123456789ab",
        job_id=job_id,
        code_version="test",
    )


async def test_a_repeated_upload_returns_the_first_version(registry, tmp_path):
    async with open_channel(registry) as channel:
        registrar = RegistryRegistrar(channel, deadline_s=30)
        first = await registrar.upload(upload_of(tmp_path, "job-1", 0.9))
        again = await registrar.upload(upload_of(tmp_path, "job-1", 0.9))
        assert (first.version, first.created) == (1, True)
        assert (again.version, again.created) == (1, False)
        listed = await registrar._client.stub.ListVersions(
            registry_pb.ListVersionsRequest(model="digits")
        )
        assert [v.version for v in listed.versions] == [1]


async def test_the_gate_decides_promotion(registry, tmp_path):
    async with open_channel(registry) as channel:
        registrar = RegistryRegistrar(channel, deadline_s=30)
        good = await registrar.upload(upload_of(tmp_path, "job-good", 0.95))
        assert (await registrar.promote("digits", good.version, "job-good", "first")).promoted
        worse = await registrar.upload(upload_of(tmp_path, "job-worse", 0.90))
        refused = await registrar.promote("digits", worse.version, "job-worse", "worse")
        assert not refused.promoted and refused.message
        history = await registrar._client.stub.ListAliasHistory(
            registry_pb.ListAliasHistoryRequest(model="digits")
        )
        assert [c.actor for c in history.changes] == ["training:job-good"]
