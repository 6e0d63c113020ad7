"""The training service over gRPC: a real grpc.aio server, a real registry, digits in memory."""

from __future__ import annotations

import asyncio
import json

import grpc
import keras
import numpy as np
import pytest

from services.registry.client import RegistryClient
from shared.channels import open_channel
from tests.support.status import field_violations
from tests.training.conftest import DIGITS, mlp_spec, wait_for_end
from tfmesh.training.v1 import training_pb2 as pb


def lambda_json() -> str:
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(10), keras.layers.Lambda(lambda v: v * 2)]
    )
    return model.to_json()


def wrong_input_json() -> str:
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(10, activation="softmax")])
    return model.to_json()


BAD_SPECS = {
    "epochs zero": (mlp_spec(epochs=0), "spec.hyperparameters.epochs"),
    "epochs negative": (mlp_spec(epochs=-3), "spec.hyperparameters.epochs"),
    "negative learning rate": (
        mlp_spec(hyperparameters=pb.Hyperparameters(epochs=2, learning_rate=-0.1)),
        "spec.hyperparameters.learning_rate",
    ),
    "lambda layer": (
        mlp_spec(model=pb.ModelSpec(keras_json=lambda_json())),
        "spec.model.keras_json",
    ),
    "input shape does not fit": (
        mlp_spec(model=pb.ModelSpec(keras_json=wrong_input_json())),
        "spec.model.keras_json",
    ),
    "cnn on flat features": (
        mlp_spec(model=pb.ModelSpec(cnn=pb.CnnTemplate())),
        "spec.model.cnn",
    ),
    "malformed dataset name": (mlp_spec(dataset_version="../etc@x"), "spec.dataset_version"),
    "unknown search parameter": (
        mlp_spec(
            search=pb.SearchSpace(
                max_trials=2, parameters=[pb.SearchParameter(name="momentum", choice=pb.Choice())]
            )
        ),
        "spec.search.parameters[0].name",
    ),
}


@pytest.mark.parametrize("case", BAD_SPECS)
async def test_bad_specs_are_invalid_argument_before_any_job_exists(training, case):
    spec, field = BAD_SPECS[case]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await training.SubmitJob(pb.SubmitJobRequest(spec=spec))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(refused.value), field_violations(refused.value)
    listed = await training.ListJobs(pb.ListJobsRequest())
    assert list(listed.jobs) == []


async def test_unknown_dataset_is_not_found_on_the_field(training):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await training.SubmitJob(pb.SubmitJobRequest(spec=mlp_spec(dataset_version="nope@abc")))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "spec.dataset_version" in field_violations(refused.value)
    assert list((await training.ListJobs(pb.ListJobsRequest())).jobs) == []


