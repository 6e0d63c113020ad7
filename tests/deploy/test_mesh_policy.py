"""The mesh's security, enforced for real: a registry process behind its inbound sidecar (a
real Envoy configured from istio/peer-authentication.yaml and the registry's
AuthorizationPolicy in istio/authorization-policies.yaml), called through the outbound
sidecars of other workloads, each with its own certificate (a SPIFFE identity signed by
the mesh CA, as Istio issues them). No Istio control plane runs here; its data plane does.

- the gateway's identity may create models and read them (its rules allow both);
- the data service's may read, but CreateModel is refused by the RBAC filter;
- a plain-text caller, and a caller whose certificate another CA signed, never get in;
- the callee's identity is checked too: a sidecar expecting another workload refuses it.

And an inference process behind two inbound sidecars (its REST port and its gRPC port,
under the inference AuthorizationPolicy): the ingress's identity reaches the REST data
plane (KServe v2, TF Serving) and nothing else, the gateway's reaches both ports, the
data service's neither."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509

from cli.pki import BOTH_SIDES, issue, write_certificate, write_key
from inference import grpc_predict_v2_pb2 as v2
from inference import grpc_predict_v2_pb2_grpc
from shared.ports import free_ports
from tests.deploy.envoy import Envoy
from tests.deploy.mesh_policy import inbound_bootstrap, outbound_bootstrap, spiffe
from tests.support.processes import REPO, service_process
from tfmesh.registry.v1 import registry_pb2 as pb
from tfmesh.registry.v1 import registry_pb2_grpc

ACCOUNTS = "cluster.local/ns/tfmesh/sa"
INGRESS = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
# The inference pods' container ports, as k8s/base names them.
GRPC_PORT, REST_PORT = 50054, 50055


def identity(folder: Path, authority, account: str, accounts: str = ACCOUNTS) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """A workload certificate for service account `account` (of namespace `accounts`),
    and its key."""
    certificate, key = issue(
        account,
        authority,
        usage=BOTH_SIDES,
        alt_names=[x509.UniformResourceIdentifier(spiffe(f"{accounts}/{account}"))],
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / f"{account}.pem", folder / f"{account}-key.pem")
    write_certificate(certificate, paths[0])
    write_key(key, paths[1])
    return paths


def istio(name: str, kind: str, file: str) -> dict:
    documents = yaml.safe_load_all((REPO / "istio" / file).read_text())
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)


@dataclass
class Mesh:
    inbound: Envoy
    callers: dict[str, Envoy]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    folder = tmp_path_factory.mktemp("mesh-policy")
    authority = issue("mesh CA", None, is_ca=True)
    stranger = issue("another CA", None, is_ca=True)
    ca = folder / "ca.pem"
    write_certificate(authority[0], ca)
    registry = service_process("services.registry.server", "TFMESH_REGISTRY_", folder)
    envoys: list[Envoy] = []
    try:
        registry.start()
        inbound = Envoy(
            inbound_bootstrap(
                istio("default", "PeerAuthentication", "peer-authentication.yaml"),
                istio("registry", "AuthorizationPolicy", "authorization-policies.yaml"),
                registry.port,
                identity(folder, authority, "registry"),
                ca,
            ),
            folder / "inbound",
        ).start()
        envoys.append(inbound)
        callee = f"{ACCOUNTS}/registry"
        callers = {
            "gateway": outbound_bootstrap(
                inbound.port, identity(folder, authority, "gateway"), ca, callee
            ),
            "data": outbound_bootstrap(
                inbound.port, identity(folder, authority, "data"), ca, callee
            ),
            "stranger": outbound_bootstrap(
                inbound.port, identity(folder / "other", stranger, "gateway"), ca, callee
            ),
            "wrong-callee": outbound_bootstrap(
                inbound.port, identity(folder, authority, "gateway"), ca, f"{ACCOUNTS}/inference"
            ),
        }
        started = {}
        for name, bootstrap in callers.items():
            started[name] = Envoy(bootstrap, folder / name).start()
            envoys.append(started[name])
        yield Mesh(inbound, started)
    finally:
        for envoy in envoys:
            envoy.kill()
        registry.stop_quietly()


def stub(address: str) -> tuple[grpc.Channel, registry_pb2_grpc.RegistryServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, registry_pb2_grpc.RegistryServiceStub(channel)


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_the_allowed_identity_calls_the_allowed_methods(mesh: Mesh) -> None:
    channel, registry = stub(mesh.callers["gateway"].address)
    with channel:
        created = registry.CreateModel(pb.CreateModelRequest(name="meshed"), timeout=10)
        assert created.model.name == "meshed"
        assert registry.GetModel(pb.GetModelRequest(name="meshed"), timeout=10).model.name
    assert mesh.inbound.counters().get("http.inbound.rbac.allowed", 0) >= 2


def test_an_identity_without_the_rule_is_refused_but_may_read(mesh: Mesh) -> None:
    channel, registry = stub(mesh.callers["data"].address)
    with channel:
        refused = code_of(lambda: registry.CreateModel(pb.CreateModelRequest(name="x"), timeout=10))
        assert refused is grpc.StatusCode.PERMISSION_DENIED
        listed = registry.ListModels(pb.ListModelsRequest(), timeout=10)
        assert "x" not in [m.name for m in listed.models]
    assert mesh.inbound.counters().get("http.inbound.rbac.denied", 0) >= 1


def test_callers_without_a_mesh_certificate_never_get_in(mesh: Mesh) -> None:
    request = pb.ListModelsRequest()
    # Plain text straight to the inbound sidecar: the TLS handshake fails.
    channel, registry = stub(mesh.inbound.address)
    with channel:
        assert (
            code_of(lambda: registry.ListModels(request, timeout=5)) is grpc.StatusCode.UNAVAILABLE
        )
    # A certificate another CA signed, with the gateway's name: refused all the same.
    channel, registry = stub(mesh.callers["stranger"].address)
    with channel:
        assert (
            code_of(lambda: registry.ListModels(request, timeout=5)) is grpc.StatusCode.UNAVAILABLE
        )


def test_a_sidecar_refuses_a_callee_that_is_not_who_it_expects(mesh: Mesh) -> None:
    channel, registry = stub(mesh.callers["wrong-callee"].address)
    with channel:
        code = code_of(lambda: registry.ListModels(pb.ListModelsRequest(), timeout=5))
    assert code is grpc.StatusCode.UNAVAILABLE


@dataclass
class InferenceMesh:
    # Per caller, its outbound sidecar to the REST port's inbound and to the gRPC port's.
    rest: dict[str, Envoy]
    grpc: dict[str, Envoy]


@pytest.fixture(scope="module")
def inference_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferenceMesh]:
    folder = tmp_path_factory.mktemp("mesh-policy-inference")
    authority = issue("mesh CA", None, is_ca=True)
    ca = folder / "ca.pem"
    write_certificate(authority[0], ca)
    config = folder / "models.json"
    config.write_text(
        json.dumps({"models": [{"name": "noop", "runtime": "noop", "versions": [{"version": 1}]}]})
    )
    inference = service_process(
        "services.inference.server",
        "TFMESH_INFERENCE_",
        folder,
        TFMESH_INFERENCE_MODEL_CONFIG_FILE=str(config),
        TFMESH_INFERENCE_FRONTENDS="0",
    )
    envoys: list[Envoy] = []
    policy = istio("inference", "AuthorizationPolicy", "authorization-policies.yaml")
    peer = istio("default", "PeerAuthentication", "peer-authentication.yaml")
    callee = f"{ACCOUNTS}/inference"
    callers = {
        "ingress": identity(folder, authority, *reversed(INGRESS.rsplit("/", 1))),
        "gateway": identity(folder, authority, "gateway"),
        "data": identity(folder, authority, "data"),
    }
    try:
        inference.start()
        rest_port = int(inference.http_url.rsplit(":", 1)[1])
        outbound: dict[str, dict[str, Envoy]] = {"rest": {}, "grpc": {}}
        for kind, workload_port, container_port, http2 in (
            ("rest", rest_port, REST_PORT, False),
            ("grpc", inference.port, GRPC_PORT, True),
        ):
            [listener_port] = free_ports(1)
            inbound = Envoy(
                inbound_bootstrap(
                    peer,
                    policy,
                    workload_port,
                    identity(folder, authority, "inference"),
                    ca,
                    listener_port=listener_port,
                    container_port=container_port,
                    http2=http2,
                ),
                folder / f"inbound-{kind}",
            ).start()
            envoys.append(inbound)
            for name, certificate in callers.items():
                envoy = Envoy(
                    outbound_bootstrap(inbound.port, certificate, ca, callee),
                    folder / f"{name}-{kind}",
                ).start()
                envoys.append(envoy)
                outbound[kind][name] = envoy
        yield InferenceMesh(outbound["rest"], outbound["grpc"])
    finally:
        for envoy in envoys:
            envoy.kill()
        inference.stop_quietly()


def http_status(envoy: Envoy, path: str, body: dict | None = None) -> int:
    """The status of a REST call through a caller's outbound sidecar."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://{envoy.address}{path}",
        data=data,
        headers={"content-type": "application/json"},
        method="POST" if data is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


