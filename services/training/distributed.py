"""One worker of a multi-worker training: `python -m services.training.distributed`.

Run as many of these as `TF_CONFIG` lists workers (on Kubernetes, one Job pod each; in
the tests, processes on loopback). `tf.distribute.MultiWorkerMirroredStrategy` reads the
cluster and this worker's index from `TF_CONFIG`, mirrors the model on every worker and
all-reduces gradients; each worker reads its shard of the data through `tf.data`. The
chief (worker 0) appends each epoch's mean loss to `--progress` (JSON lines) when given,
evaluates on the validation and test splits and exports the artifacts, with the
normalization baked in, to `--output` (`metrics.json` last: its presence says the export
is whole); the others only train. The job spec is the JSON the job store keeps
(`services.training.spec.spec_to_dict`); the data is a version from the data service
(`--data-addr`; its Parquet files read where they lie unless `--no-direct-reads`) or an
.npz file (`--data-file`, see `datasource.save_npz`). A training
job with `workers: N` runs N of these (services.training.multiworker)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from services.training.datasource import TrainingData, load_npz
from services.training.spec import JobSpec, base_params, spec_from_dict
from shared.tls import tls_from_environment


def _load_data(args: argparse.Namespace, spec: JobSpec) -> TrainingData:
    if args.data_file is not None:
        return load_npz(args.data_file)
    from services.training.data_service_source import DataServiceSource
    from shared.channels import open_channel
    from shared.retries import RetryingChannel

    async def fetch() -> TrainingData:
        channel = open_channel(args.data_addr, tls=tls_from_environment())
        async with RetryingChannel(channel) as retrying:
            source = DataServiceSource(retrying, direct_reads=args.direct_reads)
            return await source.load(spec.dataset_version)

    return asyncio.run(fetch())


def _scores(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of class probabilities."""
    picked = probabilities[np.arange(len(labels)), labels.astype(np.int64)]
    loss = float(np.mean(-np.log(np.clip(picked, 1e-7, 1.0))))
    return float(np.mean(np.argmax(probabilities, axis=1) == labels)), loss


def train_worker(
    spec: JobSpec, data: TrainingData, output: Path, progress: Path | None = None
) -> dict[str, float]:
    """Train `spec` on this worker; the chief exports and returns its test metrics.

    A custom loop under `strategy.run` (Keras 3's `fit` cannot build a model on
    multi-worker batches of (features, labels) pairs): each replica computes the loss on
    its share of the global batch, scaled by the global batch size, and the optimizer
    applies the all-reduced gradients."""
    import keras
    import tensorflow as tf

    from services.training.models import build_model
    from services.training.trainer import make_dataset

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = strategy.cluster_resolver
    is_chief = resolver is None or resolver.task_id == 0
    params = base_params(spec)
    global_batch = params.batch_size
    keras.utils.set_random_seed(spec.seed)
    with strategy.scope():
        model = build_model(spec.model, params, data.info, data.mean, data.std)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train = make_dataset(data.x_train, data.y_train, global_batch, spec.seed)
    batches = strategy.experimental_distribute_dataset(train.with_options(options))

    def replica_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            probabilities = model(x, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(y, probabilities)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        losses = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    epochs = spec.hyperparameters.epochs
    for epoch in range(1, epochs + 1):
        losses = [float(train_step(x, y)) for x, y in batches]
        if is_chief and progress is not None:
            line = {"epoch": epoch, "epochs": epochs, "loss": float(np.mean(losses))}
            with progress.open("a") as handle:
                handle.write(json.dumps(line) + "\n")
    if not is_chief:
        return {}
    return _evaluate_and_export(model, spec, data, output)


def _evaluate_and_export(
    model: Any, spec: JobSpec, data: TrainingData, output: Path
) -> dict[str, float]:
    """The chief's last step: test and validation scores, the export, the evaluation.
    Plain calls in the cross-replica context read the mirrored variables locally, with
    no collectives, so the chief does this alone."""
    from services.training.evaluation import write_evaluation
    from services.training.export import export_model

    probabilities = np.asarray(model(data.x_test, training=False))
    accuracy, loss = _scores(probabilities, data.y_test)
    val_accuracy, val_loss = _scores(np.asarray(model(data.x_val, training=False)), data.y_val)
    export_model(model, output, spec.export_tflite)
    write_evaluation(probabilities, data.y_test, data.info.num_classes, output)
    metrics = {
        "accuracy": accuracy,
        "loss": loss,
        "val_accuracy": val_accuracy,
        "val_loss": val_loss,
        "epochs": float(spec.hyperparameters.epochs),
    }
    (output / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, required=True, help="job spec JSON file")
    parser.add_argument("--output", type=Path, required=True, help="where the chief exports")
    parser.add_argument("--progress", type=Path, help="the chief's per-epoch losses (JSON lines)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-file", type=Path, help="dataset .npz (datasource.save_npz)")
    source.add_argument("--data-addr", help="data service address host:port")
    parser.add_argument(
        "--direct-reads",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --data-addr: read the version's Parquet files where they lie, else"
        " stream them through the data service (TFMESH_TRAINING_DIRECT_READS)",
    )
    args = parser.parse_args(argv)
    if "TF_CONFIG" not in os.environ:
        parser.error("TF_CONFIG must describe the cluster and this worker's index")
    spec = spec_from_dict(json.loads(args.spec.read_text()))
    train_worker(spec, _load_data(args, spec), args.output, args.progress)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
