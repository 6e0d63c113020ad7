"""`tfmesh train ...` against real training, data and registry processes: a tiny job
submitted and watched live to its registration, a small search, JSON events, listing and
cancelling."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def iris() -> str:
    imported = runner.invoke(app, ["data", "import-sample", "iris", "--json"])
    assert imported.exit_code == 0, imported.output
    return json.loads(imported.output)["version"]["name"]


def test_submit_and_watch_to_registration(services):
    submitted = runner.invoke(
        app,
        [
            "train", "submit", iris(),
            "--model", "iris", "--hidden-units", "8", "--epochs", "2",
            "--batch-size", "32", "--learning-rate", "0.01", "--job-id", "cli-1", "--watch",
        ],
    )  # fmt: skip
    assert submitted.exit_code == 0, submitted.output
    output = submitted.output
    assert "submitted job cli-1" in output and "running" in output and "succeeded" in output
    assert "2/2" in output and "val_accuracy" in output
    assert "iris v1" in output
    shown = json.loads(runner.invoke(app, ["train", "show", "cli-1", "--json"]).output)
    assert shown["state"] == "JOB_STATE_SUCCEEDED" and shown["registration"]["version"] == "1"
    events = runner.invoke(app, ["train", "watch", "cli-1", "--json"])
    assert events.exit_code == 0
    lines = [json.loads(line) for line in events.output.splitlines()]
    assert [e["epoch"]["epoch"] for e in lines if "epoch" in e] == [1, 2]
    assert lines[-1]["state_change"]["state"] == "JOB_STATE_SUCCEEDED"
    listed = runner.invoke(app, ["train", "list", "--state", "succeeded"])
    assert listed.exit_code == 0 and "cli-1" in listed.output and "iris v1" in listed.output
    assert (
        json.loads(runner.invoke(app, ["train", "list", "--state", "failed", "--json"]).output)
        == []
    )


def test_a_search_shows_each_trial(services):
    searched = runner.invoke(
        app,
        [
            "train", "submit", iris(),
            "--hidden-units", "8", "--epochs", "1", "--trials", "2", "--trial-epochs", "1",
            "--search", "learning_rate=0.001..0.05:log", "--search", "optimizer=adam|sgd",
            "--watch",
        ],
    )  # fmt: skip
    assert searched.exit_code == 0, searched.output
    assert "trial 0: val_accuracy" in searched.output and "trial 1: val_accuracy" in searched.output
    assert "optimizer=" in searched.output and "learning_rate=" in searched.output


def test_cancel_and_refusals(services):
    long_job = runner.invoke(
        app,
        ["train", "submit", iris(), "--epochs", "500", "--batch-size", "4", "--json"],
    )
    job = json.loads(long_job.output)["name"]
    cancelled = runner.invoke(app, ["train", "cancel", job])
    assert cancelled.exit_code == 0 and job in cancelled.output
    watched = runner.invoke(app, ["train", "watch", job])
    assert watched.exit_code == 1 and "cancelled" in watched.output
    bad_search = runner.invoke(app, ["train", "submit", "iris@x", "--search", "learning_rate"])
    assert bad_search.exit_code == 2 and "name=low..high" in bad_search.output
    bad_pruner = runner.invoke(app, ["train", "submit", "iris@x", "--pruner", "sometimes"])
    assert bad_pruner.exit_code == 2 and "--pruner" in bad_pruner.output
    refused = runner.invoke(app, ["train", "submit", "iris@0123456789ab", "--epochs", "1"])
    assert refused.exit_code == 1 and refused.output.strip()
    both = runner.invoke(
        app,
        [
            "train",
            "submit",
            iris(),
            "--workers",
            "2",
            "--trials",
            "2",
            "--search",
            "dropout=0..0.5",
        ],
    )
    assert both.exit_code == 1 and "spec.workers" in both.output
    assert runner.invoke(app, ["train", "watch", "nope"]).exit_code == 1
    assert runner.invoke(app, ["train", "list", "--state", "asleep"]).exit_code == 2
