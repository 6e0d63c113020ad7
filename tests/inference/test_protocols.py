"""Contract tests against a real server process, in both shapes of its gRPC port (the
multi-process server's two front ends on grpcio, and one process behind Envoy's bridge:
services.inference.bridge): TF Serving's own client stubs, KServe v2 stubs and Triton's
own clients (`tritonclient`, `perf_analyzer`), unchanged client code, version labels,
metadata, and bad input over each protocol (the right code, never INTERNAL, and the
server keeps serving)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from bench import triton_tools
from inference import grpc_predict_v2_pb2 as v2
from inference import grpc_predict_v2_pb2_grpc
from tests.inference.conftest import digits_entry, write_model_config
from tests.inference.models import digits_rows
from tests.support.processes import service_process
from tests.support.status import field_violations

# The gRPC port's two shapes: grpcio in two front ends, and Envoy before one process.
FRONTS = {"grpcio": "2", "envoy": "0"}


@pytest.fixture(scope="module", params=sorted(FRONTS))
def service(request, tmp_path_factory, artifacts):
    home = tmp_path_factory.mktemp("inference-process")
    config = write_model_config(
        home,
        [digits_entry(artifacts)],
    )
    process = service_process(
        "services.inference.server",
        "TFMESH_INFERENCE_",
        home,
        TFMESH_INFERENCE_MODEL_CONFIG_FILE=str(config),
        TFMESH_INFERENCE_FRONTENDS=FRONTS[request.param],
        TFMESH_INFERENCE_GRPC_FRONT=request.param,
    )
    process.start(timeout_s=120)
    yield process
    assert process.terminate() == 0


@pytest.fixture(scope="module")
def address(service) -> str:
    return service.address


@pytest.fixture(scope="module")
def channel(address):
    with grpc.insecure_channel(address) as channel:
        yield channel


@pytest.fixture
def prediction(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture
def kserve(channel):
    return grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)


# --- TF Serving ----------------------------------------------------------------------------


def tf_request(rows: np.ndarray, **spec) -> predict_pb2.PredictRequest:
    """What existing TF Serving client code writes."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", "digits")
    request.model_spec.signature_name = "serving_default"
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(rows))
    return request


def test_tf_serving_predict_with_versions_and_labels(prediction):
    rows = digits_rows(3)
    answer = prediction.Predict(tf_request(rows), timeout=10)
    probabilities = tf.make_ndarray(answer.outputs["output_0"])
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert answer.model_spec.version.value == 1
    assert answer.model_spec.signature_name == "serving_default"
    assert prediction.Predict(tf_request(rows, version=2)).model_spec.version.value == 2
    by_label = prediction.Predict(tf_request(rows, label="canary"))
    assert by_label.model_spec.version.value == 2
    np.testing.assert_allclose(
        tf.make_ndarray(by_label.outputs["output_0"]),
        tf.make_ndarray(prediction.Predict(tf_request(rows, version=2)).outputs["output_0"]),
    )


def test_tf_serving_request_ids_travel_as_metadata_both_ways(prediction):
    reply, call = prediction.Predict.with_call(
        tf_request(digits_rows(1)), metadata=(("x-request-id", "tf-7"),), timeout=10
    )
    assert reply.outputs and dict(call.trailing_metadata())["x-request-id"] == "tf-7"


def test_tf_serving_typed_values_are_accepted_too(prediction):
    request = tf_request(digits_rows(1))
    proto = request.inputs["x"]
    values = tf.make_ndarray(proto).reshape(-1).tolist()
    proto.ClearField("tensor_content")
    proto.float_val.extend(values)
    answer = prediction.Predict(request)
    assert tf.make_ndarray(answer.outputs["output_0"]).shape == (1, 10)