async def test_job_trains_registers_and_streams_its_progress(training, registry, tmp_path):
    spec = mlp_spec(epochs=3, model_name="digits-mlp", request_promotion=True)
    job = (await training.SubmitJob(pb.SubmitJobRequest(spec=spec))).job
    assert job.state == pb.JOB_STATE_QUEUED
    events = [event async for event in training.WatchJob(pb.WatchJobRequest(name=job.name))]

    states = [e.state_change.state for e in events if e.WhichOneof("event") == "state_change"]
    assert states[0] == pb.JOB_STATE_QUEUED and states[-1] == pb.JOB_STATE_SUCCEEDED
    assert pb.JOB_STATE_RUNNING in states
    epochs = [e.epoch for e in events if e.WhichOneof("event") == "epoch"]
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert all({"loss", "accuracy", "val_loss", "val_accuracy"} <= set(e.metrics) for e in epochs)
    sequences = [e.sequence for e in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)

    done = (await training.GetJob(pb.GetJobRequest(name=job.name))).job
    assert done.state == pb.JOB_STATE_SUCCEEDED
    assert done.epochs_completed == 3 and done.attempt == 1
    assert not done.HasField("resumed_from_epoch")
    assert done.metrics["accuracy"] > 0.8
    assert list(done.artifacts) == ["saved_model.tar", "model.keras", "evaluation.json"]
    assert done.registration.version == 1 and done.registration.created
    # The first version has no production version to beat: the gate lets it through.
    assert done.registration.promotion_requested and done.registration.promoted

    async with open_channel(registry) as channel:
        version = await RegistryClient(channel).get_version("digits-mlp", alias="production")
    assert version.version == 1
    assert version.lineage.dataset_version == DIGITS
    assert version.lineage.training_job == job.name
    assert version.metrics["accuracy"] == pytest.approx(done.metrics["accuracy"])
    assert version.params["hidden_units"] == "32" and version.params["optimizer"] == "adam"
    assert [a.name for a in version.artifacts] == [
        "saved_model.tar",
        "model.keras",
        "evaluation.json",
    ]
    # The confusion matrix on the test split, kept with the version.
    async with open_channel(registry) as channel:
        path = tmp_path / "evaluation.json"
        await RegistryClient(channel).download_artifact("digits-mlp", 1, "evaluation.json", path)
    evaluation = json.loads(path.read_text())
    matrix = np.array(evaluation["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == evaluation["rows"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(done.metrics["accuracy"], abs=1e-6)


async def test_watch_resumes_after_a_sequence(training):
    job = (await training.SubmitJob(pb.SubmitJobRequest(spec=mlp_spec(epochs=2)))).job
    await wait_for_end(training, job.name)
    everything = [e async for e in training.WatchJob(pb.WatchJobRequest(name=job.name))]
    rest = [
        e
        async for e in training.WatchJob(
            pb.WatchJobRequest(name=job.name, since_sequence=everything[2].sequence)
        )
    ]
    assert rest == everything[3:]


async def test_refused_promotion_is_recorded_not_a_failure(training):
    first = mlp_spec(epochs=3, model_name="gated", request_promotion=True)
    job = (await training.SubmitJob(pb.SubmitJobRequest(spec=first))).job
    assert (await wait_for_end(training, job.name)).registration.promoted
    # One epoch of a much smaller learning rate cannot beat the production version by 0.01.
    worse = mlp_spec(
        model_name="gated",
        request_promotion=True,
        hyperparameters=pb.Hyperparameters(epochs=1, learning_rate=1e-5),
    )
    job = (await training.SubmitJob(pb.SubmitJobRequest(spec=worse))).job
    done = await wait_for_end(training, job.name)
    assert done.state == pb.JOB_STATE_SUCCEEDED
    assert done.registration.version == 2
    assert done.registration.promotion_requested and not done.registration.promoted
    assert done.registration.promotion_message


async def test_cancel_stops_a_running_job_at_a_batch_boundary(training):
    spec = mlp_spec(epochs=500, hyperparameters=pb.Hyperparameters(epochs=500, batch_size=8))
    job = (await training.SubmitJob(pb.SubmitJobRequest(spec=spec))).job
    async for event in training.WatchJob(pb.WatchJobRequest(name=job.name)):
        if event.WhichOneof("event") == "epoch":
            break
    cancelled = (await training.CancelJob(pb.CancelJobRequest(name=job.name))).job
    assert cancelled.cancel_requested
    done = await wait_for_end(training, job.name, timeout_s=30)
    assert done.state == pb.JOB_STATE_CANCELLED
    assert 1 <= done.epochs_completed < 500
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await training.CancelJob(pb.CancelJobRequest(name="no-such-job"))
    assert again.value.code() == grpc.StatusCode.NOT_FOUND


async def test_queued_job_cancels_at_once_and_list_pages(training):
    long = mlp_spec(hyperparameters=pb.Hyperparameters(epochs=500, batch_size=8))
    running = (await training.SubmitJob(pb.SubmitJobRequest(spec=long))).job
    queued = (await training.SubmitJob(pb.SubmitJobRequest(spec=long, job_id="queued-1"))).job
    assert queued.name == "queued-1"
    again = (await training.SubmitJob(pb.SubmitJobRequest(spec=long, job_id="queued-1"))).job
    assert again.name == "queued-1" and again.create_time == queued.create_time
    cancelled = (await training.CancelJob(pb.CancelJobRequest(name="queued-1"))).job
    assert cancelled.state == pb.JOB_STATE_CANCELLED

    first = await training.ListJobs(pb.ListJobsRequest(page_size=1))
    assert [j.name for j in first.jobs] == ["queued-1"] and first.next_page_token
    second = await training.ListJobs(
        pb.ListJobsRequest(page_size=1, page_token=first.next_page_token)
    )
    assert [j.name for j in second.jobs] == [running.name] and not second.next_page_token
    only_cancelled = await training.ListJobs(pb.ListJobsRequest(state=pb.JOB_STATE_CANCELLED))
    assert [j.name for j in only_cancelled.jobs] == ["queued-1"]
    await training.CancelJob(pb.CancelJobRequest(name=running.name))
    assert (await wait_for_end(training, running.name)).state == pb.JOB_STATE_CANCELLED


async def test_bad_page_token_and_unknown_job(training):
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await training.ListJobs(pb.ListJobsRequest(page_token="not-a-token"))
    assert bad_token.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await training.GetJob(pb.GetJobRequest(name="job-missing"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    # The server keeps serving after bad requests.
    assert list((await training.ListJobs(pb.ListJobsRequest())).jobs) == []


async def test_search_runs_its_trial_budget_and_trains_the_best(training):
    spec = mlp_spec(
        epochs=2,
        search=pb.SearchSpace(
            max_trials=3,
            epochs_per_trial=1,
            parameters=[
                pb.SearchParameter(
                    name="learning_rate", float_range=pb.FloatRange(low=1e-4, high=1e-2, log=True)
                ),
                pb.SearchParameter(name="hidden_units", choice=pb.Choice(values=["16", "32,16"])),
            ],
        ),
    )
    job = (await training.SubmitJob(pb.SubmitJobRequest(spec=spec))).job
    events = [e async for e in training.WatchJob(pb.WatchJobRequest(name=job.name))]
    trials = [e.trial for e in events if e.WhichOneof("event") == "trial"]
    assert [t.number for t in trials] == [0, 1, 2]
    done = (await training.GetJob(pb.GetJobRequest(name=job.name))).job
    assert done.state == pb.JOB_STATE_SUCCEEDED and done.trials_completed == 3
    best = max(done.trials, key=lambda t: t.objective)
    assert float(done.params["learning_rate"]) == pytest.approx(float(best.params["learning_rate"]))
    assert done.params["hidden_units"] == best.params["hidden_units"]
    trial_epochs = [e.epoch for e in events if e.WhichOneof("event") == "epoch" and e.epoch.trial]
    assert len(trial_epochs) == 3


async def test_concurrent_watchers_see_the_same_events(training):
    job = (await training.SubmitJob(pb.SubmitJobRequest(spec=mlp_spec(epochs=2)))).job

    async def watch() -> list[int]:
        return [e.sequence async for e in training.WatchJob(pb.WatchJobRequest(name=job.name))]

    first, second = await asyncio.gather(watch(), watch())
    assert first == second and len(first) >= 5


async def test_a_multi_worker_job_is_evaluated_exported_and_registered(training, registry):
    submitted = await training.SubmitJob(
        pb.SubmitJobRequest(spec=mlp_spec(epochs=4, model_name="digits-two", workers=2))
    )
    job = await wait_for_end(training, submitted.job.name, timeout_s=240)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    assert job.spec.workers == 2 and job.epochs_completed == 4
    assert job.metrics["accuracy"] > 0.8 and job.params["workers"] == "2"
    assert job.registration.model == "digits-two" and job.registration.version == 1
    async with open_channel(registry) as channel:
        version = await RegistryClient(channel).get_version("digits-two", 1)
    assert version.lineage.training_job == job.name
    assert {a.name for a in version.artifacts} >= {"saved_model.tar", "model.keras"}
