"""Leases kept in a service's database, so that a loop meant to run once per installation
(the rollout controller, a sweeper) runs in exactly one replica at a time.

A lease is a row: its name, its holder, and when it expires. `Lease.try_hold` takes the
lease when it is free or expired, or renews it when this holder has it, in one
transaction (the row locked on PostgreSQL, the write lock on SQLite); anything else leaves
it with its holder. A holder that dies stops renewing, and another replica takes the
lease over once it expires. `generation` grows at each change of holder, so each holder's
term is told apart. Expiry is judged by the clock of whoever asks: replicas' clocks must
agree to well within the lease's length (NTP does far better)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from shared.db import as_utc

log = logging.getLogger(__name__)

LEASES_METADATA = MetaData()
LEASES = Table(
    "leases",
    LEASES_METADATA,
    Column("name", String(128), primary_key=True),
    Column("holder", String(256), nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


def replica_name() -> str:
    """This process as a lease holder: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    def __init__(
        self,
        engine: Engine,
        name: str,
        holder: str,
        duration_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self.name = name
        self.holder = holder
        self.duration = timedelta(seconds=duration_s)
        self._clock = clock
        self.generation = 0

    def try_hold(self) -> bool:
        """Take, renew or fail to take the lease; True while this holder has it."""
        now = self._clock()
        expires = now + self.duration
        try:
            with self._engine.begin() as connection:
                row = connection.execute(
                    select(LEASES).where(LEASES.c.name == self.name).with_for_update()
                ).one_or_none()
                if row is None:
                    connection.execute(
                        insert(LEASES).values(
                            name=self.name,
                            holder=self.holder,
                            generation=1,
                            acquired_at=now,
                            expires_at=expires,
                        )
                    )
                    self.generation = 1
                    return True
                if row.holder != self.holder and as_utc(row.expires_at) > now:
                    return False
                generation = row.generation if row.holder == self.holder else row.generation + 1
                values = {"holder": self.holder, "generation": generation, "expires_at": expires}
                if row.holder != self.holder:
                    values["acquired_at"] = now
                connection.execute(
                    update(LEASES).where(LEASES.c.name == self.name).values(**values)
                )
                self.generation = generation
                return True
        except IntegrityError:
            # Another replica inserted the first row at the same moment: it holds it.
            return False

    def release(self) -> None:
        """Give the lease up at once (a clean stop), if this holder has it; the row stays,
        so the next holder's generation still grows."""
        with self._engine.begin() as connection:
            connection.execute(
                update(LEASES)
                .where(LEASES.c.name == self.name, LEASES.c.holder == self.holder)
                .values(expires_at=self._clock())
            )

    def holder_now(self) -> tuple[str, int] | None:
        """Who holds the lease now and in which generation, or None when nobody does."""
        with self._engine.connect() as connection:
            row = connection.execute(select(LEASES).where(LEASES.c.name == self.name)).one_or_none()
        if row is None or as_utc(row.expires_at) <= self._clock():
            return None
        return row.holder, row.generation


async def run_while_holding(
    lease: Lease, work: Callable[[], Awaitable[None]], interval_s: float
) -> None:
    """Every `interval_s`: renew or take the lease, and run `work` only while it is held.
    Runs until cancelled, then gives the lease up."""
    held = False
    try:
        while True:
            try:
                now_held = await asyncio.to_thread(lease.try_hold)
            except Exception:  # noqa: BLE001 - the database away: not held until it is back
                log.exception("lease check failed", extra={"lease": lease.name})
                now_held = False
            if now_held != held:
                held = now_held
                log.info(
                    "lease taken" if held else "lease lost",
                    extra={"lease": lease.name, "holder": lease.holder},
                )
            if held:
                try:
                    await work()
                except Exception:  # noqa: BLE001 - one bad round must not end the loop
                    log.exception("leased work failed", extra={"lease": lease.name})
            await asyncio.sleep(interval_s)
    finally:
        if held:
            try:
                await asyncio.to_thread(lease.release)
            except Exception:  # noqa: BLE001 - expiry frees it anyway
                log.exception("lease not released", extra={"lease": lease.name})
