"""Hyperparameter search: with and without pruning, and on one worker against two.

The same search (the digits MLP, learning rate searched from 1e-5 to 3e-2 on a log scale,
`--trials` trials of `--trial-epochs` epochs at `--batch-size`, TPE with one seed) runs:

- in this process, through the training service's trainer and a search board on SQLite,
  three times per round: without a pruner, with Optuna's median pruner (each trial
  reports its validation accuracy every epoch; the pruner stops those below the median
  of earlier trials at that epoch) and with its Hyperband pruner (successive halving over
  brackets of 1 to `--trial-epochs` epochs);
- on a fleet of real worker processes (`services.training.worker_server`) sharing one
  real PostgreSQL, with the dataset from a real data service: once with one worker and
  once with two, each after a warm-up job that every worker takes part in. The search's
  time runs from the job's start to its last trial's record (the database's clocks).

TensorFlow uses one thread everywhere, as one worker of a fleet on one core would. It
reports the search's seconds, the epochs trained, the best trial's validation accuracy,
pruning's speed-up and accuracy difference, and the second worker's speed-up; the best
round of each is kept. Results go to bench/results/search.json.

    .venv/bin/python -m bench.search_bench [--trials 8] [--trial-epochs 12] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.data_bench import free_port, start_service  # noqa: E402
from cli.postgres import PostgresServer, find_binaries  # noqa: E402
from services.training.datasource import digits_data  # noqa: E402
from services.training.jobs import EventKind, JobState  # noqa: E402
from services.training.search import SearchBoard  # noqa: E402
from services.training.spec import (  # noqa: E402
    Hyperparameters,
    JobSpec,
    MlpTemplate,
    SearchParameter,
    SearchSpace,
)
from services.training.store import JobStore  # noqa: E402
from services.training.trainer import Trainer  # noqa: E402
from shared.db import make_engine, sqlite_url  # noqa: E402
from tfmesh.data.v1 import data_pb2, data_pb2_grpc  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search.json"
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


class Silent:
    """The final training's reporter (the search reports to the board)."""

    def phase_started(self, phase: str) -> None:
        pass

    def epoch_ended(
        self,
        trial: int,
        epoch: int,
        epochs: int,
        metrics: dict[str, float],
        seconds: float | None = None,
    ) -> None:
        pass

    def resumed(self, epoch: int) -> None:
        pass

    def checkpoint_saved(self, checkpoint: object) -> None:
        pass


def search_spec(
    dataset: str, pruner: str, trials: int, trial_epochs: int, batch_size: int
) -> JobSpec:
    return JobSpec(
        dataset_version=dataset,
        model=MlpTemplate(hidden_units=(64,)),
        hyperparameters=Hyperparameters(epochs=1, batch_size=batch_size),
        search=SearchSpace(
            (SearchParameter("learning_rate", "float", 1e-5, 3e-2, log=True),),
            max_trials=trials,
            epochs_per_trial=trial_epochs,
            pruner=pruner,  # type: ignore[arg-type]
        ),
    )


def summary(store: JobStore, job_id: str) -> dict:
    """Epochs trained, trials pruned and the best objective of a job's search."""
    trials = store.get(job_id).trials
    epochs = [e for e in store.events_since(job_id, 0) if e.kind is EventKind.EPOCH]
    complete = [t for t in trials if not t["pruned"]]
    best = max(complete, key=lambda t: t["objective"])
    return {
        "epochs_trained": sum(1 for e in epochs if e.payload["trial"]),
        "pruned_trials": len(trials) - len(complete),
        "best_val_accuracy": round(best["objective"], 4),
        "best_learning_rate": best["params"]["learning_rate"],
    }


def search_here(spec: JobSpec, workdir: Path) -> dict:
    """The search phase in this process, on a board in a fresh SQLite database."""
    store = JobStore(make_engine(sqlite_url(workdir / "jobs.db")))
    store.create("bench", spec)
    store.claim_next("bench", 3600)
    trainer = Trainer(spec, digits_data(), workdir, Silent(), lambda: None)
    started = time.perf_counter()
    trainer.search(SearchBoard(store, "bench", 3600), "bench")
    seconds = time.perf_counter() - started
    result = {"seconds": round(seconds, 2), **summary(store, "bench")}
    store.engine.dispose()
    return result


def pruning_rounds(args: argparse.Namespace, scratch: Path) -> dict[str, list[dict]]:
    rounds: dict[str, list[dict]] = {"none": [], "median": [], "hyperband": []}
    search_here(search_spec("digits@bench", "none", 1, 1, args.batch_size), scratch / "warm-up")
    for round_ in range(args.rounds):
        for pruner in rounds:
            spec = search_spec(
                "digits@bench", pruner, args.trials, args.trial_epochs, args.batch_size
            )
            result = search_here(spec, scratch / f"{pruner}-{round_}")
            rounds[pruner].append(result)
            print("pruner", pruner, round_, result)
    return rounds


