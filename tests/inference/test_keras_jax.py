"""The CPU half of the GPU check, so it cannot rot: `.keras` artifacts made by the bench
script, the service started with the Keras-on-JAX runtime from a static model config in a
process where TensorFlow cannot be imported (as on the GPU machine), answering over
KServe v2 and the tfmesh API with the same numbers Keras gives, and the benchmark's
keras_jax path end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest

from inference import grpc_predict_v2_pb2 as v2
from inference import grpc_predict_v2_pb2_grpc
from shared.tensors import from_tensor, to_tensor
from tests.inference.conftest import one_model_server
from tests.support.processes import REPO
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc

BENCH = REPO / "bench" / "inference_bench.py"

if importlib.util.find_spec("jax") is None:
    pytest.skip(
        "JAX is not installed in this venv (the `jax` extra in pyproject.toml pins it): the "
        "Keras-on-JAX runtime and the GPU check's CPU half are NOT tested",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory):
    """A PYTHONPATH entry whose `tensorflow` package refuses to import, standing in for the
    GPU machine, where TensorFlow is not installed."""
    shadow = tmp_path_factory.mktemp("no-tensorflow")
    (shadow / "tensorflow").mkdir()
    (shadow / "tensorflow" / "__init__.py").write_text(
        "raise ImportError('TensorFlow is hidden: this process plays the GPU machine')\n"
    )
    inherited = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(p for p in (str(shadow), str(REPO), str(REPO / "gen"), inherited) if p)


@pytest.fixture(scope="module")
def keras_artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-artifacts")
    subprocess.run(
        [sys.executable, str(BENCH), "artifacts", "--out", str(out), "--models", "mlp"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def jax_server(tmp_path_factory, keras_artifacts, no_tensorflow):
    home = tmp_path_factory.mktemp("jax-server")
    process = one_model_server(
        home,
        "mlp",
        "keras_jax",
        keras_artifacts / "mlp.keras",
        KERAS_BACKEND="jax",
        PYTHONPATH=no_tensorflow,
    )
    process.start(timeout_s=120)
    yield process
    assert process.terminate() == 0
    log = process.log_path.read_text()
    assert "TF Serving API off: TensorFlow is not importable" in log


def test_jax_server_serves_the_keras_artifact_with_keras_numbers(jax_server, keras_artifacts):
    import keras

    rows = np.random.default_rng(5).random((3, 64), dtype=np.float32)
    expected = np.asarray(keras.saving.load_model(keras_artifacts / "mlp.keras")(rows))
    with grpc.insecure_channel(jax_server.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        status = stub.GetModelStatus(pb.GetModelStatusRequest(model="mlp")).status
        (version,) = status.versions
        assert (version.runtime, version.device) == ("keras_jax", "cpu:0")
        assert version.state == pb.VersionStatus.STATE_AVAILABLE
        answer = stub.Predict(pb.PredictRequest(model="mlp", inputs={"x": to_tensor(rows)}))
        np.testing.assert_allclose(
            from_tensor(answer.outputs["output_0"]), expected, rtol=1e-4, atol=1e-6
        )
        kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = v2.ModelInferRequest(model_name="mlp")
        request.inputs.add(name="x", datatype="FP32", shape=rows.shape)
        request.raw_input_contents.append(rows.tobytes())
        raw = kserve.ModelInfer(request).raw_output_contents[0]
        np.testing.assert_allclose(
            np.frombuffer(raw, "<f4").reshape(3, 10), expected, rtol=1e-4, atol=1e-6
        )
        unknown = channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=lambda message: b"",
            response_deserializer=lambda data: data,
        )
        with pytest.raises(grpc.RpcError) as error:
            unknown(b"", timeout=5)
        assert error.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_the_gpu_checks_benchmark_path_runs_on_jax_without_tensorflow(
    tmp_path, keras_artifacts, no_tensorflow
):
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "run",
            "--runtime",
            "keras_jax",
            "--models",
            "mlp",
            "--artifacts",
            str(keras_artifacts),
            "--clients",
            "1,2",
            "--seconds",
            "0.5",
            "--warmup",
            "0.3",
            "--ceiling-seconds",
            "0.05",
            "--expect-device",
            "cpu",
            "--driver",
            "python",
            "--gpu",
            "--out",
            str(tmp_path),
        ],
        env={**os.environ, "PYTHONPATH": no_tensorflow, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "inference_keras_jax_gpu.json").read_text())
    configs = {(r["config"], r["clients"]) for r in result["rows"]}
    assert ("served, batching", 2) in configs and ("served no-op", 1) in configs
    assert result["devices"]["served"] == {"mlp": "cpu:0"}
    assert all(r["throughput"] > 0 for r in result["rows"])
