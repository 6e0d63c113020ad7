"""The durable job store on SQLite and on a real PostgreSQL server (`database_url`)."""

from __future__ import annotations

import threading
import time

import pytest

from services.training.jobs import Claim, ClaimLost, EventKind, JobState, Registration
from services.training.spec import (
    Hyperparameters,
    JobSpec,
    MlpTemplate,
    SearchParameter,
    SearchSpace,
)
from services.training.store import JobStore
from shared.db import make_engine
from shared.errors import FailedPrecondition, InvalidArgument, NotFound

SPEC = JobSpec("digits@0123456789ab", MlpTemplate(), Hyperparameters(epochs=3))
SEARCH_SPEC = JobSpec(
    "digits@0123456789ab",
    MlpTemplate(),
    Hyperparameters(epochs=3),
    SearchSpace((SearchParameter("learning_rate", "float", 1e-4, 1e-2, log=True),), 3),
)
WORKER = "worker-1"


@pytest.fixture
def store(database_url):
    engine = make_engine(database_url)
    yield JobStore(engine)
    engine.dispose()


def test_a_job_survives_a_new_store_on_the_same_database(database_url):
    first = make_engine(database_url)
    JobStore(first).create("job-a", SPEC)
    first.dispose()
    second = make_engine(database_url)
    job = JobStore(second).get("job-a")
    second.dispose()
    assert job.state is JobState.QUEUED and job.spec == SPEC


def test_create_is_idempotent_by_id(store):
    created, was_new = store.create("job-a", SPEC)
    again, again_new = store.create("job-a", SPEC)
    assert was_new and not again_new and again.create_time == created.create_time


def test_claims_run_oldest_first_and_never_twice(store):
    for name in ("job-1", "job-2", "job-3"):
        store.create(name, SPEC)
    claimed: list[str] = []
    lock = threading.Lock()

    def claim_all() -> None:
        while (job := store.claim_next(WORKER, 60)) is not None:
            with lock:
                claimed.append(job.job_id)

    workers = [threading.Thread(target=claim_all) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(claimed) == ["job-1", "job-2", "job-3"]
    assert all(store.get(name).attempt == 1 for name in claimed)


def test_jobs_of_a_silent_worker_requeue_and_cancel_requests_win(store):
    store.create("job-run", SPEC)
    store.create("job-cancel", SPEC)
    store.create("job-alive", SPEC)
    store.claim_next("silent", 0.0)
    store.claim_next("silent", 0.0)
    alive = store.claim_next(WORKER, 60)
    store.request_cancel("job-cancel")
    assert sorted(store.requeue_expired()) == ["job-cancel", "job-run"]
    assert store.get("job-run").state is JobState.QUEUED
    assert store.get("job-cancel").state is JobState.CANCELLED
    assert store.get("job-alive").state is JobState.RUNNING
    rerun = store.claim_next(WORKER, 60)
    assert rerun.job_id == "job-run" and rerun.attempt == 2
    # The silent worker's heartbeat, when it comes back, finds the job gone.
    assert store.renew_claims("silent", {"job-run": 1}, 60) == (set(), {"job-run"})
    assert store.renew_claims(WORKER, {"job-alive": alive.attempt}, 60) == (set(), set())


def test_a_worker_that_lost_its_claim_writes_nothing(store):
    store.create("job-a", SPEC)
    stale = Claim("silent", store.claim_next("silent", 0.0).attempt)
    store.requeue_expired()
    fresh = Claim(WORKER, store.claim_next(WORKER, 60).attempt)
    with pytest.raises(ClaimLost):
        store.record_epoch("job-a", 0, 1, 3, {"loss": 0.5}, stale)
    with pytest.raises(ClaimLost):
        store.finish("job-a", JobState.SUCCEEDED, "", stale)
    store.record_epoch("job-a", 0, 1, 3, {"loss": 0.5}, fresh)
    assert store.get("job-a").epochs_completed == 1
    assert store.finish("job-a", JobState.SUCCEEDED, "", fresh).state is JobState.SUCCEEDED


def test_heartbeats_carry_cancel_requests(store):
    store.create("job-a", SPEC)
    job = store.claim_next(WORKER, 60)
    store.request_cancel("job-a")
    assert store.renew_claims(WORKER, {"job-a": job.attempt}, 60) == ({"job-a"}, set())


def test_checkpoints_in_the_blob_store_are_recorded_by_the_claim_holder(store):
    store.create("job-a", SPEC)
    assert store.checkpoint_of("job-a") is None
    claim = Claim(WORKER, store.claim_next(WORKER, 60).attempt)
    store.record_checkpoint(claim, "job-a", 3, "ab" * 32)
    assert store.checkpoint_of("job-a") == (3, "ab" * 32)


def test_progress_and_events_in_sequence(store):
    store.create("job-a", SPEC)
    store.claim_next(WORKER, 60)
    store.record_epoch("job-a", 0, 1, 3, {"loss": 0.5})
    store.trials.open("job-a", 1)
    ticket = store.trials.claim(WORKER, 60)
    store.trials.record(ticket.claim, {"learning_rate": 0.01}, 0.9)
    store.record_resume("job-a", 1)
    store.record_outcome("job-a", {"accuracy": 0.97}, {"optimizer": "adam"}, ["model.keras"])
    store.record_registration("job-a", Registration("m", 1, True))
    done = store.finish("job-a", JobState.SUCCEEDED)
    assert done.resumed_from_epoch == 1 and done.trials_completed == 1
    assert done.registration == Registration("m", 1, True) and done.end_time is not None
    events = store.events_since("job-a", 0)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.kind for e in events] == [
        EventKind.STATE,
        EventKind.STATE,
        EventKind.EPOCH,
        EventKind.TRIAL,
        EventKind.STATE,
        EventKind.STATE,
    ]
    assert [e.sequence for e in store.events_since("job-a", 4)] == [5, 6]


