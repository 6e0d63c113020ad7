"""Data service benchmark: ingest throughput and peak memory for a generated CSV.

Generates a CSV of about `--size-mb` MB (default 1024) with an id column, nine float
columns and a label, starts the data service as its own process, streams the file to it
in 1 MiB chunks and measures:
- ingest MB/s: file size over the time from the first chunk to the response (hashing,
  validation, statistics, split, shard and Parquet writing included), and the stored
  sizes of both formats;
- the service's memory: its resident set before the upload and its peak during it
  (VmHWM, reset just before the upload through /proc/<pid>/clear_refs), and the growth;
- read-back: the train split streamed with ReadBatches, in rows/s and MB/s, and with
  ReadArrow into one pyarrow Table, in rows/s;
- the same rows as one Parquet file (zstd, Arrow's types), uploaded the same way:
  MB/s of the Parquet file, rows/s, memory, and whether its splits hold as many rows as
  the CSV's (rows hash by value, so they must).
Results go to `--output` as JSON. Run: `python bench/data_bench.py [--size-mb N]`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "gen")]

from shared.ports import free_port  # noqa: E402
from tfmesh.data.v1 import data_pb2 as pb  # noqa: E402
from tfmesh.data.v1 import data_pb2_grpc  # noqa: E402

CHUNK_BYTES = 1024 * 1024
FLOAT_COLUMNS = 9
CLASSES = 10
BASE_ROWS = 100_000
MB = 1024 * 1024


def generate_csv(path: Path, size_bytes: int, seed: int = 0) -> int:
    """Write a CSV of at least `size_bytes`; returns its row count. A base block of rows is
    formatted once and repeated behind a distinct id, so every row differs."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(BASE_ROWS, FLOAT_COLUMNS)) * 100
    labels = rng.integers(0, CLASSES, size=BASE_ROWS)
    base = [
        ",".join(f"{v:.6f}" for v in row) + f",{label}"
        for row, label in zip(values.tolist(), labels.tolist(), strict=True)
    ]
    header = ",".join(["id", *(f"f{j}" for j in range(FLOAT_COLUMNS)), "label"])
    rows = 0
    written = 0
    with path.open("w") as handle:
        written += handle.write(header + "\n")
        while written < size_bytes:
            block = "\n".join(f"{rows + i},{line}" for i, line in enumerate(base)) + "\n"
            written += handle.write(block)
            rows += len(base)
    return rows


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak resident set) of a process, in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+); False where refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def start_service(
    home: Path,
    port: int,
    log: Path,
    extra_env: dict[str, str] | None = None,
    module: str = "services.data.server",
    port_variable: str = "TFMESH_DATA_PORT",
) -> subprocess.Popen:
    """A service process (the data service unless told), once its health says SERVING."""
    env = {**os.environ, "TFMESH_HOME": str(home), port_variable: str(port)}
    env.update(extra_env or {})
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "gen")])
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{module} exited early; see {log}")
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return process
            except grpc.RpcError:
                time.sleep(0.1)
    process.kill()
    raise TimeoutError(f"{module} did not start within 60 s")


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def write_parquet(csv_path: Path, parquet_path: Path) -> None:
    """The CSV's rows as one Parquet file (Arrow's inferred types: int64 id and label,
    float64 features), written a batch at a time."""
    reader = pa_csv.open_csv(csv_path)
    with pq.ParquetWriter(parquet_path, reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)


async def requests(
    path: Path, data_format: pb.DataFormat.ValueType, dataset: str
) -> AsyncIterator[pb.UploadDatasetRequest]:
    header = pb.UploadHeader(dataset=dataset, format=data_format, label_column="label")
    yield pb.UploadDatasetRequest(header=header)
    for chunk in file_chunks(path):
        yield pb.UploadDatasetRequest(chunk=chunk)


