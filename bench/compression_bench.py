"""Compressed models against their float parents: size, accuracy, latency, served load.

Two models trained here on scikit-learn's digits: the MLP (64 features) and a small CNN
on the same digits as 32x32x3 images (each pixel a 4x4 block, three equal channels). Each
is exported as a float SavedModel (the parent) and quantized by
services.training.quantization (dynamic range, float16, int8 calibrated on 200 training
rows). For each, in one run:

- size: the parent's `variables/` (beside the model's parameter count: the SavedModel
  keeps more than the float32 weights) against each `.tflite` file;
- test accuracy (the 360 test rows) through the runtime that serves it (`tensorflow` for
  the parent, `litert` for the rest);
- in-process latency: the median of calls at batch 1 and at batch 64 (at least 1 s each);
- served: the parent (`tensorflow`) and the int8 version (`litert`) in one inference
  server process with dynamic batching (max 64), each under 1 closed-loop gRPC client
  (p50) and 64 (throughput), after a warm-up, windows of `--seconds`.

Results go to bench/results/compression.json.

    .venv/bin/python -m bench.compression_bench [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.inference_bench import BATCHING_PARAMETERS, python_load, start_server, time_calls

RESULTS = Path(__file__).resolve().parent / "results" / "compression.json"
METHODS = ("dynamic", "float16", "int8")
EPOCHS = {"mlp": 30, "cnn": 12}


def digits_sets() -> dict[str, tuple[np.ndarray, ...]]:
    """(x_train, y_train, x_test, y_test) of each model's input shape, raw pixel values."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target
    images = np.kron(x.reshape(-1, 8, 8, 1), np.ones((1, 4, 4, 3), np.float32))
    sets: dict[str, tuple[np.ndarray, ...]] = {}
    for kind, features in (("mlp", x), ("cnn", images)):
        split = train_test_split(features, y, test_size=360, random_state=0, stratify=y)
        sets[kind] = (split[0], split[2], split[1], split[3])
    return sets


def build(kind: str, shape: tuple[int, ...]) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape, name="x")
    scaled = keras.layers.Rescaling(1 / 16)(inputs)
    if kind == "mlp":
        hidden = keras.layers.Dense(64, activation="relu")(
            keras.layers.Dense(128, activation="relu")(scaled)
        )
    else:
        hidden = scaled
        for filters in (16, 32):
            hidden = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(hidden)
            hidden = keras.layers.MaxPooling2D()(hidden)
        hidden = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def median_ms(runtime: Any, kind: str, batch: int) -> float:
    return float(np.median(time_calls(runtime, kind, batch, 1.0, 20)) * 1e3)


def variables_bytes(saved_model: Path) -> int:
    return sum(p.stat().st_size for p in (saved_model / "variables").rglob("*") if p.is_file())


def compress(kind: str, data: tuple[np.ndarray, ...], work: Path) -> dict[str, Any]:
    """Train, export and quantize `kind`; each form's size, accuracy and latencies."""
    from services.inference.runtimes import load_runtime
    from services.training.export import export_saved_model
    from services.training.quantization import quantize

    x_train, y_train, x_test, y_test = data
    model = build(kind, x_train.shape[1:])
    model.fit(x_train, y_train, epochs=EPOCHS[kind], batch_size=32, verbose=0)
    saved_model = work / f"{kind}-float"
    export_saved_model(model, saved_model)
    paths: dict[str, Path] = {"float": saved_model}
    for method in METHODS:
        paths[method] = work / f"{kind}-{method}.tflite"
        paths[method].write_bytes(quantize(saved_model, method, x_train))
    parent_bytes = variables_bytes(saved_model)
    forms: dict[str, Any] = {}
    for form, path in paths.items():
        runtime = load_runtime("tensorflow" if form == "float" else "litert", path, {})
        ((_, output),) = runtime.predict({"x": x_test}).items()
        size = parent_bytes if form == "float" else path.stat().st_size
        forms[form] = {
            "bytes": size,
            "smaller_than_parent": round(parent_bytes / size, 2),
            "test_accuracy": round(float(np.mean(output.argmax(axis=1) == y_test)), 4),
            "latency_ms_batch_1": round(median_ms(runtime, kind, 1), 4),
            "latency_ms_batch_64": round(median_ms(runtime, kind, 64), 4),
        }
        runtime.unload()
    return {
        "parameters": model.count_params(),
        "forms": forms,
        "paths": {form: str(path) for form, path in paths.items()},
    }


def served(found: dict[str, dict[str, Any]], work: Path, seconds: float) -> dict[str, Any]:
    """The parents and int8 versions in one server, under 1 and 64 closed-loop clients."""
    models = []
    for kind, result in found.items():
        for form, runtime in (("float", "tensorflow"), ("int8", "litert")):
            models.append(
                {
                    "name": f"{kind}-{form}",
                    "runtime": runtime,
                    "versions": [{"version": 1, "path": result["paths"][form]}],
                    "batching": BATCHING_PARAMETERS,
                }
            )
    server = start_server(work, {"models": models}, "tensorflow", frontends=0)
    rows: dict[str, Any] = {}
    try:
        for kind in found:
            for form in ("float", "int8"):
                name = f"{kind}-{form}"
                one = python_load(server.address, name, kind, 1, 1, 2.0, seconds)
                many = python_load(server.address, name, kind, 64, 2, 2.0, seconds)
                rows[name] = {
                    "p50_ms_1_client": round(one.p50_ms, 3),
                    "throughput_1_client": round(one.throughput, 1),
                    "throughput_64_clients": round(many.throughput, 1),
                    "p50_ms_64_clients": round(many.p50_ms, 3),
                }
                print(name, rows[name], flush=True)
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="compressed models against their parents")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(tempfile.mkdtemp(prefix="tfmesh-compression-"))
    found = {kind: compress(kind, data, work) for kind, data in digits_sets().items()}
    for kind, result in found.items():
        print(kind, json.dumps(result["forms"], indent=1), flush=True)
    load = served(found, work, args.seconds)
    results = {
        "benchmark": "compressed models against their float parents",
        "machine": {"cpus": os.cpu_count()},
        "models": {
            kind: {"parameters": result["parameters"], **result["forms"]}
            for kind, result in found.items()
        },
        "served": load,
        "served_seconds": args.seconds,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
