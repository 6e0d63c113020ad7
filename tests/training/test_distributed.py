"""Multi-worker training: two worker processes on loopback, `TF_CONFIG` telling each its
index, `MultiWorkerMirroredStrategy` all-reducing; the chief exports a working model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import tensorflow as tf

from services.training.datasource import save_npz
from services.training.spec import Hyperparameters, JobSpec, MlpTemplate, spec_to_dict
from shared.ports import free_port
from tests.support.processes import REPO
from tests.training.conftest import DIGITS


def test_two_workers_train_and_the_chief_exports(digits, tmp_path):
    save_npz(digits, tmp_path / "digits.npz")
    spec = JobSpec(DIGITS, MlpTemplate((32,)), Hyperparameters(epochs=6, batch_size=64))
    (tmp_path / "spec.json").write_text(json.dumps(spec_to_dict(spec)))
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        with (tmp_path / f"worker-{index}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "services.training.distributed",
                        "--spec",
                        str(tmp_path / "spec.json"),
                        "--data-file",
                        str(tmp_path / "digits.npz"),
                        "--output",
                        str(tmp_path / f"out-{index}"),
                    ],
                    cwd=REPO,
                    env={
                        **os.environ,
                        "TF_CONFIG": json.dumps(config),
                        "TF_CPP_MIN_LOG_LEVEL": "2",
                    },
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
    try:
        codes = [process.wait(timeout=180) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert codes == [0, 0], (tmp_path / "worker-0.log").read_text()[-3000:]
    assert not (tmp_path / "out-1").exists(), "only the chief exports"

    chief = tmp_path / "out-0"
    metrics = json.loads((chief / "metrics.json").read_text())
    with tarfile.open(chief / "saved_model.tar") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    serve = tf.saved_model.load(str(tmp_path / "unpacked")).signatures["serving_default"]
    probabilities = serve(x=tf.constant(digits.x_test))["output_0"].numpy()
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == digits.y_test))
    # The same weights served by TensorFlow instead of called eagerly: at most a near-tie
    # may flip.
    assert abs(accuracy - metrics["accuracy"]) <= 1 / len(digits.y_test)
    assert accuracy > 0.8, "the two workers trained one model together"
