"""Collecting blobs that no row names, for stores that replicas share.

With one process per store (the local default) a service deletes a blob the moment the
last row naming it goes, and holds the blobs of its running uploads in memory. Replicas
sharing a bucket cannot know each other's running uploads, so there a delete leaves the
blob, and the `BlobCollector` removes unnamed blobs once they are older than a grace
period: a blob is (re)written by every commit, so one younger than the grace may belong to
an upload still running in another replica. One replica at a time collects, the holder
of the service's `<service>/blob-collector` lease (shared.leases); the same round aborts
multipart uploads begun longer ago than the grace (which must outlast the longest upload
and ingest). Each replica sweeps its own spool of uploads a crash left, at start."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import Engine

from shared.blobstore import BlobStore
from shared.leases import Lease, replica_name, run_while_holding

log = logging.getLogger(__name__)


class BlobCollector:
    def __init__(
        self,
        blobs: BlobStore,
        referenced: Callable[[set[str]], set[str]],
        grace_s: float,
    ) -> None:
        self._blobs = blobs
        self._referenced = referenced
        self._grace_s = grace_s

    def collect(self) -> tuple[int, int]:
        """One round: (blobs deleted, abandoned uploads aborted). A blob is looked at again
        just before it goes: one rewritten since the listing (an upload of the same content
        in another replica) stays."""
        aborted = self._blobs.abort_abandoned_uploads(self._grace_s)
        candidates = set(self._blobs.digests(older_than_s=self._grace_s))
        garbage = candidates - self._referenced(candidates) if candidates else set()
        deleted = sum(self._blobs.delete_if_older(d, self._grace_s) for d in garbage)
        if deleted or aborted:
            log.info(
                "collected unnamed blobs",
                extra={"blobs": deleted, "abandoned_uploads": aborted},
            )
        return deleted, aborted


def run_collector(
    collector: BlobCollector, engine: Engine, service: str, interval_s: float
) -> Callable[[], Awaitable[None]]:
    """Collect every `interval_s` in whichever replica of `service` holds the lease
    `<service>/blob-collector` (kept for three rounds, so a dead holder's collection moves
    on within that); returns its stop."""
    lease = Lease(engine, f"{service}/blob-collector", replica_name(), 3 * interval_s)

    async def round_() -> None:
        await asyncio.to_thread(collector.collect)

    task = asyncio.create_task(run_while_holding(lease, round_, interval_s))

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return stop
