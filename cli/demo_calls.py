"""The demo's calls to a running stack: read a split back, wait until versions serve,
predict the test split through each API (tfmesh, TF Serving, KServe v2; gRPC and REST)
and count which version answers; also used by the live-stack tests and benchmarks."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import grpc
import httpx
import numpy as np

from inference import grpc_predict_v2_pb2 as v2
from inference import grpc_predict_v2_pb2_grpc as v2_grpc
from shared.aliases import PRODUCTION
from shared.tensors import from_tensor, to_tensor
from shared.tls import TlsFiles
from tfmesh.data.v1 import data_pb2 as dpb
from tfmesh.inference.v1 import inference_pb2 as ipb

MODEL = "digits"


async def read_split(
    data, version: str, split: dpb.Split.ValueType
) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    features, labels = [], []
    async for batch in data.ReadBatches(dpb.ReadBatchesRequest(version=version, split=split)):
        features.append(from_tensor(batch.features))
        labels.append(from_tensor(batch.labels))
    return np.concatenate(features), np.concatenate(labels)


async def wait_for_labels(inference, labels: dict[str, int], timeout_s: float = 120):  # type: ignore[no-untyped-def]
    """Wait until the inference service serves each label at the given version."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = None
        try:
            reply = await inference.GetModelStatus(ipb.GetModelStatusRequest(model=MODEL))
            status = reply.status
            served = {
                label: v.version
                for v in status.versions
                if v.state == ipb.VersionStatus.STATE_AVAILABLE
                for label in v.labels
            }
            if all(served.get(label) == version for label, version in labels.items()):
                return status
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        if time.monotonic() > deadline:
            raise SystemExit(f"inference did not serve {labels} in {timeout_s} s: {status}")
        await asyncio.sleep(0.2)


async def predict_tfmesh(inference, x: np.ndarray, y: np.ndarray, input_name: str) -> float:  # type: ignore[no-untyped-def]
    """Concurrent one-row requests, so the dynamic batcher has something to batch."""

    async def one(row: np.ndarray) -> int:
        request = ipb.PredictRequest(model=MODEL, inputs={input_name: to_tensor(row[None])})
        reply = await inference.Predict(request)
        scores = from_tensor(next(iter(reply.outputs.values())))
        return int(scores.argmax(axis=-1)[0])

    predicted = await asyncio.gather(*(one(row) for row in x))
    return float(np.mean(np.array(predicted) == y))


def predict_tf_serving(
    address: str,
    x: np.ndarray,
    y: np.ndarray,
    input_name: str,
    tls: TlsFiles,
    authorization: Callable[[], str] | None,
) -> float:
    """TF Serving's own client stubs, used exactly as an existing TF Serving client would."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    credentials = tls.channel_credentials()
    with (
        grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    ) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.model_spec.version_label = PRODUCTION
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto(x.astype(np.float32)))
        metadata = (("authorization", authorization()),) if authorization else ()
        reply = stub.Predict(request, timeout=30, metadata=metadata)
    scores = tf.make_ndarray(next(iter(reply.outputs.values())))
    return float(np.mean(scores.argmax(axis=-1) == y))


async def predict_kserve(channel, x: np.ndarray, y: np.ndarray, input_name: str) -> float:  # type: ignore[no-untyped-def]
    """The Open Inference Protocol with raw_input_contents, as a Triton client sends it."""
    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    request = v2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=input_name, datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    reply = await stub.ModelInfer(request)
    output = reply.outputs[0]
    scores = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(output.shape)
    return float(np.mean(scores.argmax(axis=-1) == y))


async def predict_rest(
    gateway: str,
    x: np.ndarray,
    y: np.ndarray,
    input_name: str,
    tls: TlsFiles,
    authorization: Callable[[], str] | None,
) -> dict[str, float]:
    """The same predictions over the REST gateway: its own API, TF Serving's, KServe v2's."""
    data = x.astype(np.float32).tolist()
    base = f"{tls.scheme()}://{gateway}"
    verify = tls.client_context() or True
    headers = {"authorization": authorization()} if authorization else {}
    async with httpx.AsyncClient(
        base_url=base, timeout=60, verify=verify, headers=headers
    ) as client:
        own = await client.post(
            f"/api/v1/models/{MODEL}/predict",
            json={"inputs": {input_name: {"dtype": "float32", "data": data}}},
        )
        tf_serving = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": data})
        kserve = await client.post(
            f"/v2/models/{MODEL}/infer",
            json={
                "inputs": [
                    {
                        "name": input_name,
                        "shape": list(x.shape),
                        "datatype": "FP32",
                        "data": x.astype(np.float32).ravel().tolist(),
                    }
                ]
            },
        )
    kserve_output = kserve.raise_for_status().json()["outputs"][0]
    scores = {
        "tfmesh REST": next(iter(own.raise_for_status().json()["outputs"].values()))["data"],
        "TF Serving REST": tf_serving.raise_for_status().json()["predictions"],
        "KServe v2 REST": np.reshape(kserve_output["data"], kserve_output["shape"]),
    }
    return {api: float(np.mean(np.argmax(s, axis=-1) == y)) for api, s in scores.items()}


async def observe_split(inference, x: np.ndarray, input_name: str, count: int) -> Counter[int]:  # type: ignore[no-untyped-def]
    rows = x[np.arange(count) % len(x)]

    async def one(row: np.ndarray) -> int:
        request = ipb.PredictRequest(model=MODEL, inputs={input_name: to_tensor(row[None])})
        return (await inference.Predict(request)).version

    return Counter(await asyncio.gather(*(one(row) for row in rows)))
