"""Predictions and serving status through the gateway's three inference APIs (the
platform's, TF Serving's and KServe v2's, the last two forwarded to the inference
service's own REST port), against a real inference server serving noop models, whose
output is their first input: every answer is known exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gateway.app import create_app
from gateway.backends import Backends
from shared.ports import free_port
from tests.gateway.conftest import asgi_client

ROWS = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.5]]
FLAT = [value for row in ROWS for value in row]


async def test_platform_predict_pins_and_shapes(platform):
    answer = await platform.post(
        "/api/v1/models/echo/predict", json={"inputs": {"x": {"data": ROWS}}, "request_id": "r1"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["version"], body["request_id"]) == ("echo", 1, "r1")
    assert body["outputs"] == {"output_0": {"dtype": "float32", "shape": [2, 4], "data": ROWS}}
    flat = await platform.post(
        "/api/v1/models/echo/predict",
        json={"inputs": {"x": {"dtype": "float32", "shape": [2, 4], "data": FLAT}}, "version": 2},
    )
    assert flat.json()["version"] == 2 and flat.json()["outputs"]["output_0"]["data"] == ROWS
    canary = await platform.post(
        "/api/v1/models/echo/predict", json={"inputs": {"x": {"data": ROWS}}, "label": "canary"}
    )
    assert canary.json()["version"] == 2


async def test_serving_status_lists_versions_and_labels(platform):
    models = (await platform.get("/api/v1/serving")).json()["models"]
    assert [m["name"] for m in models] == ["echo", "pair"]
    echo = (await platform.get("/api/v1/serving/echo")).json()["status"]
    labels = {v["version"]: v["labels"] for v in echo["versions"]}
    assert labels == {"1": ["production"], "2": ["canary"]}
    assert echo["versions"][0]["inputs"] == [
        {"name": "x", "dtype": "DTYPE_FLOAT32", "shape": ["-1", "4"]}
    ]


async def test_serving_queue_shows_each_loaded_version(platform):
    queue = (await platform.get("/api/v1/serving/echo/queue")).json()
    assert [(v["version"], v["labels"]) for v in queue["versions"]] == [
        ("1", ["production"]),
        ("2", ["canary"]),
    ]
    assert all(v["capacity_rows"] == "128" for v in queue["versions"])
    assert (await platform.get("/api/v1/serving/nope/queue")).status_code == 404


async def test_tfserving_status_and_metadata(platform):
    status = (await platform.get("/v1/models/echo")).json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("1", "AVAILABLE"), ("2", "AVAILABLE")]
    assert status[0]["status"] == {"error_code": "OK", "error_message": ""}
    pinned = (await platform.get("/v1/models/echo/versions/2")).json()
    assert [s["version"] for s in pinned["model_version_status"]] == ["2"]
    labelled = (await platform.get("/v1/models/echo/labels/canary")).json()
    assert [s["version"] for s in labelled["model_version_status"]] == ["2"]
    metadata = (await platform.get("/v1/models/echo/metadata")).json()
    assert metadata["model_spec"] == {"name": "echo", "signature_name": "", "version": "1"}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in signature["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "4"]
    assert (await platform.get("/v1/models/echo/versions/2/metadata")).json()["model_spec"][
        "version"
    ] == "2"
    missing = await platform.get("/v1/models/echo/versions/9")
    assert missing.status_code == 404 and "echo/9" in missing.json()["error"]


async def test_tfserving_row_and_columnar_predict(platform):
    rows = await platform.post("/v1/models/echo:predict", json={"instances": ROWS})
    assert rows.status_code == 200, rows.text
    assert rows.json() == {"predictions": ROWS}
    assert len(rows.headers["x-request-id"]) == 32  # made up by the service, passed back
    given = await platform.post(
        "/v1/models/echo:predict", json={"instances": ROWS}, headers={"x-request-id": "mine"}
    )
    assert given.headers["x-request-id"] == "mine"
    columns = await platform.post("/v1/models/echo:predict", json={"inputs": ROWS})
    assert columns.json() == {"outputs": ROWS}
    named = await platform.post("/v1/models/echo/versions/2:predict", json={"inputs": {"x": ROWS}})
    assert named.json() == {"outputs": ROWS}
    labelled = await platform.post(
        "/v1/models/echo/labels/canary:predict", json={"instances": ROWS}
    )
    assert labelled.json() == {"predictions": ROWS}
    instances = [{"a": [1, 2], "b": [1, 2, 3]}, {"a": [3, 4], "b": [4, 5, 6]}]
    pair = await platform.post("/v1/models/pair:predict", json={"instances": instances})
    assert pair.status_code == 200, pair.text
    assert pair.json() == {"predictions": [[1.0, 2.0], [3.0, 4.0]]}
    fractional = [{"a": [1, 2], "b": [1.5, 2, 3]}]
    refused = await platform.post("/v1/models/pair:predict", json={"instances": fractional})
    assert refused.status_code == 400
    assert "instances.b" in refused.json()["error"] and "integers" in refused.json()["error"]


async def test_kserve_health_metadata_and_infer(platform):
    assert (await platform.get("/v2/health/live")).json() == {"live": True}
    assert (await platform.get("/v2/health/ready")).status_code == 200
    assert (await platform.get("/v2")).json()["name"] == "tfmesh"
    assert (await platform.get("/v2/models/echo/ready")).json() == {"name": "echo", "ready": True}
    absent = await platform.get("/v2/models/nope/ready")
    assert absent.status_code == 400 and absent.json()["ready"] is False
    metadata = (await platform.get("/v2/models/echo")).json()
    assert metadata["versions"] == ["1", "2"]
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    request = {
        "id": "42",
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": FLAT}],
    }
    answer = await platform.post("/v2/models/echo/infer", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("echo", "1", "42")
    assert body["outputs"] == [
        {"name": "output_0", "shape": [2, 4], "datatype": "FP32", "data": FLAT}
    ]
    nested = dict(request, inputs=[dict(request["inputs"][0], data=ROWS)])
    by_label = await platform.post("/v2/models/echo/versions/canary/infer", json=nested)
    assert by_label.json()["model_version"] == "2"
    assert by_label.json()["outputs"][0]["data"] == FLAT


async def test_the_three_apis_answer_alike(platform):
    platform_api = await platform.post(
        "/api/v1/models/echo/predict", json={"inputs": {"x": {"data": ROWS}}, "version": 1}
    )
    tfserving = await platform.post("/v1/models/echo/versions/1:predict", json={"instances": ROWS})
    kserve = await platform.post(
        "/v2/models/echo/versions/1/infer",
        json={"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]},
    )
    assert platform_api.json()["outputs"]["output_0"]["data"] == ROWS
    assert tfserving.json()["predictions"] == ROWS
    assert kserve.json()["outputs"][0]["data"] == FLAT


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        (
            "/api/v1/models/echo/predict",
            {"inputs": {"x": {"data": [[1, 2, 3]]}}},
            400,
            "dimension 1 is 3",
        ),
        (
            "/api/v1/models/echo/predict",
            {"inputs": {"x": {"data": [[1, 2], [3]]}}},
            400,
            "rectangular",
        ),
        (
            "/api/v1/models/echo/predict",
            {"inputs": {"x": {"data": [["a", "b", "c", "d"]]}}},
            400,
            "numbers",
        ),
        (
            "/api/v1/models/echo/predict",
            {"inputs": {"x": {"dtype": "complex", "data": [1]}}},
            400,
            "dtype",
        ),
        (
            "/api/v1/models/echo/predict",
            {"inputs": {"x": {"shape": [3], "data": [1, 2]}}},
            400,
            "needs 3 values",
        ),
        (
            "/api/v1/models/echo/predict",
            {"inputs": {"y": {"data": [[1, 2, 3, 4]]}}},
            400,
            "unknown input",
        ),
        ("/api/v1/models/nope/predict", {"inputs": {"x": {"data": [[1, 2, 3, 4]]}}}, 404, "nope"),
        ("/api/v1/models/echo/predict", {"inputs": {}}, 400, "inputs"),
        ("/v1/models/echo:predict", {"instances": [[1, 2, 3]]}, 400, "dimension 1 is 3"),
        ("/v1/models/echo:predict", {"instances": [[1, 2, 3, 4]], "inputs": [[1]]}, 400, "either"),
        (
            "/v1/models/echo:predict",
            {"signature_name": "other", "instances": [[1]]},
            400,
            "signature",
        ),
        ("/v1/models/nope:predict", {"instances": [[1, 2, 3, 4]]}, 404, "nope"),
        ("/v1/models/pair:predict", {"instances": [[1, 2]]}, 400, "name them"),
        (
            "/v2/models/echo/infer",
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
            400,
            "dimension 1 is 3",
        ),
        (
            "/v2/models/echo/infer",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1]}]},
            400,
            "needs 4 values",
        ),
        (
            "/v2/models/echo/infer",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": [1]}]},
            400,
            "datatype",
        ),
        (
            "/v2/models/nope/infer",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            404,
            "nope",
        ),
    ],
)
async def test_bad_input_is_4xx_naming_the_problem(platform, path, body, status, words):
    answer = await platform.post(path, json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    message = error if isinstance(error, str) else error["message"]
    assert words in message
    still = await platform.post("/v1/models/echo:predict", json={"instances": ROWS})
    assert still.status_code == 200


@pytest.mark.parametrize(
    "path", ["/api/v1/models/echo/predict", "/v1/models/echo:predict", "/v2/models/echo/infer"]
)
async def test_malformed_json_is_400_with_a_json_body(platform, path):
    answer = await platform.post(
        path, content=b'{"inputs": [1,', headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert "JSON" in (error if isinstance(error, str) else error["message"])


async def test_serving_apis_read_bodies_as_json_whatever_the_content_type(platform):
    # `curl -d` sends form-urlencoded; TF Serving and Triton read the body as JSON anyway.
    form = {"content-type": "application/x-www-form-urlencoded"}
    rows = await platform.post(
        "/v1/models/echo:predict", content=json.dumps({"instances": ROWS}), headers=form
    )
    assert rows.status_code == 200 and rows.json() == {"predictions": ROWS}
    request = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": FLAT}]}
    infer = await platform.post("/v2/models/echo/infer", content=json.dumps(request), headers=form)
    assert infer.status_code == 200 and infer.json()["outputs"][0]["data"] == FLAT


async def test_triton_binary_tensors_pass_through_the_gateway_untouched(platform):
    rows = np.array(ROWS, np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    answer = await platform.post(
        "/v2/models/echo/infer",
        content=header + rows.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert answer.status_code == 200, answer.text
    length = int(answer.headers["inference-header-content-length"])
    assert json.loads(answer.content[:length])["outputs"][0]["parameters"] == {
        "binary_data_size": rows.nbytes
    }
    np.testing.assert_array_equal(np.frombuffer(answer.content[length:], "<f4"), rows.reshape(-1))


async def test_an_unreachable_inference_rest_port_is_503_in_the_apis_error_shape(
    platform_settings,
):
    address = f"127.0.0.1:{free_port()}"
    settings = platform_settings.model_copy(update={"inference_http_addr": address})
    async with asgi_client(create_app(settings, Backends(settings, None))) as client:
        answer = await client.post("/v2/models/echo/infer", json={"inputs": []})
        assert answer.status_code == 503
        assert "not answering" in answer.json()["error"]


async def test_forwarded_paths_check_the_bearer_token_and_the_body_limit(platform_settings):
    settings = platform_settings.model_copy(update={"api_token": "s3cret", "max_body_bytes": 4096})
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": FLAT}]}
    async with asgi_client(create_app(settings, Backends(settings, None))) as client:
        refused = await client.post("/v2/models/echo/infer", json=body)
        assert refused.status_code == 401 and refused.json()["error"]
        assert refused.headers["www-authenticate"] == "Bearer"
        wrong = await client.get("/v1/models/echo", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        # Auth schemes are case-insensitive.
        for scheme in ("Bearer", "bearer"):
            answer = await client.post(
                "/v2/models/echo/infer", json=body, headers={"authorization": f"{scheme} s3cret"}
            )
            assert answer.status_code == 200, answer.text
        assert (await client.get("/v2/health/live")).status_code == 200
        big = await client.post(
            "/v2/models/echo/infer",
            content=b"x" * 5000,
            headers={"authorization": "Bearer s3cret"},
        )
        assert big.status_code == 413 and "4096" in big.json()["error"]


def test_the_gateway_pool_lets_go_of_idle_connections_before_the_front_ends_do():
    from gateway.forward import POOL_IDLE_S
    from services.inference.rest.serve import KEEP_ALIVE_S

    assert POOL_IDLE_S < KEEP_ALIVE_S
