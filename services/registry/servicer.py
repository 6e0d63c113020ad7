"""gRPC adapter of the registry: converts messages and calls the core in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc

from services.registry import converters as c
from services.registry.core import Registry
from services.registry.watch import ChangeSignal
from shared.auth import current_principal, require
from shared.errors import invalid
from shared.permissions import ADMIN
from tfmesh.registry.v1 import registry_pb2 as pb
from tfmesh.registry.v1 import registry_pb2_grpc

WATCH_BATCH = 500


def audit_actor(claimed: str) -> str:
    """Who the audit log names: the authenticated principal, never a request field, when
    callers are authenticated; the caller's own word only when nobody is."""
    principal = current_principal()
    return principal.name if principal is not None else claimed


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry, signal: ChangeSignal, poll_interval_s: float) -> None:
        self._registry = registry
        self._signal = signal
        self._poll_interval_s = poll_interval_s

    async def CreateModel(self, request: pb.CreateModelRequest, context) -> pb.CreateModelResponse:
        rule = (
            c.promotion_rule_from_proto(request.promotion_rule)
            if request.HasField("promotion_rule")
            else None
        )
        model = await asyncio.to_thread(
            self._registry.create_model,
            request.name,
            request.description,
            rule,
            dict(request.tags),
        )
        return pb.CreateModelResponse(model=c.model_to_proto(model))

    async def GetModel(self, request: pb.GetModelRequest, context) -> pb.GetModelResponse:
        model = await asyncio.to_thread(self._registry.get_model, request.name)
        return pb.GetModelResponse(model=c.model_to_proto(model))

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        page = await asyncio.to_thread(
            self._registry.list_models, request.page_size, request.page_token
        )
        return pb.ListModelsResponse(
            models=[c.model_to_proto(m) for m in page.items], next_page_token=page.next_page_token
        )

    async def UploadVersion(
        self, request_iterator: AsyncIterator[pb.UploadVersionRequest], context
    ) -> pb.UploadVersionResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("header"):
            raise invalid("header", "the first message of an upload must carry the header")
        header = c.upload_header_from_proto(first.header)
        upload = await asyncio.to_thread(self._registry.begin_upload, header)
        if upload.existing is not None:
            return pb.UploadVersionResponse(
                version=c.version_to_proto(upload.existing), created=False
            )
        try:
            async for message in request_iterator:
                if message.HasField("header"):
                    raise invalid("header", "sent twice; only the first message carries it")
                await asyncio.to_thread(upload.write, message.chunk)
            version, created = await asyncio.to_thread(upload.finish)
        except BaseException:
            upload.abort()
            raise
        return pb.UploadVersionResponse(version=c.version_to_proto(version), created=created)

    async def GetVersion(self, request: pb.GetVersionRequest, context) -> pb.GetVersionResponse:
        version = await asyncio.to_thread(
            self._registry.get_version, request.model, request.version, request.alias
        )
        return pb.GetVersionResponse(version=c.version_to_proto(version))

    async def ListVersions(
        self, request: pb.ListVersionsRequest, context
    ) -> pb.ListVersionsResponse:
        page = await asyncio.to_thread(
            self._registry.list_versions,
            request.model,
            request.page_size,
            request.page_token,
            request.dataset_version,
        )
        return pb.ListVersionsResponse(
            versions=[c.version_to_proto(v) for v in page.items],
            next_page_token=page.next_page_token,
        )

    async def DeleteVersion(
        self, request: pb.DeleteVersionRequest, context
    ) -> pb.DeleteVersionResponse:
        await asyncio.to_thread(self._registry.delete_version, request.model, request.version)
        return pb.DeleteVersionResponse()

    async def DownloadArtifact(
        self, request: pb.DownloadArtifactRequest, context
    ) -> AsyncIterator[pb.DownloadArtifactResponse]:
        spec, chunks = await asyncio.to_thread(
            self._registry.open_artifact,
            request.model,
            request.version,
            request.artifact,
            request.chunk_bytes,
        )
        yield pb.DownloadArtifactResponse(info=c.artifact_to_proto(spec))
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield pb.DownloadArtifactResponse(chunk=chunk)

    async def SetAlias(self, request: pb.SetAliasRequest, context) -> pb.SetAliasResponse:
        if request.override_gate:
            require(ADMIN, "override the promotion gate")
        actor = audit_actor(request.actor)
        alias, change = await asyncio.to_thread(
            lambda: self._registry.aliases.set_alias(
                request.model,
                request.alias,
                request.version,
                traffic_weight=request.traffic_weight,
                actor=actor,
                reason=request.reason,
                override_gate=request.override_gate,
            )
        )
        response = pb.SetAliasResponse(alias=c.alias_to_proto(alias))
        if change is not None:
            response.change.CopyFrom(c.alias_change_to_proto(change))
        return response

    async def DeleteAlias(self, request: pb.DeleteAliasRequest, context) -> pb.DeleteAliasResponse:
        await asyncio.to_thread(
            self._registry.aliases.delete_alias,
            request.model,
            request.alias,
            audit_actor(request.actor),
            request.reason,
        )
        return pb.DeleteAliasResponse()

    async def ListAliases(self, request: pb.ListAliasesRequest, context) -> pb.ListAliasesResponse:
        aliases = await asyncio.to_thread(self._registry.aliases.list_aliases, request.model)
        return pb.ListAliasesResponse(aliases=[c.alias_to_proto(a) for a in aliases])

    async def ListAliasHistory(
        self, request: pb.ListAliasHistoryRequest, context
    ) -> pb.ListAliasHistoryResponse:
        page = await asyncio.to_thread(
            self._registry.aliases.list_alias_history,
            request.model,
            request.page_size,
            request.page_token,
        )
        return pb.ListAliasHistoryResponse(
            changes=[c.alias_change_to_proto(ch) for ch in page.items],
            next_page_token=page.next_page_token,
        )

    # --- rollouts --------------------------------------------------------------------------

    async def SetRolloutPolicy(
        self, request: pb.SetRolloutPolicyRequest, context
    ) -> pb.SetRolloutPolicyResponse:
        model = request.policy.model
        policy, updated = await asyncio.to_thread(
            self._registry.rollouts.set_policy, model, c.policy_draft_from_proto(request.policy)
        )
        return pb.SetRolloutPolicyResponse(policy=c.policy_to_proto(model, policy, updated))

    async def GetRolloutPolicy(
        self, request: pb.GetRolloutPolicyRequest, context
    ) -> pb.GetRolloutPolicyResponse:
        policy, updated = await asyncio.to_thread(self._registry.rollouts.get_policy, request.model)
        return pb.GetRolloutPolicyResponse(policy=c.policy_to_proto(request.model, policy, updated))

    async def DeleteRolloutPolicy(
        self, request: pb.DeleteRolloutPolicyRequest, context
    ) -> pb.DeleteRolloutPolicyResponse:
        await asyncio.to_thread(self._registry.rollouts.delete_policy, request.model)
        return pb.DeleteRolloutPolicyResponse()

    async def GetRollout(self, request: pb.GetRolloutRequest, context) -> pb.GetRolloutResponse:
        rollout = await asyncio.to_thread(self._registry.rollouts.latest, request.model)
        return pb.GetRolloutResponse(rollout=c.rollout_to_proto(rollout))

    async def _change_rollout(
        self, change: Callable[[str, str, str], object], request: pb.ChangeRolloutRequest
    ) -> pb.ChangeRolloutResponse:
        actor = audit_actor(request.actor)
        await asyncio.to_thread(change, request.model, actor, request.reason)
        rollout = await asyncio.to_thread(self._registry.rollouts.latest, request.model)
        return pb.ChangeRolloutResponse(rollout=c.rollout_to_proto(rollout))

    async def PauseRollout(self, request: pb.ChangeRolloutRequest, context):  # type: ignore[no-untyped-def]
        return await self._change_rollout(self._registry.rollouts.pause, request)

    async def ResumeRollout(self, request: pb.ChangeRolloutRequest, context):  # type: ignore[no-untyped-def]
        return await self._change_rollout(self._registry.rollouts.resume, request)

    async def AbortRollout(self, request: pb.ChangeRolloutRequest, context):  # type: ignore[no-untyped-def]
        return await self._change_rollout(self._registry.rollouts.abort, request)

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchResponse]:
        last = request.since_revision
        models = list(request.models)
        while True:
            woken = self._signal.next_change()
            changes = await asyncio.to_thread(
                self._registry.changes_after, last, models, WATCH_BATCH
            )
            for change in changes:
                yield c.change_to_proto(change)
                last = change.revision
            if len(changes) < WATCH_BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), self._poll_interval_s)
