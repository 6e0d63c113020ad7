"""Triton's Python clients against a tfmesh inference server, as their users write them;
run by `test_protocols.py` with the interpreter of `.venv-triton` (tritonclient pins an
older protobuf, so this file imports nothing of the project).

    python triton_clients.py GRPC_ADDRESS HTTP_ADDRESS MODEL ROWS.npy   # prints JSON
"""

from __future__ import annotations

import json
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def http_report(address: str, model: str, rows: np.ndarray) -> dict:
    """tritonclient.http: health, metadata, config, and infer with JSON and binary tensors."""
    client = httpclient.InferenceServerClient(url=address)
    report: dict = {
        "live": client.is_server_live(),
        "ready": client.is_model_ready(model),
        "metadata": client.get_model_metadata(model),
        "config": client.get_model_config(model),
    }
    for binary in (False, True):
        infer_input = httpclient.InferInput("x", list(rows.shape), "FP32")
        infer_input.set_data_from_numpy(rows, binary_data=binary)
        output = httpclient.InferRequestedOutput("output_0", binary_data=binary)
        result = client.infer(model, [infer_input], outputs=[output], request_id=f"b{binary}")
        report[f"infer_binary_{binary}"] = {
            "id": result.get_response()["id"],
            "output": result.as_numpy("output_0").tolist(),
        }
    try:
        client.infer("no-such-model", [infer_input])
        report["unknown_model"] = None
    except InferenceServerException as error:
        report["unknown_model"] = {"status": error.status(), "message": error.message()}
    report["statistics"] = client.get_inference_statistics(model)["model_stats"]
    return report


def main() -> None:
    address, http_address, model, rows_path = sys.argv[1:5]
    rows = np.load(rows_path)
    client = grpcclient.InferenceServerClient(url=address)
    report: dict = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server": client.get_server_metadata(as_json=True),
        "metadata": client.get_model_metadata(model, as_json=True),
        "config": client.get_model_config(model, as_json=True)["config"],
    }

    infer_input = grpcclient.InferInput("x", list(rows.shape), "FP32")
    infer_input.set_data_from_numpy(rows)
    result = client.infer(model, [infer_input], request_id="unary-1")
    report["unary"] = {
        "id": result.get_response().id,
        "version": result.get_response().model_version,
        "output": result.as_numpy("output_0").tolist(),
    }

    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for index in range(len(rows)):
        one = grpcclient.InferInput("x", [1, rows.shape[1]], "FP32")
        one.set_data_from_numpy(rows[index : index + 1])
        client.async_stream_infer(model, [one], request_id=f"row-{index}")
    bad = grpcclient.InferInput("x", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
    client.async_stream_infer(model, [bad], request_id="bad")
    streamed, errors = {}, []
    for _ in range(len(rows) + 1):
        result, error = answers.get(timeout=30)
        if error is not None:
            errors.append(str(error))
        else:
            streamed[result.get_response().id] = result.as_numpy("output_0")[0].tolist()
    client.stop_stream()
    report["stream"] = {"outputs": streamed, "errors": errors}

    try:
        client.infer("no-such-model", [infer_input])
        report["unknown_model"] = None
    except InferenceServerException as error:
        report["unknown_model"] = {"status": error.status(), "message": error.message()}

    statistics = client.get_inference_statistics(model, as_json=True)
    report["statistics"] = statistics["model_stats"]
    report["http"] = http_report(http_address, model, rows)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
