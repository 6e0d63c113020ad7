"""The LiteRT runtime: `.tflite` conversions of the digits test model (float, and quantized
by services.training.quantization: dynamic range, float16, full-integer int8 with int8
inputs and outputs) load under the SavedModel's input and output names, shapes and dtypes
and answer like it at any batch size, batches at once included; int8 I/O is served as
float; a corrupt file or one whose only signature is another fails its load with the
reason; and the inference service started with the runtime from a static model config
answers over its own API, KServe v2 and TF Serving's REST API as the interpreter does.
A model on the `auto` runtime loads each version with the runtime of the artifact it
has: a SavedModel version and a `.tflite`-only one serve side by side, and one with
neither fails its load alone. An unknown method, or int8 without representative rows,
is refused."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from inference import grpc_predict_v2_pb2 as v2
from inference import grpc_predict_v2_pb2_grpc
from services.inference.alias_feed import AliasEvent
from services.inference.batcher import BatchingOptions
from services.inference.config import ModelSpec
from services.inference.model_manager import ModelManager, VersionState
from services.inference.runtimes import load_runtime, runtime_for, static_runtime
from shared.tensors import from_tensor, to_tensor
from tests.inference.conftest import one_model_server
from tests.inference.models import build_digits_model, digits_rows
from tests.inference.test_batcher import wait_until
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc


def convert(saved_model: Path, out: Path, method: str) -> Path:
    """`saved_model` as a `.tflite` file: `float` (no quantization), or a method of
    services.training.quantization."""
    import tensorflow as tf

    from services.training.quantization import quantize

    if method == "float":
        content = tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert()
    else:
        content = quantize(saved_model, method, digits_rows(200, seed=9))
    out.write_bytes(content)
    return out


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits test model's SavedModel runtime and its three `.tflite` conversions."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("litert")
    model = build_digits_model(seed=3)
    saved_model = root / "saved_model"
    signature = [tf.TensorSpec((None, 64), tf.float32, name="x")]
    model.export(str(saved_model), format="tf_saved_model", input_signature=signature, verbose=0)
    methods = ("float", "dynamic", "float16", "int8")
    files = {m: convert(saved_model, root / f"{m}.tflite", m) for m in methods}
    files["saved_model"] = saved_model
    return load_runtime("tensorflow", saved_model, {}), files


@pytest.mark.parametrize(
    ("method", "tolerance"), [("float", 1e-5), ("dynamic", 0.05), ("float16", 1e-2)]
)
def test_a_tflite_version_answers_like_its_saved_model(digits, method, tolerance):
    reference, files = digits
    runtime = load_runtime("litert", files[method], {"threads": 1})
    assert runtime.signature == reference.signature
    for rows in (1, 7, 3):  # new batch sizes, then a smaller one again
        batch = digits_rows(rows, seed=rows)
        expected = reference.predict({"x": batch})
        answered = runtime.predict({"x": batch})
        assert answered.keys() == expected.keys()
        for name, value in answered.items():
            assert value.dtype == expected[name].dtype and value.shape == expected[name].shape
            np.testing.assert_allclose(value, expected[name], atol=tolerance)
    runtime.unload()


def test_batches_at_once_each_get_an_interpreter_and_the_same_answers(digits):
    _, files = digits
    runtime = load_runtime("litert", files["dynamic"], {"threads": 1})
    batches = [digits_rows(size, seed=size) for size in (1, 3, 8, 2) * 4]
    alone = [runtime.predict({"x": batch})["output_0"] for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda b: runtime.predict({"x": b})["output_0"], batches))
    for one, other in zip(alone, together, strict=True):
        np.testing.assert_array_equal(one, other)


def test_int8_inputs_and_outputs_are_served_as_float(digits):
    reference, files = digits
    runtime = load_runtime("litert", files["int8"], {})
    assert runtime.signature == reference.signature, "float in, float out, as the SavedModel"
    batch = digits_rows(300, seed=11)
    ((name, answered),) = runtime.predict({"x": batch}).items()
    expected = reference.predict({"x": batch})[name]
    assert answered.dtype == np.float32
    assert np.abs(answered - expected).max() < 0.05
    assert np.mean(answered.argmax(axis=1) == expected.argmax(axis=1)) >= 0.9


def test_a_corrupt_file_or_one_without_a_serving_signature_fails_its_load(digits, tmp_path):
    _, files = digits
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(files["float"].read_bytes()[:200])
    with pytest.raises(ValueError):
        load_runtime("litert", corrupt, {})
    import tensorflow as tf

    module = tf.Module()
    module.double = tf.function(
        lambda x: {"y": 2 * x}, input_signature=[tf.TensorSpec([None], tf.float32)]
    )
    other = tmp_path / "other"
    tf.saved_model.save(module, str(other), signatures={"double": module.double})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(other), signature_keys=["double"])
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(converter.convert())
    with pytest.raises(ValueError, match="serving_default"):
        load_runtime("litert", bare, {})


@pytest.fixture(scope="module")
def litert_server(tmp_path_factory, digits):
    _, files = digits
    home = tmp_path_factory.mktemp("litert-server")
    process = one_model_server(home, "lite", "litert", files["dynamic"])
    process.start(timeout_s=120)
    yield process
    assert process.terminate() == 0


def test_the_service_serves_a_tflite_version(litert_server, digits):
    _, files = digits
    rows = digits_rows(5, seed=21)
    expected = load_runtime("litert", files["dynamic"], {}).predict({"x": rows})["output_0"]
    with grpc.insecure_channel(litert_server.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        (version,) = stub.GetModelStatus(pb.GetModelStatusRequest(model="lite")).status.versions
        assert (version.runtime, version.device) == ("litert", "cpu")
        assert version.state == pb.VersionStatus.STATE_AVAILABLE
        answer = stub.Predict(pb.PredictRequest(model="lite", inputs={"x": to_tensor(rows)}))
        np.testing.assert_allclose(from_tensor(answer.outputs["output_0"]), expected, atol=1e-6)
        kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        metadata = kserve.ModelMetadata(v2.ModelMetadataRequest(name="lite"))
        assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
            ("x", "FP32", [-1, 64])
        ]
        request = v2.ModelInferRequest(model_name="lite")
        request.inputs.add(name="x", datatype="FP32", shape=rows.shape)
        request.raw_input_contents.append(rows.tobytes())
        raw = kserve.ModelInfer(request).raw_output_contents[0]
        np.testing.assert_allclose(np.frombuffer(raw, "<f4").reshape(5, 10), expected, atol=1e-6)
    # TF Serving's REST API, as its documented curl calls use it.
    http = f"http://127.0.0.1:{litert_server.env['TFMESH_INFERENCE_HTTP_PORT']}"
    answer = httpx.post(f"{http}/v1/models/lite:predict", json={"instances": rows.tolist()})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(np.array(answer.json()["predictions"]), expected, atol=1e-6)
    metadata = httpx.get(f"{http}/v1/models/lite/metadata").json()
    served = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert list(served["inputs"]) == ["x"] and list(served["outputs"]) == ["output_0"]


def test_an_unknown_method_or_int8_without_rows_is_refused(digits):
    from services.training.quantization import quantize

    _, files = digits
    with pytest.raises(ValueError, match="unknown quantization method"):
        quantize(files["saved_model"], "int4")
    with pytest.raises(ValueError, match="representative rows"):
        quantize(files["saved_model"], "int8")


def test_auto_picks_each_versions_runtime_by_its_artifacts(digits):
    _, files = digits
    assert runtime_for(["saved_model.tar", "model.keras", "model.tflite"]) == "tensorflow"
    assert runtime_for(["model.tflite", "model.keras", "evaluation.json"]) == "litert"
    assert runtime_for(["model.keras"]) == "keras_jax"
    with pytest.raises(ValueError, match="no artifact a runtime loads"):
        # Only the names training registers: any other is not fetched by auto.
        runtime_for(["evaluation.json", "model_int8.tflite", "other.tar"])
    assert static_runtime("auto", files["saved_model"]) == "tensorflow"
    assert static_runtime("auto", files["int8"]) == "litert"
    assert static_runtime("auto", Path("v3.keras")) == "keras_jax"
    assert static_runtime("litert", Path("v3.keras")) == "litert", "a named runtime stays"
    with pytest.raises(ValueError, match="not a SavedModel folder"):
        static_runtime("auto", Path("weights.h5"))


class ArtifactSource:
    """A registry stand-in whose versions have the artifacts `listed` (files in `paths`);
    the real registry drives the process tests."""

    def __init__(self, listed: dict[int, list[str]], paths: dict[str, Path]) -> None:
        self.listed = listed
        self.paths = paths
        self.events: asyncio.Queue[AliasEvent] = asyncio.Queue()

    async def artifacts(self, model: str, version: int) -> list[str]:
        return self.listed[version]

    async def fetch(self, model: str, version: int, artifact: str) -> Path:
        return self.paths[artifact]

    async def follow(self, on_event, on_connected) -> None:
        on_connected()
        while True:
            on_event(await self.events.get())


async def test_an_auto_model_serves_a_saved_model_and_a_tflite_version_side_by_side(digits):
    _, files = digits
    source = ArtifactSource(
        {1: ["saved_model.tar", "model.tflite"], 2: ["model.tflite"], 3: ["evaluation.json"]},
        {"saved_model.tar": files["saved_model"], "model.tflite": files["int8"]},
    )
    spec = ModelSpec(
        "m", "auto", BatchingOptions(max_batch_size=4), aliases=("production", "canary")
    )
    manager = ModelManager([spec], source=source, settle_s=0.01)  # type: ignore[arg-type]
    await manager.start()
    try:
        served = manager.model("m")
        await source.events.put(AliasEvent("m", "production", 1, 0))
        await source.events.put(AliasEvent("m", "canary", 2, 20))
        await wait_until(lambda: len(served.table.by_label) == 2, timeout_s=60)
        runtimes = {v: served.records[v].runtime for v in (1, 2)}
        assert runtimes == {1: "tensorflow", 2: "litert"}
        rows = digits_rows(4, seed=2)
        float_answer = served.table.by_label["production"].runtime.predict({"x": rows})
        int8_answer = served.table.by_label["canary"].runtime.predict({"x": rows})
        assert np.abs(float_answer["output_0"] - int8_answer["output_0"]).max() < 0.05
        await source.events.put(AliasEvent("m", "canary", 3, 20))
        await wait_until(
            lambda: 3 in served.records and served.records[3].state is VersionState.FAILED
        )
        assert "no artifact a runtime loads" in served.records[3].reason
        assert served.table.by_label["canary"].version == 2, "the working canary stays"
    finally:
        await manager.stop()
