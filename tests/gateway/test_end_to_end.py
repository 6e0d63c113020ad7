"""The model lifecycle through the gateway over a real socket, every service a process:
import digits, train a tiny model, follow the job to its registration, promote it, and
predict through the platform, TF Serving and KServe v2 routes, which must agree. Bad
input on the way gets 4xx JSON, and the gateway keeps serving."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from shared.ports import free_port
from tests.gateway.stack import GatewayProcess, running_stack
from tests.support.processes import service_process

MODEL = "digits"
ROWS = 16


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("e2e"), MODEL) as running:
        yield running


def follow(client: httpx.Client, job: str) -> list[dict]:
    with client.stream("GET", f"/api/v1/jobs/{job}/events", timeout=120) as stream:
        assert stream.status_code == 200
        return [json.loads(line) for line in stream.iter_lines() if line]


def wait_served(client: httpx.Client, version: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"/v1/models/{MODEL}/labels/production")
        if status.status_code == 200:
            served = status.json()["model_version_status"][0]
            if (served["version"], served["state"]) == (version, "AVAILABLE"):
                return
        time.sleep(0.2)
    raise AssertionError(f"version {version} was not served within {timeout_s} s")


def test_lifecycle_through_rest(stack):
    images = load_digits().images[:ROWS, :, :, np.newaxis].astype(np.float32)
    with httpx.Client(base_url=stack.gateway.url, timeout=30) as client:
        imported = client.post("/api/v1/datasets/samples", json={"sample": "digits"})
        assert imported.status_code == 201, imported.text
        dataset = imported.json()["version"]["name"]
        spec = {
            "dataset_version": dataset,
            "model": {"mlp": {"hidden_units": [32]}},
            "hyperparameters": {"epochs": 2, "batch_size": 64, "learning_rate": 0.01},
            "model_name": MODEL,
            "seed": 1,
        }
        submitted = client.post("/api/v1/jobs", json={"spec": spec})
        assert submitted.status_code == 201, submitted.text
        job = submitted.json()["job"]["name"]
        events = follow(client, job)
        assert events[-1]["state_change"]["state"] == "JOB_STATE_SUCCEEDED", events[-1]
        assert [e["epoch"]["epoch"] for e in events if "epoch" in e] == [1, 2]
        registration = client.get(f"/api/v1/jobs/{job}").json()["job"]["registration"]
        assert (registration["model"], registration["version"]) == (MODEL, "1")

        promoted = client.put(f"/api/v1/models/{MODEL}/aliases/production", json={"version": 1})
        assert promoted.status_code == 200, promoted.text
        wait_served(client, "1")

        platform = client.post(
            f"/api/v1/models/{MODEL}/predict",
            json={"inputs": {"x": {"dtype": "float32", "data": images.tolist()}}},
        )
        assert platform.status_code == 200, platform.text
        assert platform.json()["version"] == 1
        by_platform = np.array(platform.json()["outputs"]["output_0"]["data"])
        rows = client.post(f"/v1/models/{MODEL}:predict", json={"instances": images.tolist()})
        by_tfserving = np.array(rows.json()["predictions"])
        columns = client.post(f"/v1/models/{MODEL}:predict", json={"inputs": images.tolist()})
        by_columns = np.array(columns.json()["outputs"])
        infer = client.post(
            f"/v2/models/{MODEL}/infer",
            json={
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP32",
                        "shape": list(images.shape),
                        "data": images.reshape(-1).tolist(),
                    }
                ]
            },
        )
        assert infer.status_code == 200, infer.text
        output = infer.json()["outputs"][0]
        by_kserve = np.array(output["data"]).reshape(output["shape"])
        assert by_platform.shape == (ROWS, 10)
        np.testing.assert_allclose(by_platform.sum(axis=1), 1, rtol=1e-4)
        for other in (by_tfserving, by_columns, by_kserve):
            np.testing.assert_allclose(other, by_platform, rtol=1e-5, atol=1e-6)

        bad = [
            client.post(
                f"/v1/models/{MODEL}:predict",
                content=b"{",
                headers={"content-type": "application/json"},
            ),
            client.post(f"/v1/models/{MODEL}:predict", json={"instances": [[1.0, 2.0]]}),
            client.post("/v1/models/unknown:predict", json={"instances": [[1.0]]}),
            client.post(
                f"/api/v1/models/{MODEL}/predict", json={"inputs": {"x": {"data": [[1, 2], [3]]}}}
            ),
            client.post(
                f"/v2/models/{MODEL}/infer",
                json={
                    "inputs": [
                        {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}
                    ]
                },
            ),
            client.post(
                "/api/v1/jobs",
                json={"spec": {"dataset_version": dataset, "hyperparameters": {"epochs": -1}}},
            ),
        ]
        assert [answer.status_code for answer in bad] == [400, 400, 404, 400, 400, 400]
        assert all(answer.json()["error"] for answer in bad)
        again = client.post(f"/v1/models/{MODEL}:predict", json={"instances": images[:2].tolist()})
        assert again.status_code == 200
        np.testing.assert_allclose(
            again.json()["predictions"], by_platform[:2], rtol=1e-5, atol=1e-6
        )


def test_bearer_token_and_body_limit_over_a_socket(tmp_path):
    registry = service_process("services.registry.server", "TFMESH_REGISTRY_", tmp_path)
    port = free_port()
    gateway = GatewayProcess(
        {
            "TFMESH_GATEWAY_PORT": str(port),
            "TFMESH_GATEWAY_REGISTRY_ADDR": registry.address,
            "TFMESH_GATEWAY_API_TOKEN": "s3cret",
            "TFMESH_GATEWAY_MAX_BODY_BYTES": "2048",
        },
        port,
        tmp_path / "gateway.log",
    )
    try:
        registry.start()
        gateway.start()
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            refused = client.get("/api/v1/models")
            assert refused.status_code == 401
            assert refused.json()["error"]["status"] == "UNAUTHENTICATED"
            authorized = {"authorization": "Bearer s3cret"}
            assert client.get("/api/v1/models", headers=authorized).status_code == 200
            big = client.post(
                "/api/v1/models", json={"name": "m", "description": "x" * 4096}, headers=authorized
            )
            assert big.status_code == 413 and "2048" in big.json()["error"]["message"]
            assert client.get("/openapi.json").status_code == 200
            created = client.post("/api/v1/models", json={"name": "m"}, headers=authorized)
            assert created.status_code == 201
    finally:
        gateway.stop_quietly()
        registry.stop_quietly()
