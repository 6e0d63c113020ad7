"""Hyperparameter search with and without pruning, in one run.

The same search (the digits MLP, learning rate searched from 1e-5 to 3e-2 on a log scale,
`--trials` trials of `--trial-epochs` epochs at `--batch-size`, TPE with one seed) runs through the
training service's trainer twice per round, without a pruner and with Optuna's median
pruner (each trial reports its validation accuracy every epoch; the pruner stops those
below the median of earlier trials at that epoch). TensorFlow uses one thread, as one
worker of a fleet would. It reports the search's seconds, the epochs trained, the best
trial's validation accuracy, and pruning's speed-up and accuracy difference; the best
round of each is kept. Results go to bench/results/search.json.

    .venv/bin/python -m bench.search_bench [--trials 8] [--trial-epochs 6] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from services.training.datasource import digits_data  # noqa: E402
from services.training.spec import (  # noqa: E402
    Hyperparameters,
    JobSpec,
    MlpTemplate,
    SearchParameter,
    SearchSpace,
)
from services.training.trainer import Trainer, TrialRecord  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search.json"


class Counter:
    """A reporter that counts epochs and keeps the trials."""

    def __init__(self) -> None:
        self.epochs = 0
        self.trials: list[TrialRecord] = []

    def phase_started(self, phase: str) -> None:
        pass

    def epoch_ended(self, trial: int, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        if trial:
            self.epochs += 1

    def trial_ended(self, trial: TrialRecord) -> None:
        self.trials.append(trial)

    def resumed(self, epoch: int) -> None:
        pass

    def checkpoint_saved(self, checkpoint: object) -> None:
        pass


def search(pruner: str, trials: int, trial_epochs: int, batch_size: int, workdir: Path) -> dict:
    spec = JobSpec(
        dataset_version="digits@bench",
        model=MlpTemplate(hidden_units=(64,)),
        hyperparameters=Hyperparameters(epochs=1, batch_size=batch_size),
        search=SearchSpace(
            (SearchParameter("learning_rate", "float", 1e-5, 3e-2, log=True),),
            max_trials=trials,
            epochs_per_trial=trial_epochs,
            pruner=pruner,  # type: ignore[arg-type]
        ),
    )
    reporter = Counter()
    trainer = Trainer(spec, digits_data(), workdir, reporter, lambda: None)
    started = time.perf_counter()
    best = trainer.search([])
    seconds = time.perf_counter() - started
    complete = [t for t in reporter.trials if not t.pruned]
    return {
        "seconds": round(seconds, 2),
        "epochs_trained": reporter.epochs,
        "pruned_trials": len(reporter.trials) - len(complete),
        "best_val_accuracy": round(max(t.objective for t in complete), 4),
        "best_learning_rate": best.learning_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--trial-epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    # Small batches make an epoch long against what each trial costs once (building the
    # model, tracing its functions), as a larger dataset would.
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rounds: dict[str, list[dict]] = {"none": [], "median": []}
    with tempfile.TemporaryDirectory(prefix="search-bench-") as scratch:
        search("none", 1, 1, args.batch_size, Path(scratch) / "warm-up")
        for round_ in range(args.rounds):
            for pruner in rounds:
                workdir = Path(scratch) / f"{pruner}-{round_}"
                result = search(pruner, args.trials, args.trial_epochs, args.batch_size, workdir)
                rounds[pruner].append(result)
                print(pruner, round_, result)
    best = {pruner: min(results, key=lambda r: r["seconds"]) for pruner, results in rounds.items()}
    results = {
        "benchmark": "hyperparameter search with and without median pruning",
        "trials": args.trials,
        "epochs_per_trial": args.trial_epochs,
        "batch_size": args.batch_size,
        "tensorflow_threads": 1,
        "best": best,
        "pruning_speedup": round(best["none"]["seconds"] / best["median"]["seconds"], 2),
        "best_accuracy_difference": round(
            best["median"]["best_val_accuracy"] - best["none"]["best_val_accuracy"], 4
        ),
        "rounds": rounds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