INFER = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}


def model_infer(envoy: Envoy) -> grpc.StatusCode:
    request = v2.ModelInferRequest(model_name="noop")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    tensor.contents.fp32_contents.extend([0.5] * 64)
    with grpc.insecure_channel(envoy.address) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        return code_of(lambda: stub.ModelInfer(request, timeout=10))


def test_the_ingress_reaches_the_rest_data_plane_and_nothing_else(
    inference_mesh: InferenceMesh,
) -> None:
    ingress = inference_mesh.rest["ingress"]
    assert http_status(ingress, "/v2/models/noop/infer", INFER) == 200
    assert http_status(ingress, "/v2/health/ready") == 200
    assert http_status(ingress, "/v2") == 200
    assert http_status(ingress, "/v1/models/noop") == 200
    # A path outside the data plane is refused by the sidecar (the workload would 404).
    assert http_status(ingress, "/metrics") == 403
    # The gRPC port is not the ingress's.
    assert model_infer(inference_mesh.grpc["ingress"]) is grpc.StatusCode.PERMISSION_DENIED


def test_the_gateway_reaches_both_ports_and_other_services_neither(
    inference_mesh: InferenceMesh,
) -> None:
    assert http_status(inference_mesh.rest["gateway"], "/v2/models/noop/infer", INFER) == 200
    assert model_infer(inference_mesh.grpc["gateway"]) is grpc.StatusCode.OK
    assert http_status(inference_mesh.rest["data"], "/v2/models/noop/infer", INFER) == 403
    assert model_infer(inference_mesh.grpc["data"]) is grpc.StatusCode.PERMISSION_DENIED
