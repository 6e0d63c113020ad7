"""A real registry server accepting bearer JWTs from a JWKS file: the token's subject is
the audit log's actor, whatever the request says; a viewer's token may not move an alias;
no token is UNAUTHENTICATED."""

from __future__ import annotations

import json

import grpc
import pytest

from shared.channels import open_channel
from tests.registry.conftest import header_for, upload_messages
from tests.shared.test_jwt_auth import jwks_of, new_key, token
from tests.support.registry import registry_settings, running_registry
from tests.support.status import expect_error
from tfmesh.registry.v1 import registry_pb2 as pb
from tfmesh.registry.v1 import registry_pb2_grpc


@pytest.fixture
def key():  # type: ignore[no-untyped-def]
    return new_key()


async def test_a_jwt_principal_is_audited_and_its_roles_are_enforced(tmp_path, key):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_of(key, "k1")))
    settings = registry_settings(tmp_path, auth_jwks=str(jwks))
    deployer = (("authorization", f"Bearer {token(key, roles=['trainer', 'deployer'])}"),)
    viewer = (("authorization", f"Bearer {token(key, sub='vera', roles=['viewer'])}"),)
    async with running_registry(settings) as server, open_channel(server.address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        blobs = {"model.keras": b"weights"}
        await stub.UploadVersion(
            iter(upload_messages(header_for("m", blobs, create_model=True), blobs)),
            metadata=deployer,
        )
        move = pb.SetAliasRequest(model="m", alias="production", version=1, actor="spoofed")
        await expect_error(stub.SetAlias(move), grpc.StatusCode.UNAUTHENTICATED)
        await expect_error(stub.SetAlias(move, metadata=viewer), grpc.StatusCode.PERMISSION_DENIED)
        moved = await stub.SetAlias(move, metadata=deployer)
        assert moved.change.actor == "alice@example"
        history = await stub.ListAliasHistory(
            pb.ListAliasHistoryRequest(model="m"), metadata=viewer
        )
        assert [c.actor for c in history.changes] == ["alice@example"]
