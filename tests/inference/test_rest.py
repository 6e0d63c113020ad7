"""The inference service's own REST API on a real socket (uvicorn), in both server shapes:
KServe v2 with JSON and with Triton's binary tensors, TF Serving's row and columnar
formats with base64 strings, status and metadata, and bad input of every kind answered
with a 4xx and the APIs' error body while the server keeps serving."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import httpx
import numpy as np
import pytest

from services.inference.dataplane.link import OwnerLink
from services.inference.dataplane.slab import Slab
from services.inference.pipeline import Pipeline
from services.inference.rest.app import RestApi
from services.inference.settings import InferenceSettings
from shared.channels import open_channel
from shared.telemetry import setup_telemetry
from shared.tensors import to_tensor
from tests.inference.conftest import digits_entry, start_server_in_process, write_model_config
from tests.inference.models import FEATURES, digits_rows
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc

LIMIT = 1024 * 1024


@pytest.fixture(params=["single", "split"])
async def server(request, tmp_path, artifacts):
    config = write_model_config(
        tmp_path,
        [
            digits_entry(artifacts),
            {
                "name": "text",
                "runtime": "noop",
                "runtime_options": {"inputs": [{"name": "text", "dtype": "object", "shape": []}]},
                "versions": [{"version": 1}],
            },
        ],
    )
    settings = InferenceSettings(
        home=tmp_path, port=0, http_port=0, model_config_file=config, max_message_bytes=LIMIT
    )
    telemetry = setup_telemetry("inference-rest", configure_logging=False)
    running = await start_server_in_process(request.param, settings, telemetry)
    yield running
    await running.stop(0)


@pytest.fixture
async def http(server):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        yield client


async def grpc_outputs(server, rows: np.ndarray, version: int = 0) -> np.ndarray:
    async with open_channel(server.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        answer = await stub.Predict(
            pb.PredictRequest(model="digits", version=version, inputs={"x": to_tensor(rows)})
        )
    return np.frombuffer(answer.outputs["output_0"].content, "<f4").reshape(len(rows), 10)


def infer_body(rows: np.ndarray, **fields) -> dict:
    return {
        "id": "req-1",
        "inputs": [
            {"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}
        ],
        **fields,
    }


# --- KServe v2 -----------------------------------------------------------------------------


async def test_kserve_health_metadata_config_and_statistics(http):
    assert (await http.get("/v2/health/live")).json() == {"live": True}
    assert (await http.get("/v2/health/ready")).json() == {"ready": True}
    server = (await http.get("/v2")).json()
    assert server["name"] == "tfmesh" and "streaming" in server["extensions"]
    metadata = (await http.get("/v2/models/digits")).json()
    assert metadata["versions"] == ["1", "2"]
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, FEATURES]}]
    pinned = (await http.get("/v2/models/digits/versions/canary")).json()
    assert pinned["name"] == "digits" and pinned["inputs"] == metadata["inputs"]
    absent_version = await http.get("/v2/models/digits/versions/9")
    assert absent_version.status_code == 404 and "digits/9" in absent_version.json()["error"]
    for path in ("/v2/models/digits/versions/2/ready", "/v2/models/digits/versions/canary/ready"):
        assert (await http.get(path)).json() == {"name": "digits", "ready": True}
    absent = await http.get("/v2/models/digits/versions/3/ready")
    assert (absent.status_code, absent.json()["ready"]) == (400, False)
    config = (await http.get("/v2/models/digits/config")).json()
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [FEATURES]
    await http.post("/v2/models/digits/infer", json=infer_body(digits_rows(3)))
    statistics = (await http.get("/v2/models/digits/versions/1/stats")).json()
    (version,) = statistics["model_stats"]
    assert version["inference_count"] >= 3 and version["inference_stats"]["success"]["count"] >= 1


async def test_kserve_infer_nested_flat_pinned_and_filtered(http, server):
    rows = digits_rows(3)
    expected = await grpc_outputs(server, rows)
    nested = (await http.post("/v2/models/digits/infer", json=infer_body(rows))).json()
    assert (nested["model_name"], nested["model_version"], nested["id"]) == ("digits", "1", "req-1")
    (output,) = nested["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("output_0", "FP32", [3, 10])
    np.testing.assert_allclose(
        np.array(output["data"], np.float32).reshape(3, 10), expected, rtol=1e-6
    )
    flat = infer_body(rows)
    flat["inputs"][0]["data"] = rows.reshape(-1).tolist()
    pinned = await http.post(
        "/v2/models/digits/versions/canary/infer",
        json={**flat, "outputs": [{"name": "output_0"}]},
    )
    assert pinned.json()["model_version"] == "2"
    np.testing.assert_allclose(
        np.array(pinned.json()["outputs"][0]["data"], np.float32).reshape(3, 10),
        await grpc_outputs(server, rows, version=2),
        rtol=1e-6,
    )


def binary_body(rows: np.ndarray, **parameters) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            **parameters,
        }
    ).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    return header + rows.astype("<f4").tobytes(), headers


async def test_kserve_binary_tensors_both_ways(http, server):
    rows = digits_rows(4)
    expected = await grpc_outputs(server, rows)
    body, headers = binary_body(
        rows, outputs=[{"name": "output_0", "parameters": {"binary_data": True}}]
    )
    answer = await http.post("/v2/models/digits/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    length = int(answer.headers["inference-header-content-length"])
    header = json.loads(answer.content[:length])
    (output,) = header["outputs"]
    assert output["parameters"]["binary_data_size"] == 4 * 10 * 4 and "data" not in output
    values = np.frombuffer(answer.content[length:], "<f4").reshape(4, 10)
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    # Binary in, JSON out.
    body, headers = binary_body(rows)
    answer = await http.post("/v2/models/digits/infer", content=body, headers=headers)
    assert "inference-header-content-length" not in answer.headers
    np.testing.assert_allclose(
        np.array(answer.json()["outputs"][0]["data"], np.float32).reshape(4, 10),
        expected,
        rtol=1e-6,
    )


# --- TF Serving ----------------------------------------------------------------------------


async def test_tf_serving_status_metadata_row_and_columnar(http, server):
    status = (await http.get("/v1/models/digits")).json()
    assert [s["version"] for s in status["model_version_status"]] == ["1", "2"]
    assert (await http.get("/v1/models/digits/labels/canary")).json()["model_version_status"][0][
        "version"
    ] == "2"
    metadata = (await http.get("/v1/models/digits/versions/2/metadata")).json()
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    rows = digits_rows(2)
    expected = await grpc_outputs(server, rows)
    row = await http.post(
        "/v1/models/digits:predict", content=json.dumps({"instances": rows.tolist()})
    )
    np.testing.assert_allclose(np.array(row.json()["predictions"], np.float32), expected, rtol=1e-6)
    named = {"instances": [{"x": r} for r in rows.tolist()]}
    assert (await http.post("/v1/models/digits:predict", json=named)).json() == row.json()
    columns = await http.post(
        "/v1/models/digits/versions/2:predict", json={"inputs": {"x": rows.tolist()}}
    )
    np.testing.assert_allclose(
        np.array(columns.json()["outputs"], np.float32),
        await grpc_outputs(server, rows, version=2),
        rtol=1e-6,
    )
    classify = await http.post("/v1/models/digits:classify", json={"examples": []})
    assert classify.status_code == 501 and "error" in classify.json()


async def test_tf_serving_strings_travel_as_text_and_base64(http):
    raw = b"\x00\xffbinary"
    body = {"instances": ["plain text", {"b64": base64.b64encode(raw).decode()}]}
    answer = await http.post("/v1/models/text:predict", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": ["plain text", raw.decode(errors="replace")]}


# --- bad input -----------------------------------------------------------------------------


def spoiled_binary_header() -> tuple[bytes, dict[str, str]]:
    body, headers = binary_body(digits_rows(1))
    headers["Inference-Header-Content-Length"] = str(len(body) + 10)
    return body, headers


def spoiled_binary_size() -> tuple[bytes, dict[str, str]]:
    body, headers = binary_body(digits_rows(1))
    return body[:-8], headers


BAD_REQUESTS = {
    "malformed JSON": ("/v2/models/digits/infer", b'{"inputs": [', {}, 400),
    "data not fitting the shape": (
        "/v2/models/digits/infer",
        json.dumps(infer_body(digits_rows(2)))
        .replace('"shape": [2, 64]', '"shape": [3, 64]')
        .encode(),
        {},
        400,
    ),
    "text for numbers": (
        "/v2/models/digits/infer",
        json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": ["a", 1]}]}
        ).encode(),
        {},
        400,
    ),
    "unknown datatype": (
        "/v2/models/digits/infer",
        json.dumps(
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP128", "data": [1]}]}
        ).encode(),
        {},
        400,
    ),
    "binary header past the end": (*(("/v2/models/digits/infer", *spoiled_binary_header())), 400),
    "binary data shorter than declared": (
        *(("/v2/models/digits/infer", *spoiled_binary_size())),
        400,
    ),
    "wrong content type": (
        "/v2/models/digits/infer",
        json.dumps(infer_body(digits_rows(1))).encode(),
        {"Content-Type": "application/xml"},
        415,
    ),
    "wrong input shape for the model": (
        "/v2/models/digits/infer",
        json.dumps(infer_body(np.zeros((1, 3), np.float32))).encode(),
        {},
        400,
    ),
    "unknown model": (
        "/v2/models/nope/infer",
        json.dumps(infer_body(digits_rows(1))).encode(),
        {},
        404,
    ),
    "TF Serving ragged instances": (
        "/v1/models/digits:predict",
        b'{"instances": [[1, 2], [3]]}',
        {},
        400,
    ),
    "TF Serving both formats": (
        "/v1/models/digits:predict",
        b'{"instances": [], "inputs": []}',
        {},
        400,
    ),
    "TF Serving bad base64": (
        "/v1/models/text:predict",
        b'{"instances": [{"b64": "!!"}]}',
        {},
        400,
    ),
    "unknown route": ("/v3/models/digits/infer", b"{}", {}, 404),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
async def test_bad_input_is_a_4xx_with_an_error_body_and_harms_nothing(http, case):
    path, body, headers, status = BAD_REQUESTS[case]
    answer = await http.post(path, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert isinstance(answer.json()["error"], str) and answer.json()["error"]
    assert (
        await http.post("/v2/models/digits/infer", json=infer_body(digits_rows(1)))
    ).status_code == 200


async def test_a_body_over_the_limit_is_413_not_a_reset_connection(http):
    answer = await http.post("/v2/models/digits/infer", content=b"x" * (LIMIT + 1))
    assert answer.status_code == 413
    assert "TFMESH_INFERENCE_MAX_MESSAGE_BYTES" in answer.json()["error"]
    wrong_method = await http.get("/v2/models/digits/infer")
    assert wrong_method.status_code == 405


async def test_an_idle_keep_alive_connection_outlives_uvicorns_default_timeout(server):
    # uvicorn closes idle connections after 5 s by default; a pool in front of the front ends
    # (the gateway's) that reuses one as it closes fails that request. The front ends keep
    # them KEEP_ALIVE_S, longer than the gateway's pool keeps its own.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    request = f"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1:{server.http_port}\r\n\r\n".encode()
    try:
        for pause_s in (0.0, 6.0):
            await asyncio.sleep(pause_s)
            writer.write(request)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 5)
            assert status.startswith(b"HTTP/1.1 200"), (pause_s, status)
            length = 0
            while (line := await asyncio.wait_for(reader.readline(), 5)) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
    finally:
        writer.close()


async def test_a_front_end_without_its_owner_answers_503_with_retry_after():
    # A real link to an owner that is not there (nothing listens at the address).
    link = OwnerLink(f"@tfmesh-test-nobody-{uuid.uuid4().hex}", Slab.create(4096, "t"), 0)
    api = RestApi(Pipeline(link), max_body_bytes=LIMIT)
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://inference") as client:
        answer = await client.post("/v2/models/digits/infer", json=infer_body(digits_rows(1)))
        ready = await client.get("/v2/health/ready")
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    assert "model owner" in answer.json()["error"]
    assert ready.status_code == 400 and "retry-after" not in ready.headers
