"""The commit bell: a watcher wakes when this process commits to the job database, not
when another process does (those it sees at its poll), and a commit between its read
and its wait is not missed. Real databases (SQLite, and PostgreSQL where the suite has
it); each wait is bounded by its timeout."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.training.commit_bell import CommitBell
from services.training.spec import Hyperparameters, JobSpec, MlpTemplate
from services.training.store import JobStore
from shared.db import make_engine

SPEC = JobSpec("digits@0123456789ab", MlpTemplate(), Hyperparameters(epochs=3))
LONG_S = 30.0


@pytest.fixture
def engines(database_url):
    # Two engines on one database: this process's, and another process's stand-in.
    ours, theirs = make_engine(database_url), make_engine(database_url)
    yield JobStore(ours), JobStore(theirs)
    ours.dispose()
    theirs.dispose()


async def test_a_commit_of_this_process_wakes_a_watcher_once_it_is_visible(engines):
    ours, theirs = engines
    bell = CommitBell(ours.engine)
    waiting = asyncio.create_task(bell.wait(bell.generation, LONG_S))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await asyncio.to_thread(ours.create, "job-ours", SPEC)
    await asyncio.wait_for(waiting, LONG_S / 2)
    assert time.monotonic() - started < LONG_S / 2
    # Rung after the commit: another connection sees the job.
    assert (await asyncio.to_thread(theirs.get, "job-ours")).job_id == "job-ours"


async def test_reads_do_not_ring(engines):
    ours, _ = engines
    await asyncio.to_thread(ours.create, "job-read", SPEC)
    bell = CommitBell(ours.engine)
    seen = bell.generation
    for _ in range(3):
        await asyncio.to_thread(ours.get, "job-read")
        await asyncio.to_thread(ours.events_since, "job-read", 0)
    assert bell.generation == seen


async def test_a_cancelled_wait_ends_cancelled(engines):
    ours, _ = engines
    bell = CommitBell(ours.engine)
    waiting = asyncio.create_task(bell.wait(bell.generation, LONG_S))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert bell.generation == 0


async def test_another_process_commit_waits_for_the_poll(engines):
    ours, theirs = engines
    bell = CommitBell(ours.engine)
    seen = bell.generation
    started = time.monotonic()
    waiting = asyncio.create_task(bell.wait(seen, 0.5))
    await asyncio.to_thread(theirs.create, "job-theirs", SPEC)
    await waiting
    assert time.monotonic() - started >= 0.45
    assert bell.generation == seen


async def test_a_commit_before_the_wait_is_not_missed(engines):
    ours, _ = engines
    bell = CommitBell(ours.engine)
    seen = bell.generation
    await asyncio.to_thread(ours.create, "job-early", SPEC)
    started = time.monotonic()
    await bell.wait(seen, LONG_S)
    assert time.monotonic() - started < LONG_S / 2
