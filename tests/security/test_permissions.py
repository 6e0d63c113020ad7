"""Principals and roles on every RPC: every tfmesh RPC declares its permission in its
proto, the permission table covers every method served,
and the four services, started as processes with a tokens file, refuse every method
without credentials (UNAUTHENTICATED), refuse a principal that lacks the method's
permission (PERMISSION_DENIED), and let one that has it through to the handler (OK or a
domain error). The registry audits alias moves under the caller's principal, whatever
`actor` the request claims, and wants ADMIN to override the promotion gate."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

from inference import grpc_predict_v2_pb2
from shared.auth import token_sha256
from shared.permissions import (
    ADMIN,
    METHOD_PERMISSIONS,
    OPEN,
    PERMISSIONS,
    PREDICT,
    READ,
)
from shared.rest_routes import ROUTES
from shared.rpc_methods import declared_permission, tfmesh_methods
from tests.registry.conftest import header_for, upload_messages
from tests.support.processes import ServiceProcess, platform_processes, started
from tests.support.stack import raw_call_code
from tfmesh.data.v1 import data_pb2
from tfmesh.inference.v1 import inference_pb2
from tfmesh.registry.v1 import registry_pb2, registry_pb2_grpc
from tfmesh.training.v1 import training_pb2

SERVED = {
    "data": [data_pb2.DESCRIPTOR.services_by_name["DataService"]],
    "training": [training_pb2.DESCRIPTOR.services_by_name["TrainingService"]],
    "registry": [registry_pb2.DESCRIPTOR.services_by_name["RegistryService"]],
    "inference": [
        inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
        grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
        prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"],
        model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
    ],
}
EVERYWHERE = [
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
]
TOKENS = {"admin": "admin-secret", "nobody": "nobody-secret", "viewer": "viewer-secret"}
SERVICE_TOKENS = {"training": "training-secret", "inference": "inference-secret", "data": "d"}
DENIED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def full_methods(services) -> list[str]:  # type: ignore[no-untyped-def]
    return [f"/{s.full_name}/{m.name}" for s in services for m in s.methods]


def test_the_table_names_every_served_method_and_nothing_else() -> None:
    served = {m for group in SERVED.values() for m in full_methods(group)}
    served |= set(full_methods(EVERYWHERE))
    assert served - METHOD_PERMISSIONS.keys() == set(), "methods without a permission"
    assert METHOD_PERMISSIONS.keys() - served == set(), "table entries no service serves"
    assert all(route.permission in {OPEN, *PERMISSIONS} for route in ROUTES)


def test_every_tfmesh_rpc_declares_a_known_permission_in_its_proto() -> None:
    declared = {path: declared_permission(path) for path in tfmesh_methods()}
    assert [path for path, permission in declared.items() if permission is None] == []
    assert set(declared.values()) <= {OPEN, *PERMISSIONS}
    assert declared["/tfmesh.inference.v1.InferenceService/Predict"] == PREDICT
    assert declared["/tfmesh.registry.v1.RegistryService/DeleteVersion"] == ADMIN


def write_tokens(path: Path) -> Path:
    principals = [
        {"name": "alice", "roles": ["admin"], "token_sha256": token_sha256(TOKENS["admin"])},
        {"name": "nobody", "roles": [], "token_sha256": token_sha256(TOKENS["nobody"])},
        {"name": "vera", "roles": ["viewer"], "token_sha256": token_sha256(TOKENS["viewer"])},
        {
            "name": "training",
            "roles": ["trainer", "deployer"],
            "token_sha256": token_sha256(SERVICE_TOKENS["training"]),
        },
        {
            "name": "inference",
            "roles": ["viewer"],
            "token_sha256": token_sha256(SERVICE_TOKENS["inference"]),
        },
        {"name": "data", "roles": ["viewer"], "token_sha256": token_sha256(SERVICE_TOKENS["data"])},
    ]
    path.write_text(json.dumps({"principals": principals}))
    return path


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    home = tmp_path_factory.mktemp("auth")
    tokens = write_tokens(home / "tokens.json")
    processes = platform_processes(home, TFMESH_INFERENCE_MODELS="digits")
    for name, process in processes.items():
        process.env["TFMESH_AUTH_TOKENS_FILE"] = str(tokens)
        if name in SERVICE_TOKENS:
            process.env[f"TFMESH_{name.upper()}_AUTH_TOKEN"] = SERVICE_TOKENS[name]
    with started(processes):
        yield processes


async def call_code(address: str, full_method: str, token: str | None) -> grpc.StatusCode:
    """The status of an empty request to `full_method`, made as its shape requires."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return await raw_call_code(address, full_method, b"", metadata)


