"""`make demo`: the platform end to end on embedded defaults, narrated.

Starts the local stack, then walks what exists today through the model lifecycle: a model
with two versions in the registry, promotion of v1 to production, v2 on canary at 20%,
a refused promotion and an audited override, the watch feed and the audit log; then stops
the stack. Each step prints what it did."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import grpc

from services.registry.client import ArtifactFile, NewVersion, RegistryClient
from services.stack import LocalStack, built_services
from shared.channels import open_channel
from shared.settings import default_home
from tfmesh.registry.v1 import registry_pb2 as pb


def step(text: str) -> None:
    print(f"\n== {text}")


async def registry_walkthrough(address: str, workdir: Path) -> None:
    async with open_channel(address) as channel:
        client = RegistryClient(channel)
        stub = client.stub
        model = datetime.now(UTC).strftime("demo-%Y%m%d-%H%M%S")
        step(f"register two versions of model {model!r}")
        for number, accuracy in ((1, 0.91), (2, 0.96)):
            artifact = workdir / f"v{number}.bin"
            artifact.write_bytes(f"weights of version {number}".encode() * 1000)
            response = await client.upload_version(
                NewVersion(
                    model,
                    [ArtifactFile("model.bin", artifact)],
                    metrics={"accuracy": accuracy},
                    lineage=pb.Lineage(dataset_version="demo@000000000000"),
                    idempotency_key=f"{model}-v{number}",
                )
            )
            version = response.version
            print(
                f"version {version.version}: accuracy={accuracy} "
                f"sha256={version.artifacts[0].sha256[:12]}"
            )
        watch = stub.Watch(pb.WatchRequest(models=[model]))
        step("promote v1 to production, put v2 on canary at 20%")
        await stub.SetAlias(pb.SetAliasRequest(model=model, alias="production", version=1))
        await stub.SetAlias(
            pb.SetAliasRequest(model=model, alias="canary", version=2, traffic_weight=20)
        )
        step("a promotion the gate refuses, then one it allows")
        await stub.SetAlias(
            pb.SetAliasRequest(model=model, alias="production", version=2, actor="demo")
        )
        await stub.DeleteAlias(pb.DeleteAliasRequest(model=model, alias="canary", actor="demo"))
        try:
            await stub.SetAlias(pb.SetAliasRequest(model=model, alias="production", version=1))
        except grpc.aio.AioRpcError as refused:
            print(f"rollback to v1 refused: {refused.code().name}: {refused.details()}")
        forced = await stub.SetAlias(
            pb.SetAliasRequest(
                model=model,
                alias="production",
                version=1,
                actor="demo",
                reason="demo rollback",
                override_gate=True,
            )
        )
        print(f"rollback with override: production -> v{forced.alias.version}")
        step("the watch feed saw")
        for _ in range(7):
            event = await asyncio.wait_for(watch.read(), 5)
            kind = pb.WatchResponse.EventType.Name(event.type).removeprefix("EVENT_TYPE_")
            print(f"rev {event.revision:>4}  {kind:<22} v{event.version} {event.alias}")
        watch.cancel()
        step("audit log")
        history = await stub.ListAliasHistory(pb.ListAliasHistoryRequest(model=model))
        for change in history.changes:
            print(
                f"{change.alias:<11} v{change.old_version} -> v{change.new_version} "
                f"weight {change.new_traffic_weight:>3}  by {change.actor}"
                f"{'  (override: ' + change.reason + ')' if change.overridden else ''}"
            )


def main() -> None:
    stack = LocalStack(default_home())
    step("start the local stack")
    stack.up()
    addresses = {spec.name: spec.address for spec in built_services()}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            asyncio.run(registry_walkthrough(addresses["registry"], Path(workdir)))
    finally:
        step("stop the local stack")
        stack.down()
    print("\ndemo finished: the registry lifecycle ran end to end")


if __name__ == "__main__":
    main()
