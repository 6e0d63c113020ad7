"""The registry's REST routes through the gateway app, against a real registry server."""

from __future__ import annotations

import hashlib

import grpc
import httpx
import pytest

from gateway.app import create_app
from gateway.backends import Backends
from gateway.settings import GatewaySettings
from services.registry.client import ArtifactFile, NewVersion, RegistryClient
from shared.channels import open_channel


async def register(address: str, tmp_path, model: str, accuracy: float, key: str) -> None:
    artifact = tmp_path / f"{key}.bin"
    artifact.write_bytes(key.encode())
    async with open_channel(address) as channel:
        await RegistryClient(channel).upload_version(
            NewVersion(
                model,
                [ArtifactFile("model.bin", artifact)],
                {"accuracy": accuracy},
                idempotency_key=key,
            )
        )


async def test_models_versions_and_aliases(client, registry_server, tmp_path):
    created = await client.post("/api/v1/models", json={"name": "digits"})
    assert created.status_code == 201, created.text
    assert created.json()["model"]["name"] == "digits"
    await register(registry_server.address, tmp_path, "digits", 0.90, "v1")
    await register(registry_server.address, tmp_path, "digits", 0.97, "v2")
    versions = (await client.get("/api/v1/models/digits/versions")).json()["versions"]
    assert [v["version"] for v in versions] == ["1", "2"]  # proto3 JSON: int64 as strings
    moved = await client.put("/api/v1/models/digits/aliases/production", json={"version": 1})
    assert moved.status_code == 200 and moved.json()["alias"]["version"] == "1"
    canary = await client.put(
        "/api/v1/models/digits/aliases/canary", json={"version": 2, "traffic_weight": 20}
    )
    assert canary.json()["alias"]["traffic_weight"] == 20
    aliases = (await client.get("/api/v1/models/digits/aliases")).json()["aliases"]
    assert {a["name"]: a["version"] for a in aliases} == {"canary": "2", "production": "1"}
    history = (await client.get("/api/v1/models/digits/alias-history")).json()["changes"]
    assert [h["alias"] for h in history] == ["production", "canary"]


async def test_grpc_errors_become_json_with_matching_http_codes(client, registry_server, tmp_path):
    missing = await client.get("/api/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == "NOT_FOUND"
    bad = await client.post("/api/v1/models", json={"name": "../x"})
    assert bad.status_code == 400
    violations = bad.json()["error"]["details"]
    assert any(v.get("fieldViolations") for v in violations)
    await register(registry_server.address, tmp_path, "m", 0.9, "v1")
    await register(registry_server.address, tmp_path, "m", 0.8, "v2")
    await client.put("/api/v1/models/m/aliases/production", json={"version": 1})
    refused = await client.put("/api/v1/models/m/aliases/production", json={"version": 2})
    assert refused.status_code == 400
    assert refused.json()["error"]["status"] == "FAILED_PRECONDITION"
    conflict = await client.post("/api/v1/models", json={"name": "m"})
    assert conflict.status_code == 409


async def test_malformed_json_and_schema_errors_are_400(client):
    broken = await client.post(
        "/api/v1/models", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400 and broken.json()["error"]["status"] == "INVALID_ARGUMENT"
    weight = await client.put(
        "/api/v1/models/m/aliases/canary", json={"version": 1, "traffic_weight": 101}
    )
    assert weight.status_code == 400
    assert "traffic_weight" in weight.json()["error"]["message"]
    assert (await client.get("/healthz")).status_code == 200


async def test_oversized_body_is_413_and_gateway_keeps_serving(registry_server):
    settings = GatewaySettings(registry_addr=registry_server.address, max_body_bytes=1024)
    app = create_app(settings, Backends(settings, None))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        big = await client.post("/api/v1/models", json={"name": "m", "description": "x" * 5000})
        assert big.status_code == 413 and big.json()["error"]["status"] == "PAYLOAD_TOO_LARGE"
        assert (await client.post("/api/v1/models", json={"name": "ok"})).status_code == 201
    await app.state.backends.close()


async def test_bearer_token_is_required_when_configured(registry_server):
    settings = GatewaySettings(registry_addr=registry_server.address, api_token="s3cret")
    app = create_app(settings, Backends(settings, None))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        assert (await client.get("/api/v1/models")).status_code == 401
        wrong = await client.get("/api/v1/models", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["status"] == "UNAUTHENTICATED"
        right = await client.get("/api/v1/models", headers={"authorization": "Bearer s3cret"})
        assert right.status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200
    await app.state.backends.close()


async def test_unreachable_backend_is_503(tmp_path):
    settings = GatewaySettings(registry_addr="127.0.0.1:1", deadline_s=0.5)
    app = create_app(settings, Backends(settings, None))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        down = await client.get("/api/v1/models")
    assert down.status_code in (503, 504) and down.json()["error"]["status"] in (
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
    )
    await app.state.backends.close()


async def test_an_artifact_downloads_whole_and_a_corrupt_one_never_looks_complete(
    client, registry_server, tmp_path
):
    await register(registry_server.address, tmp_path, "dl", 0.9, "v1-bytes")
    answer = await client.get("/api/v1/models/dl/versions/1/artifacts/model.bin")
    assert answer.status_code == 200 and answer.content == b"v1-bytes"
    digest = hashlib.sha256(b"v1-bytes").hexdigest()
    assert answer.headers["x-sha256"] == digest
    assert answer.headers["content-disposition"] == 'attachment; filename="model.bin"'
    assert answer.headers["x-content-type-options"] == "nosniff"
    missing = await client.get("/api/v1/models/dl/versions/1/artifacts/nope.bin")
    assert missing.status_code == 404
    # Flip the stored bytes: the registry finds out only at the end of the stream, and the
    # body stops short of its length rather than handing over wrong bytes as whole ones.
    blob = tmp_path / "registry" / "blobs" / "sha256" / digest[:2] / digest
    blob.write_bytes(b"v1-bytez")
    # (The ASGI test transport hands the app's failure to the client; a real server closes
    # the connection short of content-length, which HTTP clients report as an error.)
    with pytest.raises(RuntimeError, match="response already started") as failed:
        await client.get("/api/v1/models/dl/versions/1/artifacts/model.bin")
    cause = failed.value.__context__
    assert isinstance(cause, grpc.aio.AioRpcError) and cause.code() is grpc.StatusCode.DATA_LOSS
