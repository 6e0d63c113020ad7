"""The training Job templates: the shell that builds TF_CONFIG for each worker, run for real
with /bin/sh on the rendered Job (a stand-in `python` on PATH records what the worker would
have started with, since the real one would start training), and the job specs they carry."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from k8s.check.model import Resource
from k8s.check.render import render
from services.training.spec import spec_from_dict, spec_violations
from tests.deploy.conftest import REPO

RECORDER = """#!/bin/sh
printf '{"tf_config": %s, "argv": "%s"}' "$TF_CONFIG" "$*" > "$RECORD"
"""


def job_of(kubectl: str, folder: str) -> Resource:
    resources = render(kubectl, REPO / folder, folder)
    return next(r for r in resources if r.kind == "Job")


def start_worker(job: Resource, index: int, tmp_path: Path) -> dict:
    """Run the Job's container command as the pod with completion index `index` would."""
    container = job.containers()[0]
    assert container["command"] == ["/bin/sh", "-c"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir(exist_ok=True)
    (bin_folder / "python").write_text(RECORDER)
    (bin_folder / "python").chmod(0o755)
    record = tmp_path / f"worker-{index}.json"
    env |= {
        "PATH": f"{bin_folder}:{os.environ['PATH']}",
        "RECORD": str(record),
        # Set by Kubernetes: the downward API's job-name label, and the Job controller.
        "JOB_NAME": job.name,
        "JOB_COMPLETION_INDEX": str(index),
    }
    subprocess.run(["/bin/sh", "-c", container["args"][0]], env=env, check=True, timeout=30)
    return json.loads(record.read_text())


@pytest.mark.parametrize("index", [0, 1])
def test_multiworker_job_gives_every_worker_the_cluster_and_its_index(kubectl, tmp_path, index):
    job = job_of(kubectl, "k8s/jobs/training-multiworker")
    started = start_worker(job, index, tmp_path)
    workers = [f"training-multiworker-{i}.training-workers:2222" for i in range(2)]
    assert started["tf_config"] == {
        "cluster": {"worker": workers},
        "task": {"type": "worker", "index": index},
    }
    assert started["argv"].startswith("-m services.training.distributed --spec /etc/tfmesh/job/")
    assert "--output /var/lib/tfmesh/exports/training-multiworker" in started["argv"]


def test_single_worker_job_runs_a_one_worker_cluster(kubectl, tmp_path):
    started = start_worker(job_of(kubectl, "k8s/jobs/training"), 0, tmp_path)
    assert started["tf_config"] == {
        "cluster": {"worker": ["localhost:2222"]},
        "task": {"type": "worker", "index": 0},
    }
    assert "--data-addr data:50051" in started["argv"]


@pytest.mark.parametrize("folder", ["k8s/jobs/training", "k8s/jobs/training-multiworker"])
def test_job_spec_is_one_the_training_service_accepts(folder):
    spec = spec_from_dict(json.loads((REPO / folder / "job-spec.json").read_text()))
    assert spec_violations(spec) == []
