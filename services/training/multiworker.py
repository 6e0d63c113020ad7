"""A job with `workers: N`: N processes of one data-parallel training, on this worker.

The worker that claims the job writes its dataset (one .npz) and spec into the job's
folder and starts N `services.training.distributed` processes on loopback, each told its
index and the others' addresses through `TF_CONFIG`; MultiWorkerMirroredStrategy
all-reduces their gradients. The chief (index 0) reports each epoch's loss, which goes
on to the job's events, then evaluates and exports into the job's folder, from where the
worker registers the artifacts like any other job's. A stop request (cancel, shutdown)
kills the processes; a process that fails kills the others and fails the job with the
end of its log. There is no checkpoint: a job that starts again trains from epoch 0. On
Kubernetes the processes run in the claiming worker's pod: a multi-worker job uses that
pod's CPUs (or GPUs)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.training.datasource import TrainingData, save_npz
from services.training.evaluation import EVALUATION_ARTIFACT
from services.training.evaluation import MEDIA_TYPE as EVALUATION_MEDIA_TYPE
from services.training.export import MEDIA_TYPES
from services.training.jobs import ArtifactFile, StopRequested
from services.training.spec import JobSpec, base_params, spec_to_dict
from services.training.trainer import Reporter, StopCheck, TrainingOutcome
from shared.ports import free_ports

# The folder that holds `services/` (the distributed processes run `-m` from it).
CODE_ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.2
LOG_TAIL_CHARS = 2000


class MultiWorkerFailed(RuntimeError):
    """A process of the training exited with an error; the message ends with its log."""


class MultiWorkerTraining:
    def __init__(
        self,
        spec: JobSpec,
        data: TrainingData,
        workdir: Path,
        reporter: Reporter,
        should_stop: StopCheck,
    ) -> None:
        self.spec = spec
        self.data = data
        self.workdir = workdir
        self.reporter = reporter
        self.should_stop = should_stop

    def run(self) -> TrainingOutcome:
        run_dir = self.workdir / "multiworker"
        export = self.workdir / "export"
        for stale in (run_dir, export):
            if stale.exists():
                shutil.rmtree(stale)  # an earlier attempt's: this one starts over
        run_dir.mkdir(parents=True)
        save_npz(self.data, run_dir / "data.npz")
        (run_dir / "spec.json").write_text(json.dumps(spec_to_dict(self.spec)))
        self.reporter.phase_started("train")
        processes = self._start(run_dir, export)
        try:
            self._watch(processes, run_dir)
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        metrics = json.loads((export / "metrics.json").read_text())
        return TrainingOutcome(
            metrics,
            {**base_params(self.spec).as_strings(), "workers": str(self.spec.workers)},
            self._artifacts(export),
            self.spec.hyperparameters.epochs,
        )

    def _start(self, run_dir: Path, export: Path) -> list[subprocess.Popen[bytes]]:
        addresses = [f"127.0.0.1:{port}" for port in free_ports(self.spec.workers)]
        processes = []
        for index in range(self.spec.workers):
            config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
            command = [
                sys.executable,
                "-m",
                "services.training.distributed",
                "--spec",
                str(run_dir / "spec.json"),
                "--data-file",
                str(run_dir / "data.npz"),
                "--output",
                str(export),
                "--progress",
                str(run_dir / "progress.jsonl"),
            ]
            with (run_dir / f"worker-{index}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        command,
                        cwd=CODE_ROOT,
                        env={**os.environ, "TF_CONFIG": json.dumps(config)},
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                        # Its own process group: a kill reaches whatever it started.
                        start_new_session=True,
                    )
                )
        return processes

    def _watch(self, processes: list[subprocess.Popen[bytes]], run_dir: Path) -> None:
        """Until every process exits 0: pass the chief's epochs on, stop when asked,
        fail when one process does."""
        progress = run_dir / "progress.jsonl"
        reported = 0
        while True:
            reported = self._report(progress, reported)
            if (reason := self.should_stop()) is not None:
                raise StopRequested(reason)
            codes = [process.poll() for process in processes]
            for index, code in enumerate(codes):
                if code not in (None, 0):
                    log = (run_dir / f"worker-{index}.log").read_text(errors="replace")
                    raise MultiWorkerFailed(
                        f"worker {index} of {len(processes)} exited with {code}: "
                        f"{log[-LOG_TAIL_CHARS:]}"
                    )
            if all(code == 0 for code in codes):
                self._report(progress, reported)
                return
            time.sleep(POLL_S)

    def _report(self, progress: Path, reported: int) -> int:
        if not progress.exists():
            return reported
        text = progress.read_text()
        # A last line without its newline is still being written: it waits for the next look.
        complete = text[: text.rfind("\n") + 1].splitlines()
        for line in complete[reported:]:
            entry = json.loads(line)
            self.reporter.epoch_ended(0, entry["epoch"], entry["epochs"], {"loss": entry["loss"]})
        return max(reported, len(complete))

    @staticmethod
    def _artifacts(export: Path) -> list[ArtifactFile]:
        """The chief's exports, in registration order."""
        found = [
            ArtifactFile(name, export / name, media_type)
            for name, media_type in MEDIA_TYPES.items()
            if (export / name).exists()
        ]
        return [
            *found,
            ArtifactFile(EVALUATION_ARTIFACT, export / EVALUATION_ARTIFACT, EVALUATION_MEDIA_TYPE),
        ]
