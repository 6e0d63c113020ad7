"""The registry as the data service's lineage oracle: which registered model versions
name a dataset version. Asked before a delete; retried (bounded by a deadline) since
the question is safe to repeat, and when the registry cannot answer nothing is deleted."""

from __future__ import annotations

import grpc

from shared.errors import Unavailable
from tfmesh.registry.v1 import registry_pb2, registry_pb2_grpc


class RegistryLineage:
    def __init__(self, channel: grpc.aio.Channel, deadline_s: float) -> None:
        self._stub = registry_pb2_grpc.RegistryServiceStub(channel)
        self._deadline_s = deadline_s

    async def models_using(self, dataset_version: str) -> list[str]:
        # An empty model with a dataset_version filter searches across every model.
        request = registry_pb2.ListVersionsRequest(
            model="", dataset_version=dataset_version, page_size=1
        )
        try:
            response = await self._stub.ListVersions(request, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(
                f"cannot ask the registry whether a model was trained on {dataset_version} "
                f"({error.code().name}: {error.details()}); nothing was deleted"
            ) from None
        return [f"{v.model} version {v.version}" for v in response.versions]
