"""The writes a training hands off (each epoch's checkpoint folder, its upload and the
job's event rows), done in order on one thread of their own, so an epoch never waits for
the disk, the blob store or the database.

At most `depth` writes wait; the training thread waits when it would hand off more (a
slow disk slows training rather than filling memory with snapshots). After the first
write that fails (ClaimLost: another worker holds the job now; a full disk) nothing
more is written: `failure` says it to the training's stop check, which stops at the next
batch, and `close` waits for what is queued and returns it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class WriteBehind:
    def __init__(self, depth: int = 2) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="training-writes")
        self._slots = threading.BoundedSemaphore(depth)
        self._failure: BaseException | None = None

    def submit(self, write: Callable[[], None]) -> None:
        """Queue `write` after those already queued."""
        self._slots.acquire()
        self._pool.submit(self._run, write)

    def _run(self, write: Callable[[], None]) -> None:
        try:
            if self._failure is None:
                write()
        except BaseException as error:  # noqa: BLE001 - kept for the training thread
            self._failure = error
        finally:
            self._slots.release()

    def failure(self) -> BaseException | None:
        return self._failure

    def close(self) -> BaseException | None:
        """Wait until every queued write has run; the first failure, if any."""
        self._pool.shutdown(wait=True)
        return self._failure
