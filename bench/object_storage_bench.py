"""Object-storage benchmark: the data service with its blobs in S3 (a real SeaweedFS on
loopback) against the local filesystem, in one run.

Generates a CSV of `--size-mb` MB, then, alternating backends for `--rounds` rounds (so
neither always runs first on a warm cache), starts a fresh data service on each and
measures what `bench.data_bench` measures: the ingest (upload to a committed version:
hashing, validation, statistics, split, shards written to the store) and the read-back of
the train split with ReadBatches, which is how a training job loads a dataset. The best
round of each backend is kept, and S3's figures are given as a share of the local ones.
Results go to `--output` as JSON. Run: `python -m bench.object_storage_bench`."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bench.data_bench import MB, REPO, free_port, generate_csv, measure, start_service
from cli.seaweedfs import LocalObjectStore

BACKENDS = ("local", "s3")


def one_round(workdir: Path, csv: Path, backend: str, store: LocalObjectStore, round_: int) -> dict:
    home = workdir / f"home-{backend}-{round_}"
    env = store.environment(f"bench-{round_}") if backend == "s3" else {}
    port = free_port()
    process = start_service(home, port, workdir / f"service-{backend}.log", env)
    try:
        return asyncio.run(measure(csv, port, process.pid))
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200, help="CSV size to generate")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--output", type=Path, default=REPO / "bench" / "results" / "object_storage.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="object-storage-bench-") as scratch:
        workdir = Path(scratch)
        csv = workdir / "bench.csv"
        generate_csv(csv, int(args.size_mb * MB))
        store = LocalObjectStore(workdir / "seaweedfs")
        store.start()
        rounds: dict[str, list[dict]] = {backend: [] for backend in BACKENDS}
        try:
            for round_ in range(args.rounds):
                for backend in BACKENDS:
                    started = time.perf_counter()
                    result = one_round(workdir, csv, backend, store, round_)
                    result["round_s"] = round(time.perf_counter() - started, 1)
                    rounds[backend].append(result)
                    print(backend, round_, result["ingest_mb_per_s"], result["read_train_mb_per_s"])
        finally:
            store.stop()
    best = {
        backend: {
            "ingest_mb_per_s": max(r["ingest_mb_per_s"] for r in results),
            "read_train_mb_per_s": max(r["read_train_mb_per_s"] for r in results),
        }
        for backend, results in rounds.items()
    }
    results = {
        "benchmark": "data service on S3 (SeaweedFS on loopback) vs the local filesystem",
        "file_mb": rounds["local"][0]["file_mb"],
        "rows": rounds["local"][0]["rows"],
        "best": best,
        "s3_share_of_local": {
            key: round(best["s3"][key] / best["local"][key], 3) for key in best["local"]
        },
        "rounds": rounds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