def test_cancel_rules(store):
    store.create("job-q", SPEC)
    assert store.request_cancel("job-q").state is JobState.CANCELLED
    assert store.request_cancel("job-q").state is JobState.CANCELLED
    store.create("job-done", SPEC)
    store.claim_next(WORKER, 60)
    store.finish("job-done", JobState.FAILED, "boom")
    assert store.get("job-done").error == "boom"
    with pytest.raises(FailedPrecondition):
        store.request_cancel("job-done")
    with pytest.raises(NotFound):
        store.request_cancel("job-missing")


def test_pages_newest_first(store):
    for index in range(5):
        store.create(f"job-{index}", SPEC)
    page, token = store.list_jobs(2, "", None)
    assert [j.job_id for j in page] == ["job-4", "job-3"]
    page, token = store.list_jobs(2, token, None)
    assert [j.job_id for j in page] == ["job-2", "job-1"]
    page, token = store.list_jobs(2, token, None)
    assert [j.job_id for j in page] == ["job-0"] and token == ""
    with pytest.raises(InvalidArgument):
        store.list_jobs(-1, "", None)


def test_trials_of_a_search_are_claimed_once_each_and_only_while_the_job_runs(store):
    store.create("job-a", SEARCH_SPEC)
    store.trials.open("job-a", 3)
    assert store.trials.claim("helper", 60) is None, "the job has not started"
    store.claim_next(WORKER, 60)
    store.trials.open("job-a", 3)  # again, as a resumed attempt does: no new trials
    tickets = [store.trials.claim(f"w{i}", 60) for i in range(3)]
    assert sorted(t.claim.number for t in tickets) == [0, 1, 2]
    assert store.trials.claim("w3", 60) is None
    assert tickets[0].job.spec == SEARCH_SPEC and store.trials.left("job-a") == 3
    store.trials.record(tickets[0].claim, {"learning_rate": 0.001}, 0.8)
    store.trials.record(tickets[1].claim, {"learning_rate": 0.002}, 0.5, pruned=True)
    assert store.trials.left("job-a") == 1
    with pytest.raises(ClaimLost):
        store.trials.record(tickets[0].claim, {"learning_rate": 0.001}, 0.8)
    job = store.get("job-a")
    assert [t["number"] for t in job.trials] == [0, 1] and job.trials_completed == 2


def test_a_silent_workers_trial_requeues_and_its_late_writes_are_refused(store):
    store.create("job-a", SEARCH_SPEC)
    store.claim_next(WORKER, 60)
    store.trials.open("job-a", 1)
    dead = store.trials.claim("dead", 0.01)
    store.trials.set_study_trial(dead.claim, 4)
    time.sleep(0.05)  # past the dead worker's claim
    assert store.trials.requeue_expired() == 1
    again = store.trials.claim("alive", 60)
    assert again.claim.attempt == 2 and again.abandoned_study_trial == 4
    with pytest.raises(ClaimLost):
        store.record_epoch("job-a", 1, 1, 3, {"val_accuracy": 0.5}, dead.claim)
    store.trials.renew_claims([dead.claim, again.claim], 60)
    assert store.trials.requeue_expired() == 0
    store.trials.release(again.claim)
    assert store.trials.claim("other", 60).claim.attempt == 3


def test_a_cancel_request_stops_the_trials_of_the_job(store):
    store.create("job-a", SEARCH_SPEC)
    store.claim_next(WORKER, 60)
    store.trials.open("job-a", 2)
    running = store.trials.claim("helper", 60)
    store.request_cancel("job-a")
    assert store.trials.claim("helper", 60) is None
    with pytest.raises(ClaimLost):
        store.trials.record(running.claim, {"learning_rate": 0.001}, 0.8)
