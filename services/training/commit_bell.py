"""Wakes this process's job watchers as soon as this process commits to the job database.

A watch stream reads a job's events, then waits for more: for the commits of this
process (its workers' epochs, checkpoints and state changes) the bell wakes it at once;
commits of other processes (a worker fleet, another replica) it sees at its next poll.
Every commit rings (the commit event of SQLAlchemy's engine knows no job), so a woken
watcher may find nothing new and wait again; a generation count makes a commit between a
watcher's read and its wait wake it all the same."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from sqlalchemy import Connection, Engine, event


class CommitBell:
    def __init__(self, engine: Engine) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        event.listen(engine, "commit", self._ring)

    @property
    def generation(self) -> int:
        """Commits so far: read it before reading the database, pass it to `wait`."""
        return self._generation

    def _ring(self, _connection: Connection) -> None:
        with self._lock:
            self._generation += 1
            waiters = list(self._waiters)
        for loop, woken in waiters:
            # RuntimeError: that watcher's loop has closed.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(woken.set)

    async def wait(self, seen: int, timeout_s: float) -> None:
        """Return once this process has committed after generation `seen`, or after
        `timeout_s` (the poll for other processes' commits)."""
        woken = asyncio.Event()
        waiter = (asyncio.get_running_loop(), woken)
        with self._lock:
            if self._generation != seen:
                return
            self._waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout_s)
        finally:
            with self._lock:
                self._waiters.discard(waiter)
