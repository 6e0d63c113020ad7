"""`shared.leases` on SQLite and on a real PostgreSQL: one holder at a time, renewal,
takeover after expiry with a new generation, release, and racing replicas."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from shared.db import make_engine
from shared.leases import LEASES_METADATA, Lease, run_while_holding


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def engine(database_url: str) -> Engine:
    engine = make_engine(database_url)
    LEASES_METADATA.create_all(engine)
    yield engine
    engine.dispose()


def test_one_holder_renews_and_another_takes_over_after_expiry(engine: Engine) -> None:
    clock = Clock()
    first = Lease(engine, "controller", "replica-a", 10, clock)
    second = Lease(engine, "controller", "replica-b", 10, clock)

    assert first.try_hold() and first.generation == 1
    assert not second.try_hold()
    clock.advance(8)
    assert first.try_hold() and first.generation == 1
    clock.advance(8)
    # Renewed at 8 s for 10 s: still the first's at 16 s.
    assert not second.try_hold()
    assert second.holder_now() == ("replica-a", 1)
    clock.advance(3)
    assert second.holder_now() is None
    assert second.try_hold() and second.generation == 2
    assert not first.try_hold()
    assert first.holder_now() == ("replica-b", 2)


def test_release_frees_the_lease_at_once(engine: Engine) -> None:
    clock = Clock()
    first = Lease(engine, "sweeper", "replica-a", 60, clock)
    second = Lease(engine, "sweeper", "replica-b", 60, clock)
    assert first.try_hold()
    second.release()  # not the holder: nothing happens
    assert not second.try_hold()
    first.release()
    assert second.try_hold()


def test_leases_of_different_names_are_independent(engine: Engine) -> None:
    assert Lease(engine, "one", "a", 60).try_hold()
    assert Lease(engine, "two", "b", 60).try_hold()


def test_racing_replicas_get_exactly_one_holder(engine: Engine) -> None:
    winners: list[str] = []
    start = threading.Barrier(6)

    def race(name: str) -> None:
        lease = Lease(engine, "race", name, 60)
        start.wait()
        if lease.try_hold():
            winners.append(name)

    threads = [threading.Thread(target=race, args=(f"replica-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(winners) == 1


async def test_work_runs_only_in_the_holder_and_moves_when_it_stops(engine: Engine) -> None:
    rounds: dict[str, int] = {"a": 0, "b": 0}

    def worker(name: str):  # type: ignore[no-untyped-def]
        async def work() -> None:
            rounds[name] += 1

        return work

    first = asyncio.create_task(
        run_while_holding(Lease(engine, "loop", "a", 1.0), worker("a"), 0.05)
    )
    await asyncio.sleep(0.3)
    second = asyncio.create_task(
        run_while_holding(Lease(engine, "loop", "b", 1.0), worker("b"), 0.05)
    )
    await asyncio.sleep(0.5)
    assert rounds["a"] > 0 and rounds["b"] == 0
    # A clean stop gives the lease up: the other replica takes over on its next round.
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    before = rounds["a"]
    await asyncio.sleep(0.5)
    assert rounds["b"] > 0 and rounds["a"] == before
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