def test_tf_serving_metadata_and_status(prediction, channel):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "digits"
    metadata = prediction.GetModelMetadata(request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert [d.size for d in signature.inputs["x"].tensor_shape.dim] == [-1, 64]
    assert signature.inputs["x"].dtype == tf.float32.as_datatype_enum
    assert list(signature.outputs) == ["output_0"]
    assert metadata.model_spec.version.value == 1

    models = model_service_pb2_grpc.ModelServiceStub(channel)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "digits"
    statuses = models.GetModelStatus(status_request).model_version_status
    assert [(s.version, s.state) for s in statuses] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
    ]
    status_request.model_spec.version_label = "canary"
    (canary,) = models.GetModelStatus(status_request).model_version_status
    assert canary.version == 2


TF_BAD_INPUTS = {
    "wrong dtype": (
        lambda r: r.inputs["x"].CopyFrom(tf.make_tensor_proto(digits_rows(1).astype(np.float64))),
        "inputs[x]",
    ),
    "wrong rank": (
        lambda r: r.inputs["x"].CopyFrom(tf.make_tensor_proto(digits_rows(1).reshape(1, 8, 8))),
        "inputs[x]",
    ),
    "wrong dims": (
        lambda r: r.inputs["x"].CopyFrom(tf.make_tensor_proto(digits_rows(1)[:, :60])),
        "inputs[x]",
    ),
    "unknown input name": (
        lambda r: r.inputs["image"].CopyFrom(tf.make_tensor_proto(digits_rows(1))),
        "inputs[image]",
    ),
    "empty tensor": (
        lambda r: r.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros((0, 64), np.float32))),
        "inputs[x]",
    ),
    "wrong byte length": (
        lambda r: setattr(r.inputs["x"], "tensor_content", b"\0" * 10),
        "inputs[x].tensor_content",
    ),
    "unknown signature": (
        lambda r: setattr(r.model_spec, "signature_name", "classify"),
        "model_spec.signature_name",
    ),
}


@pytest.mark.parametrize("case", sorted(TF_BAD_INPUTS))
def test_tf_serving_bad_input_is_invalid_argument(prediction, case):
    spoil, field = TF_BAD_INPUTS[case]
    request = tf_request(digits_rows(1))
    spoil(request)
    with pytest.raises(grpc.RpcError) as error:
        prediction.Predict(request, timeout=10)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error.value)
    assert prediction.Predict(tf_request(digits_rows(1)), timeout=10).outputs


def test_tf_serving_unknown_model_is_not_found(prediction):
    with pytest.raises(grpc.RpcError) as error:
        prediction.Predict(tf_request(digits_rows(1), name="nope"), timeout=10)
    assert error.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_3000_character_model_name_is_answered_not_refused_by_the_client(prediction, channel):
    # The name comes back in the status, cut short: the whole status must fit the client's
    # 8 KiB limit on trailers, or the caller sees RESOURCE_EXHAUSTED instead of the answer.
    with pytest.raises(grpc.RpcError) as error:
        prediction.Predict(tf_request(digits_rows(1), name="n" * 3000), timeout=10)
    assert error.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    assert "more characters" in error.value.details()
    status = model_service_pb2_grpc.ModelServiceStub(channel)
    with pytest.raises(grpc.RpcError) as error:
        status.GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "n" * 3000}),
            timeout=10,
        )
    assert error.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


@pytest.mark.parametrize(
    "method, request_type",
    [
        ("Classify", classification_pb2.ClassificationRequest),
        ("Regress", regression_pb2.RegressionRequest),
        ("MultiInference", inference_pb2.MultiInferenceRequest),
    ],
)
def test_tf_serving_calls_it_leaves_out_are_unimplemented(prediction, method, request_type):
    with pytest.raises(grpc.RpcError) as error:
        getattr(prediction, method)(request_type(), timeout=10)
    assert error.value.code() is grpc.StatusCode.UNIMPLEMENTED
    prediction.Predict(tf_request(digits_rows(1)), timeout=10)


# --- KServe v2 -----------------------------------------------------------------------------


def v2_typed(rows: np.ndarray, **fields) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="digits", id="req-1", **fields)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=rows.shape)
    tensor.contents.fp32_contents.extend(rows.reshape(-1).tolist())
    return request