def test_every_rpc_refuses_strangers_and_the_unpermitted_and_admits_the_permitted(platform):
    wrong: list[str] = []
    checked = 0
    for name, services in SERVED.items():
        address = platform[name].address
        for method in full_methods(services):
            permission = METHOD_PERMISSIONS[method]
            if permission == OPEN:
                continue
            # A principal without the permission: nobody (no roles) for reads, a viewer
            # for everything else.
            lacking = TOKENS["nobody"] if permission == READ else TOKENS["viewer"]
            codes = [
                asyncio.run(call_code(address, method, token))
                for token in (None, lacking, TOKENS["admin"])
            ]
            expected_refusals = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            if tuple(codes[:2]) != expected_refusals or codes[2] in DENIED:
                wrong.append(f"{method}: {[c.name for c in codes]}")
            checked += 1
    assert checked >= 40
    assert not wrong, "\n".join(wrong)


def test_open_methods_need_no_credentials(platform):
    address = platform["registry"].address
    assert asyncio.run(call_code(address, "/grpc.health.v1.Health/Check", None)) == (
        grpc.StatusCode.OK
    )


async def set_alias(address: str, token: str, **fields: object) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        try:
            await stub.SetAlias(
                registry_pb2.SetAliasRequest(**fields),  # type: ignore[arg-type]
                metadata=(("authorization", f"bearer {token}"),),
                timeout=5,
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_spoofed_actors_and_gate_overrides_are_refused(platform):
    address = platform["registry"].address
    spoofed = {
        "model": "digits",
        "alias": "staging",
        "version": 1,
        "actor": "alice@admin (spoofed)",
    }

    async def anonymous() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                await registry_pb2_grpc.RegistryServiceStub(channel).SetAlias(
                    registry_pb2.SetAliasRequest(**spoofed), timeout=5
                )
            except grpc.aio.AioRpcError as error:
                return error.code()
        return grpc.StatusCode.OK

    assert asyncio.run(anonymous()) == grpc.StatusCode.UNAUTHENTICATED
    # The training service's principal may deploy, but not override the gate.
    override = {**spoofed, "alias": "production", "override_gate": True}
    code = asyncio.run(set_alias(address, SERVICE_TOKENS["training"], **override))
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def upload_version(address: str, token: str, model: str) -> int:
    blobs = {"model.bin": b"weights"}
    header = header_for(model, blobs, create_model=True)

    async def stream():  # type: ignore[no-untyped-def]
        for message in upload_messages(header, blobs):
            yield message

    async with grpc.aio.insecure_channel(address) as channel:
        reply = await registry_pb2_grpc.RegistryServiceStub(channel).UploadVersion(
            stream(), metadata=(("authorization", f"Bearer {token}"),), timeout=10
        )
    return reply.version.version


def test_an_allowed_alias_move_is_audited_under_the_tokens_principal(platform):
    address = platform["registry"].address
    version = asyncio.run(upload_version(address, TOKENS["admin"], "audited"))
    fields = {"model": "audited", "alias": "staging", "version": version, "actor": "mallory"}
    assert asyncio.run(set_alias(address, TOKENS["admin"], **fields)) == grpc.StatusCode.OK

    async def history() -> list[registry_pb2.AliasChange]:
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await registry_pb2_grpc.RegistryServiceStub(channel).ListAliasHistory(
                registry_pb2.ListAliasHistoryRequest(model="audited"),
                metadata=(("authorization", f"Bearer {TOKENS['viewer']}"),),
                timeout=5,
            )
        return list(reply.changes)

    assert [change.actor for change in asyncio.run(history())] == ["alice"]


def rest_status(url: str, token: str | None) -> int:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        json.load(error)  # every refusal is a JSON body
        return error.code


def test_inference_rest_routes_answer_401_and_403(platform):
    base = platform["inference"].http_url
    assert rest_status(f"{base}/v2/health/live", None) == 200
    assert rest_status(f"{base}/v2", None) == 401
    assert rest_status(f"{base}/v2", TOKENS["nobody"]) == 403
    assert rest_status(f"{base}/v2", TOKENS["viewer"]) == 200
