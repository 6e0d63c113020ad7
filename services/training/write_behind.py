"""The writes a training hands off (checkpoint folders, their upload and the job's event
rows), done in order on one thread of their own, so that an epoch waits for the disk,
the blob store or the database only when `depth` writes are already waiting (a slow disk
then slows training rather than filling memory with snapshots). A worker killed
meanwhile loses those writes: it resumes from the last checkpoint written.

After the first write that fails (ClaimLost: another worker holds the job now; a full
disk) nothing more is written: `stop_check` stops the training at its next batch, and
`close` waits for what is queued and returns the failure."""

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

    def stop_check(self, should_stop: Callable[[], str | None]) -> Callable[[], str | None]:
        """`should_stop`, and a stop once a write has failed."""

        def check() -> str | None:
            if self._failure is not None:
                return "a checkpoint or progress write failed"
            return should_stop()

        return check

    def close(self) -> BaseException | None:
        """Wait until every queued write has run; the first failure, if any."""
        self._pool.shutdown(wait=True)
        return self._failure