def v2_raw(rows: np.ndarray, model: str = "digits", **fields) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model, **fields)
    request.inputs.add(name="x", datatype="FP32", shape=rows.shape)
    request.raw_input_contents.append(rows.astype("<f4").tobytes())
    return request


def test_kserve_health_and_metadata(kserve):
    assert kserve.ServerLive(v2.ServerLiveRequest()).live
    assert kserve.ServerReady(v2.ServerReadyRequest()).ready
    assert kserve.ModelReady(v2.ModelReadyRequest(name="digits")).ready
    assert kserve.ModelReady(v2.ModelReadyRequest(name="digits", version="2")).ready
    assert not kserve.ModelReady(v2.ModelReadyRequest(name="digits", version="3")).ready
    assert not kserve.ModelReady(v2.ModelReadyRequest(name="nope")).ready
    assert kserve.ServerMetadata(v2.ServerMetadataRequest()).name == "tfmesh"
    metadata = kserve.ModelMetadata(v2.ModelMetadataRequest(name="digits"))
    assert list(metadata.versions) == ["1", "2"]
    assert metadata.platform == "tfmesh_tensorflow"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("x", "FP32", [-1, 64])
    ]
    assert [t.name for t in metadata.outputs] == ["output_0"]


def test_kserve_infer_typed_and_raw_agree(kserve):
    rows = digits_rows(2)
    typed = kserve.ModelInfer(v2_typed(rows), timeout=10)
    assert (typed.model_name, typed.model_version, typed.id) == ("digits", "1", "req-1")
    (output,) = typed.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("output_0", "FP32", [2, 10])
    typed_values = np.array(output.contents.fp32_contents, np.float32).reshape(2, 10)
    raw = kserve.ModelInfer(v2_raw(rows), timeout=10)
    assert not raw.outputs[0].HasField("contents")
    raw_values = np.frombuffer(raw.raw_output_contents[0], "<f4").reshape(2, 10)
    np.testing.assert_allclose(typed_values, raw_values)
    pinned = kserve.ModelInfer(v2_raw(rows, model_version="2"), timeout=10)
    assert pinned.model_version == "2"
    labelled = kserve.ModelInfer(v2_raw(rows, model_version="canary"), timeout=10)
    assert labelled.model_version == "2"


def spoil_datatype(request):
    request.inputs[0].datatype = "FP64"
    request.raw_input_contents[0] = digits_rows(1).astype("<f8").tobytes()


def spoil_shape(shape):
    def spoil(request):
        del request.inputs[0].shape[:]
        request.inputs[0].shape.extend(shape)
        count = int(np.prod(shape))
        request.raw_input_contents[0] = np.zeros(count, "<f4").tobytes()

    return spoil


KSERVE_BAD_INPUTS = {
    "wrong dtype": (spoil_datatype, "inputs[0]"),
    "unknown datatype": (lambda r: setattr(r.inputs[0], "datatype", "FP128"), "inputs[0].datatype"),
    "wrong rank": (spoil_shape([1, 8, 8]), "inputs[0]"),
    "wrong dims": (spoil_shape([1, 63]), "inputs[0]"),
    "empty tensor": (spoil_shape([0, 64]), "inputs[0]"),
    "unknown input name": (lambda r: setattr(r.inputs[0], "name", "image"), "inputs[0]"),
    "raw byte length": (
        lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 100),
        "raw_input_contents[0]",
    ),
    "raw count": (lambda r: r.raw_input_contents.append(b""), "raw_input_contents"),
}


@pytest.mark.parametrize("case", sorted(KSERVE_BAD_INPUTS))
def test_kserve_bad_input_is_invalid_argument(kserve, case):
    spoil, field = KSERVE_BAD_INPUTS[case]
    request = v2_raw(digits_rows(1))
    spoil(request)
    with pytest.raises(grpc.RpcError) as error:
        kserve.ModelInfer(request, timeout=10)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error.value)
    assert kserve.ModelInfer(v2_raw(digits_rows(1)), timeout=10).outputs