async def upload(
    stub: data_pb2_grpc.DataServiceStub,
    pid: int,
    path: Path,
    data_format: pb.DataFormat.ValueType,
    dataset: str,
) -> tuple[pb.DatasetVersion, dict]:
    """One upload, timed from the first chunk to the response, with the service's memory."""
    before = memory_mb(pid)
    peak_was_reset = reset_peak(pid)
    started = time.perf_counter()
    response = await stub.UploadDataset(requests(path, data_format, dataset))
    ingest_s = time.perf_counter() - started
    after = memory_mb(pid)
    size_mb = path.stat().st_size / MB
    rows = response.version.rows.total
    return response.version, {
        "file_mb": round(size_mb, 1),
        "rows": rows,
        "version": response.version.name,
        "ingest_s": round(ingest_s, 2),
        "ingest_mb_per_s": round(size_mb / ingest_s, 1),
        "ingest_rows_per_s": round(rows / ingest_s),
        "rss_before_mb": round(before["VmRSS"], 1),
        "peak_rss_mb": round(after["VmHWM"], 1),
        "peak_rss_growth_mb": round(after["VmHWM"] - before["VmRSS"], 1),
        # Without the reset, the peak may be start-up's, an upper bound on the growth.
        "peak_reset_before_upload": peak_was_reset,
    }


async def read_batches(stub: data_pb2_grpc.DataServiceStub, version: str) -> tuple[int, int, float]:
    """The train split through ReadBatches: rows, bytes, seconds."""
    started = time.perf_counter()
    rows = 0
    read_bytes = 0
    request = pb.ReadBatchesRequest(version=version, split=pb.SPLIT_TRAIN, batch_size=65536)
    async for batch in stub.ReadBatches(request):
        rows += batch.labels.shape[0]
        read_bytes += len(batch.features.content) + len(batch.labels.content)
    return rows, read_bytes, time.perf_counter() - started


async def read_arrow(stub: data_pb2_grpc.DataServiceStub, version: str) -> tuple[int, float]:
    """The train split through ReadArrow into one pyarrow Table: rows, seconds."""
    started = time.perf_counter()
    request = pb.ReadArrowRequest(version=version, split=pb.SPLIT_TRAIN, batch_size=65536)
    pieces = [message.arrow async for message in stub.ReadArrow(request)]
    table = pa.ipc.open_stream(b"".join(pieces)).read_all()
    return table.num_rows, time.perf_counter() - started


async def measure(csv_path: Path, parquet_path: Path, port: int, pid: int) -> dict:
    options = [("grpc.max_receive_message_length", 256 * MB)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = data_pb2_grpc.DataServiceStub(channel)
        version, figures = await upload(stub, pid, csv_path, pb.DATA_FORMAT_CSV, "bench")
        rows, read_bytes, read_s = await read_batches(stub, version.name)
        arrow_rows, arrow_s = await read_arrow(stub, version.name)
        shards = await stub.GetShards(pb.GetShardsRequest(version=version.name))
        parquet = await stub.GetShards(
            pb.GetShardsRequest(version=version.name, format=pb.SHARD_FORMAT_PARQUET)
        )
        same, parquet_figures = await upload(
            stub, pid, parquet_path, pb.DATA_FORMAT_PARQUET, "bench-parquet"
        )
    # Rows hash by value: the same rows as Parquet land in the same splits.
    parquet_figures["same_split_rows_as_csv"] = same.rows == version.rows
    return {
        **figures,
        "split_rows": {
            "train": version.rows.train,
            "validation": version.rows.validation,
            "test": version.rows.test,
        },
        "shards": len(shards.shards),
        "shards_mb": round(sum(s.size_bytes for s in shards.shards) / MB, 1),
        "parquet_files": len(parquet.shards),
        "parquet_mb": round(sum(s.size_bytes for s in parquet.shards) / MB, 1),
        "read_train_s": round(read_s, 2),
        "read_train_rows_per_s": round(rows / read_s),
        "read_train_mb_per_s": round(read_bytes / MB / read_s, 1),
        "read_train_arrow_s": round(arrow_s, 2),
        "read_train_arrow_rows_per_s": round(arrow_rows / arrow_s),
        "parquet_upload": parquet_figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1024, help="CSV size to generate")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "data.json")
    parser.add_argument("--workdir", type=Path, help="where the CSV and TFMESH_HOME go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="data-bench-") as scratch:
        workdir = Path(scratch)
        csv_path = workdir / "bench.csv"
        parquet_path = workdir / "bench.parquet"
        started = time.perf_counter()
        generate_csv(csv_path, int(args.size_mb * MB))
        write_parquet(csv_path, parquet_path)
        generate_s = time.perf_counter() - started
        port = free_port()
        process = start_service(workdir / "home", port, workdir / "service.log")
        try:
            results = asyncio.run(measure(csv_path, parquet_path, port, process.pid))
        finally:
            process.terminate()
            process.wait(30)
    results = {"benchmark": "data ingest", "generate_s": round(generate_s, 2), **results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
