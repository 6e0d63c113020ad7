"""The registry over gRPC: a real grpc.aio server on loopback, called as a client would."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.registry.conftest import header_for, upload, upload_messages
from tests.support.status import expect_error, field_violations
from tfmesh.registry.v1 import registry_pb2 as pb


async def test_upload_then_download_round_trips_every_artifact(stub):
    blobs = {"model.keras": b"k" * 1000, "saved_model.tar": bytes(range(256)) * 9}
    response = await upload(
        stub,
        "digits",
        blobs,
        metrics={"accuracy": 0.9},
        params={"lr": "0.01"},
        lineage=pb.Lineage(dataset_version="digits@abc123", training_job="job-1"),
    )
    assert response.created and response.version.version == 1
    version = (await stub.GetVersion(pb.GetVersionRequest(model="digits", version=1))).version
    assert [a.name for a in version.artifacts] == list(blobs)
    assert version.metrics["accuracy"] == pytest.approx(0.9)
    assert version.lineage.dataset_version == "digits@abc123"
    for name, data in blobs.items():
        parts = [
            part
            async for part in stub.DownloadArtifact(
                pb.DownloadArtifactRequest(
                    model="digits", version=1, artifact=name, chunk_bytes=100
                )
            )
        ]
        assert parts[0].info.sha256 == hashlib.sha256(data).hexdigest()
        assert b"".join(p.chunk for p in parts[1:]) == data


async def test_versions_number_per_model_and_list_paginates(stub):
    for _ in range(5):
        await upload(stub, "a", {"m": b"x"})
    await upload(stub, "b", {"m": b"y"})
    seen, token = [], ""
    while True:
        page = await stub.ListVersions(
            pb.ListVersionsRequest(model="a", page_size=2, page_token=token)
        )
        seen += [v.version for v in page.versions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [1, 2, 3, 4, 5]
    models = await stub.ListModels(pb.ListModelsRequest(page_size=1))
    assert [m.name for m in models.models] == ["a"] and models.next_page_token


async def test_retried_upload_with_idempotency_key_creates_one_version(stub):
    first = await upload(stub, "m", {"a": b"1"}, idempotency_key="job-7")
    again = await upload(stub, "m", {"a": b"1"}, idempotency_key="job-7")
    assert first.created and not again.created
    assert again.version.version == first.version.version
    listed = await stub.ListVersions(pb.ListVersionsRequest(model="m"))
    assert len(listed.versions) == 1


async def test_search_versions_by_dataset_across_models(stub):
    await upload(stub, "a", {"m": b"1"}, lineage=pb.Lineage(dataset_version="iris@1"))
    await upload(stub, "b", {"m": b"2"}, lineage=pb.Lineage(dataset_version="iris@1"))
    await upload(stub, "b", {"m": b"3"}, lineage=pb.Lineage(dataset_version="wine@2"))
    found = await stub.ListVersions(pb.ListVersionsRequest(dataset_version="iris@1"))
    assert sorted((v.model, v.version) for v in found.versions) == [("a", 1), ("b", 1)]


@pytest.mark.parametrize("name", ["../x", "", "x" * 300, "a/b"])
async def test_malformed_model_names_get_field_violations(stub, name):
    error = await expect_error(
        stub.CreateModel(pb.CreateModelRequest(name=name)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "name" in field_violations(error)


async def test_digest_mismatch_is_refused_and_nothing_is_stored(stub, settings):
    blobs = {"m": b"payload"}
    header = header_for("m", blobs, create_model=True)
    header.artifacts[0].sha256 = "0" * 64

    async def stream():
        for message in upload_messages(header, blobs):
            yield message

    error = await expect_error(stub.UploadVersion(stream()), grpc.StatusCode.INVALID_ARGUMENT)
    assert "header.artifacts[0].sha256" in field_violations(error)
    await expect_error(
        stub.GetVersion(pb.GetVersionRequest(model="m", version=1)), grpc.StatusCode.NOT_FOUND
    )
    blob_files = [p for p in (settings.home / "registry" / "blobs").rglob("*") if p.is_file()]
    assert blob_files == []


async def test_oversized_and_short_and_long_uploads_are_refused(stub):
    big = pb.UploadVersionHeader(
        model="m",
        create_model=True,
        artifacts=[pb.Artifact(name="a", size_bytes=11 * 1024 * 1024, sha256="a" * 64)],
    )

    async def just(header, *chunks):
        yield pb.UploadVersionRequest(header=header)
        for chunk in chunks:
            yield pb.UploadVersionRequest(chunk=chunk)

    error = await expect_error(stub.UploadVersion(just(big)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "header.artifacts[0].size_bytes" in field_violations(error)
    declared = header_for("m", {"a": b"12345"}, create_model=True)
    error = await expect_error(
        stub.UploadVersion(just(declared, b"123")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "header.artifacts[0].size_bytes" in field_violations(error)
    error = await expect_error(
        stub.UploadVersion(just(declared, b"1234567")), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "chunk" in field_violations(error)


async def test_chunk_before_header_is_refused(stub):
    async def stream():
        yield pb.UploadVersionRequest(chunk=b"abc")

    error = await expect_error(stub.UploadVersion(stream()), grpc.StatusCode.INVALID_ARGUMENT)
    assert "header" in field_violations(error)


async def test_unknown_model_and_version_are_not_found(stub):
    error = await expect_error(
        stub.GetModel(pb.GetModelRequest(name="nope")), grpc.StatusCode.NOT_FOUND
    )
    assert "name" in field_violations(error)
    await upload(stub, "m", {"a": b"1"})
    error = await expect_error(
        stub.GetVersion(pb.GetVersionRequest(model="m", version=9)), grpc.StatusCode.NOT_FOUND
    )
    assert "version" in field_violations(error)


async def test_alias_to_missing_version_and_weight_101_are_refused(stub):
    await upload(stub, "m", {"a": b"1"})
    error = await expect_error(
        stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=5)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "version" in field_violations(error)
    error = await expect_error(
        stub.SetAlias(pb.SetAliasRequest(model="m", alias="canary", version=1, traffic_weight=101)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "traffic_weight" in field_violations(error)


async def test_server_keeps_serving_after_bad_input(stub, channel):
    for name in ["../x", "", "x" * 300]:
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.CreateModel(pb.CreateModelRequest(name=name))
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(
        health_pb2.HealthCheckRequest(service="tfmesh.registry.v1.RegistryService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert (await upload(stub, "fine", {"a": b"1"})).created


async def test_promotion_gate_and_audit_log(stub):
    await upload(stub, "m", {"a": b"1"}, metrics={"accuracy": 0.90})
    await upload(stub, "m", {"a": b"2"}, metrics={"accuracy": 0.905})
    await upload(stub, "m", {"a": b"3"}, metrics={"accuracy": 0.95})
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=1, actor="ci"))
    error = await expect_error(
        stub.SetAlias(pb.SetAliasRequest(model="m", alias="production", version=2)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "does not beat" in error.details()
    moved = await stub.SetAlias(
        pb.SetAliasRequest(model="m", alias="production", version=3, actor="alice", reason="better")
    )
    assert moved.alias.version == 3 and not moved.change.overridden
    forced = await stub.SetAlias(
        pb.SetAliasRequest(
            model="m",
            alias="production",
            version=2,
            actor="bob",
            reason="rollback",
            override_gate=True,
        )
    )
    assert forced.change.overridden
    history = await stub.ListAliasHistory(pb.ListAliasHistoryRequest(model="m"))
    assert [(h.old_version, h.new_version, h.actor) for h in history.changes] == [
        (0, 1, "ci"),
        (1, 3, "alice"),
        (3, 2, "bob"),
    ]
    assert history.changes[2].reason == "rollback" and history.changes[2].overridden


async def test_deleting_an_aliased_version_is_refused(stub):
    await upload(stub, "m", {"a": b"1"})
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="canary", version=1, traffic_weight=20))
    await expect_error(
        stub.DeleteVersion(pb.DeleteVersionRequest(model="m", version=1)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await stub.DeleteAlias(pb.DeleteAliasRequest(model="m", alias="canary"))
    await stub.DeleteVersion(pb.DeleteVersionRequest(model="m", version=1))
    await expect_error(
        stub.GetVersion(pb.GetVersionRequest(model="m", version=1)), grpc.StatusCode.NOT_FOUND
    )


async def next_events(call, count: int) -> list[pb.WatchResponse]:
    events = []
    while len(events) < count:
        events.append(await asyncio.wait_for(call.read(), 5))
    return events


async def test_watch_replays_then_follows_and_resumes_without_gaps(stub):
    await upload(stub, "m", {"a": b"1"})
    watch = stub.Watch(pb.WatchRequest(since_revision=0, models=["m"]))
    replayed = await next_events(watch, 2)
    assert [e.type for e in replayed] == [
        pb.WatchResponse.EVENT_TYPE_MODEL_CREATED,
        pb.WatchResponse.EVENT_TYPE_VERSION_CREATED,
    ]
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="canary", version=1, traffic_weight=10))
    (moved,) = await next_events(watch, 1)
    assert moved.type == pb.WatchResponse.EVENT_TYPE_ALIAS_MOVED and moved.traffic_weight == 10
    watch.cancel()
    last = moved.revision
    # Changes made while no one watches are replayed to a watcher that resumes from `last`.
    await stub.SetAlias(pb.SetAliasRequest(model="m", alias="canary", version=1, traffic_weight=30))
    await upload(stub, "m", {"a": b"2"})
    await upload(stub, "other", {"a": b"3"})
    resumed = stub.Watch(pb.WatchRequest(since_revision=last, models=["m"]))
    events = await next_events(resumed, 2)
    resumed.cancel()
    assert [e.type for e in events] == [
        pb.WatchResponse.EVENT_TYPE_ALIAS_WEIGHT_CHANGED,
        pb.WatchResponse.EVENT_TYPE_VERSION_CREATED,
    ]
    assert events[0].traffic_weight == 30 and events[1].version == 2
    revisions = [e.revision for e in [*replayed, moved, *events]]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)


async def test_reflection_lists_the_registry_and_health(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = [reply async for reply in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"tfmesh.registry.v1.RegistryService", "grpc.health.v1.Health"} <= names


async def test_rollout_rpcs_refuse_bad_input_and_change_nothing(stub):
    await upload(stub, "m", {"a": b"1"})
    policy = pb.RolloutPolicy(
        model="m",
        steps=[5, 50, 20, 100],
        step_seconds=1,
        step_min_requests=10,
        step_timeout_seconds=30,
        checks=[
            pb.RolloutCheck(
                metric=pb.RolloutCheck.METRIC_ERROR_RATIO, max_degradation=2, min_samples=10
            ),
            pb.RolloutCheck(max_degradation=0.1, min_samples=10),
        ],
    )
    error = await expect_error(
        stub.SetRolloutPolicy(pb.SetRolloutPolicyRequest(policy=policy)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(error)) == {
        "policy.steps",
        "policy.checks[0].max_degradation",
        "policy.checks[1].metric",
    }
    await expect_error(
        stub.GetRolloutPolicy(pb.GetRolloutPolicyRequest(model="m")), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        stub.PauseRollout(pb.ChangeRolloutRequest(model="m")), grpc.StatusCode.FAILED_PRECONDITION
    )
    await expect_error(stub.GetRollout(pb.GetRolloutRequest(model="m")), grpc.StatusCode.NOT_FOUND)
    del policy.steps[:]
    policy.steps.extend([5, 20, 50, 100])
    del policy.checks[:]
    stored = await stub.SetRolloutPolicy(pb.SetRolloutPolicyRequest(policy=policy))
    assert list(stored.policy.steps) == [5, 20, 50, 100] and stored.policy.confidence == 0.95
    fetched = await stub.GetRolloutPolicy(pb.GetRolloutPolicyRequest(model="m"))
    assert fetched.policy.step_timeout_seconds == 30