def test_kserve_typed_count_mismatch_and_unknown_model(kserve):
    request = v2_typed(digits_rows(1))
    del request.inputs[0].contents.fp32_contents[-1]
    with pytest.raises(grpc.RpcError) as error:
        kserve.ModelInfer(request, timeout=10)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[0].contents.fp32_contents" in field_violations(error.value)
    with pytest.raises(grpc.RpcError) as error:
        kserve.ModelInfer(v2_raw(digits_rows(1), model="nope"), timeout=10)
    assert error.value.code() is grpc.StatusCode.NOT_FOUND


# --- Triton's own clients ------------------------------------------------------------------


@pytest.fixture(scope="module")
def triton_report(service, tmp_path_factory) -> dict:
    """What `triton_clients.py` saw, run with tritonclient's own interpreter."""
    python = triton_tools.python()
    assert python is not None, "tritonclient is not installed: `make triton` installs it"
    rows_path = tmp_path_factory.mktemp("triton") / "rows.npy"
    np.save(rows_path, digits_rows(5))
    script = Path(__file__).with_name("triton_clients.py")
    finished = subprocess.run(
        [
            str(python),
            str(script),
            service.address,
            service.http_url.removeprefix("http://"),
            "digits",
            str(rows_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


def test_tritonclient_reads_health_metadata_and_config(triton_report):
    assert triton_report["live"] and triton_report["ready"] and triton_report["model_ready"]
    assert triton_report["server"]["name"] == "tfmesh"
    assert "streaming" in triton_report["server"]["extensions"]
    assert triton_report["metadata"]["versions"] == ["1", "2"]
    config = triton_report["config"]
    assert config["max_batch_size"] == 8
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": ["64"]}]
    assert config["dynamic_batching"]["preferred_batch_size"] == [1, 2, 4, 8]


def test_tritonclient_infer_answers_what_kserve_answers(triton_report, kserve):
    unary = triton_report["unary"]
    assert (unary["id"], unary["version"]) == ("unary-1", "1")
    expected = kserve.ModelInfer(v2_raw(digits_rows(5)), timeout=10)
    np.testing.assert_allclose(
        np.array(unary["output"], np.float32),
        np.frombuffer(expected.raw_output_contents[0], "<f4").reshape(5, 10),
        rtol=1e-5,
        atol=1e-6,
    )


def test_tritonclient_stream_api_gets_every_answer_and_the_error(triton_report):
    stream = triton_report["stream"]
    assert sorted(stream["outputs"]) == [f"row-{i}" for i in range(5)]
    expected = np.array(triton_report["unary"]["output"], np.float32)
    for index in range(5):
        np.testing.assert_allclose(stream["outputs"][f"row-{index}"], expected[index], rtol=1e-5)
    (error,) = stream["errors"]
    assert error.startswith("INVALID_ARGUMENT: inputs[0]")


def test_tritonclient_errors_and_statistics(triton_report):
    assert triton_report["unknown_model"]["status"] == "StatusCode.NOT_FOUND"
    by_version = {s["version"]: s for s in triton_report["statistics"]}
    assert set(by_version) == {"1", "2"}
    production = by_version["1"]
    assert int(production["inference_count"]) >= 10
    assert int(production["inference_stats"]["success"]["count"]) >= 6


def test_perf_analyzer_drives_the_server_in_its_default_mode(address):
    """Triton's C++ load generator, unchanged: it reads the model's metadata and config,
    sends one-row requests from 4 clients, and reads the server's statistics."""
    # Any variation between windows will do: this is about working, not about figures.
    row = triton_tools.perf_analyzer(
        "digits", address, 4, 500, "--stability-percentage", "1000", timeout_s=120
    )
    assert row["Concurrency"] == 4
    assert row["Inferences/Second"] > 0
    assert row["p99 latency"] >= row["p50 latency"] > 0
    assert row["Server Compute Infer"] > 0


# --- reflection ----------------------------------------------------------------------------

GRPCURL = Path(sys.executable).with_name("grpcurl")


def grpcurl(address: str, *verb: str, flags: tuple[str, ...] = ()) -> str:
    finished = subprocess.run(
        [str(GRPCURL), "-plaintext", *flags, address, *verb],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout


def test_grpcurl_describes_every_service_and_calls_tf_serving_predict(address):
    """grpcurl learns the services from reflection alone (no .proto files), as its users
    do; TF Serving's services used to answer `not found` there."""
    services = grpcurl(address, "list").split()
    assert {
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        "inference.GRPCInferenceService",
        "tfmesh.inference.v1.InferenceService",
    } <= set(services)
    described = grpcurl(address, "describe", "tensorflow.serving.PredictionService")
    assert "rpc Predict ( .tensorflow.serving.PredictRequest )" in described
    described = grpcurl(address, "describe", "inference.GRPCInferenceService")
    assert "rpc ModelStreamInfer ( stream .inference.ModelInferRequest )" in described
    request = {
        "model_spec": {"name": "digits", "version_label": "canary"},
        "inputs": {
            "x": {
                "dtype": "DT_FLOAT",
                "tensor_shape": {"dim": [{"size": 2}, {"size": 64}]},
                "float_val": digits_rows(2).reshape(-1).tolist(),
            }
        },
    }
    answer = json.loads(
        grpcurl(
            address,
            "tensorflow.serving.PredictionService/Predict",
            flags=("-d", json.dumps(request)),
        )
    )
    assert answer["model_spec"]["version"] == "2", answer
    output = answer["outputs"]["output_0"]
    assert [int(d["size"]) for d in output["tensor_shape"]["dim"]] == [2, 10]
    assert len(np.frombuffer(base64.b64decode(output["tensor_content"]), "<f4")) == 20


def test_tritonclient_http_with_json_and_binary_tensors(triton_report):
    """Triton's HTTP client unchanged, against the front ends' own REST port."""
    http = triton_report["http"]
    assert http["live"] and http["ready"]
    assert http["metadata"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert http["config"]["max_batch_size"] == 8
    expected = np.array(triton_report["unary"]["output"], np.float32)
    for binary in (False, True):
        answer = http[f"infer_binary_{binary}"]
        assert answer["id"] == f"b{binary}"
        np.testing.assert_allclose(np.array(answer["output"], np.float32), expected, rtol=1e-6)
    assert http["unknown_model"]["status"] == "404"
    assert http["statistics"][0]["inference_count"] >= 10


def test_tf_serving_rest_examples_from_its_documentation_with_curl(service):
    """TF Serving's documented REST calls, as curl sends them (form-encoded content type)."""

    def curl(*arguments: str) -> tuple[int, dict]:
        finished = subprocess.run(
            ["curl", "-s", "-w", "\\n%{http_code}", *arguments],
            capture_output=True,
            text=True,
            timeout=30,
        )
        body, _, status = finished.stdout.rpartition("\n")
        return int(status), json.loads(body)

    base = f"{service.http_url}/v1/models/digits"
    status, answer = curl(base)
    assert status == 200 and answer["model_version_status"][0]["state"] == "AVAILABLE"
    status, answer = curl(f"{base}/metadata")
    assert status == 200 and "signature_def" in answer["metadata"]
    rows = json.dumps({"instances": digits_rows(2).tolist()})
    status, answer = curl("-d", rows, "-X", "POST", f"{base}:predict")
    assert status == 200 and np.array(answer["predictions"]).shape == (2, 10)
    status, answer = curl("-d", rows, "-X", "POST", f"{base}/labels/canary:predict")
    assert status == 200
    status, answer = curl("-d", '{"instances": [[1, 2, 3]]}', "-X", "POST", f"{base}:predict")
    assert status == 400 and "error" in answer