def run_job(store: JobStore, job_id: str, spec: JobSpec, timeout_s: float = 900) -> JobState:
    store.create(job_id, spec)
    deadline = time.monotonic() + timeout_s
    while (state := store.get(job_id).state) not in (JobState.SUCCEEDED, JobState.FAILED):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} did not end in {timeout_s} s")
        time.sleep(0.2)
    return state


def search_seconds(store: JobStore, job_id: str) -> float:
    """From the job's start to its last trial's record."""
    events = store.events_since(job_id, 0)
    started = next(
        e.time for e in events if e.kind is EventKind.STATE and e.payload["state"] == "RUNNING"
    )
    ended = max(e.time for e in events if e.kind is EventKind.TRIAL)
    return (ended - started).total_seconds()


def fleet_search(
    args: argparse.Namespace,
    workers: int,
    postgres: PostgresServer,
    data_addr: str,
    dataset: str,
    scratch: Path,
    round_: int,
) -> dict:
    """One search on `workers` worker processes sharing a fresh database."""
    database = postgres.create_database()
    url = postgres.url(database)
    env = {
        **ONE_THREAD,
        "TFMESH_TRAINING_DATABASE_URL": url,
        "TFMESH_TRAINING_DATA_ADDR": data_addr,
        "TFMESH_TRAINING_IDLE_POLL_S": "0.2",
    }
    store = JobStore(make_engine(url))
    with ExitStack() as stack:
        for index in range(workers):
            home = scratch / f"fleet-{workers}-{round_}" / f"worker-{index}"
            home.mkdir(parents=True)
            process = start_service(
                home,
                free_port(),
                home / "worker.log",
                env,
                module="services.training.worker_server",
                port_variable="TFMESH_TRAINING_WORKER_PORT",
            )
            stack.callback(_stop, process)
        # Every worker imports TensorFlow and builds a model before the measured search.
        warm_up = search_spec(dataset, "none", 2 * workers, 1, args.batch_size)
        assert run_job(store, "warm-up", warm_up) is JobState.SUCCEEDED
        spec = search_spec(dataset, "none", args.trials, args.trial_epochs, args.batch_size)
        assert run_job(store, "search", spec) is JobState.SUCCEEDED
        result = {
            "workers": workers,
            "seconds": round(search_seconds(store, "search"), 2),
            **summary(store, "search"),
        }
    store.engine.dispose()
    postgres.drop_database(database)
    print("workers", workers, round_, result)
    return result


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def fleet_rounds(args: argparse.Namespace, scratch: Path) -> dict[str, list[dict]]:
    rounds: dict[str, list[dict]] = {"1": [], "2": []}
    postgres = PostgresServer(find_binaries())
    postgres.start()
    data_port = free_port()
    data = start_service(scratch / "data", data_port, scratch / "data.log")
    try:
        data_addr = f"127.0.0.1:{data_port}"
        with grpc.insecure_channel(data_addr) as channel:
            imported = data_pb2_grpc.DataServiceStub(channel).ImportSample(
                data_pb2.ImportSampleRequest(sample="digits")
            )
        for round_ in range(args.rounds):
            for workers in rounds:
                rounds[workers].append(
                    fleet_search(
                        args,
                        int(workers),
                        postgres,
                        data_addr,
                        imported.version.name,
                        scratch,
                        round_,
                    )
                )
    finally:
        _stop(data)
        postgres.stop()
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    # Trials of about 2.5 s here: long enough that what a job pays once (loading the
    # dataset, the first trace: about 0.8 s) no longer decides the ratios.
    parser.add_argument("--trial-epochs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    # Small batches make an epoch long against what each trial costs once (building the
    # model, tracing its functions), as a larger dataset would.
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    with tempfile.TemporaryDirectory(prefix="search-bench-") as scratch:
        pruning = pruning_rounds(args, Path(scratch))
        fleet = fleet_rounds(args, Path(scratch))
    best = {name: min(results, key=lambda r: r["seconds"]) for name, results in pruning.items()}
    fleet_best = {name: min(results, key=lambda r: r["seconds"]) for name, results in fleet.items()}
    results = {
        "benchmark": "hyperparameter search: pruning, and one worker against two",
        "trials": args.trials,
        "epochs_per_trial": args.trial_epochs,
        "batch_size": args.batch_size,
        "tensorflow_threads": 1,
        "best": best,
        "pruning": {
            pruner: {
                "speedup": round(best["none"]["seconds"] / best[pruner]["seconds"], 2),
                "best_accuracy_difference": round(
                    best[pruner]["best_val_accuracy"] - best["none"]["best_val_accuracy"], 4
                ),
            }
            for pruner in ("median", "hyperband")
        },
        "fleet_best": fleet_best,
        "two_workers_speedup": round(fleet_best["1"]["seconds"] / fleet_best["2"]["seconds"], 2),
        "rounds": pruning,
        "fleet_rounds": fleet,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if "rounds" not in k}, indent=2))


if __name__ == "__main__":
    main()
