"""Wakes this process's job watchers as soon as this process commits a change to the job
database.

A watch stream reads a job's events, then waits for more: for the changes this process
commits (its workers' epochs, checkpoints and state changes) the bell wakes it at once;
changes of other processes (a worker fleet, another replica) it sees at its next poll.
The bell rings after a session's commit has completed (SQLAlchemy's `after_commit`; the
engine's own commit event fires before the commit is visible to other connections), and
only for sessions that wrote rows, so a watcher's own reads never ring it. A commit does
not say which job it changed: every watcher of the engine wakes and re-reads, at most
once per `MIN_READ_INTERVAL_S`. A generation count makes a commit between a watcher's
read and its wait wake it all the same."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

# The most often one watcher re-reads the database however often this process commits.
MIN_READ_INTERVAL_S = 0.02
_WROTE = "tfmesh.commit_bell.wrote"
_BELLS: weakref.WeakKeyDictionary[Engine, weakref.WeakSet[CommitBell]] = weakref.WeakKeyDictionary()


class CommitBell:
    def __init__(self, engine: Engine) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        _BELLS.setdefault(engine, weakref.WeakSet()).add(self)

    @property
    def generation(self) -> int:
        """Commits so far: read it before reading the database, pass it to `wait`."""
        return self._generation

    def ring(self) -> None:
        with self._lock:
            self._generation += 1
            waiters = list(self._waiters)
        for loop, woken in waiters:
            # RuntimeError: that watcher's loop has closed.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(woken.set)

    async def wait(self, seen: int, timeout_s: float) -> None:
        """Return once this process has committed after generation `seen`, or after
        `timeout_s` (the poll for other processes' commits); then no sooner than
        `MIN_READ_INTERVAL_S` after the call."""
        loop = asyncio.get_running_loop()
        earliest = loop.time() + MIN_READ_INTERVAL_S
        woken = asyncio.Event()
        waiter = (loop, woken)
        with self._lock:
            if self._generation == seen:
                self._waiters.add(waiter)
            else:
                woken.set()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await woken.wait()
        finally:
            with self._lock:
                self._waiters.discard(waiter)
        await asyncio.sleep(max(0.0, earliest - loop.time()))


@event.listens_for(Session, "after_flush")
def _note_writes(session: Session, _context: object) -> None:
    if session.new or session.dirty or session.deleted:
        session.info[_WROTE] = True


@event.listens_for(Session, "after_commit")
def _ring_bells(session: Session) -> None:
    if not session.info.pop(_WROTE, False):
        return
    bind = session.bind
    engine = bind if isinstance(bind, Engine) or bind is None else bind.engine
    for bell in list(_BELLS.get(engine, ())) if engine is not None else ():
        bell.ring()
