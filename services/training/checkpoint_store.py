"""Each job's latest checkpoint in the blob store, so that the job resumes on any worker.

After a worker writes a checkpoint folder (services.training.checkpoints) it sends the
folder up as one tar blob (content addressed, verified like every blob) and records the
blob's digest and epoch on the job row, while it still holds the job. A worker that
claims the job later, on any machine, restores that checkpoint into its own job folder
before training, unless its folder already holds one as recent; a corrupt blob is
DataLoss and is never trained on."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from services.training.checkpoints import LATEST_FILE, Checkpoint, CheckpointDir
from services.training.jobs import Claim
from services.training.store import JobStore
from shared.blobstore import BlobStore, fsync_path


class CheckpointMirror:
    def __init__(self, blobs: BlobStore, store: JobStore) -> None:
        self._blobs = blobs
        self._store = store

    def publish(self, claim: Claim, job_id: str, checkpoint: Checkpoint) -> str:
        """Send a checkpoint up and name it on the job; returns the blob's digest."""
        writer = self._blobs.writer()
        try:
            with tarfile.open(fileobj=writer, mode="w|") as archive:  # type: ignore[call-overload]
                archive.add(checkpoint.path, arcname=checkpoint.path.name)
            digest = writer.commit()
        except BaseException:
            writer.abort()
            raise
        self._store.record_checkpoint(claim, job_id, checkpoint.state.epochs_completed, digest)
        return digest

    def restore(self, job_id: str, root: Path) -> int | None:
        """Bring the job's checkpoint from the blob store into `root` when `root` has none
        as recent; returns the epoch restored, or None when nothing was needed."""
        recorded = self._store.checkpoint_of(job_id)
        if recorded is None:
            return None
        epoch, digest = recorded
        local = CheckpointDir(root).latest()
        if local is not None and local.state.epochs_completed >= epoch:
            return None
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".restoring-"))
        try:
            with self._blobs.local_copy(digest) as tar_path, tarfile.open(tar_path) as archive:
                archive.extractall(staging, filter="data")
            (folder,) = list(staging.iterdir())
            final = root / folder.name
            shutil.rmtree(final, ignore_errors=True)
            os.replace(folder, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        pointer = root / f".{LATEST_FILE}-restored"
        pointer.write_text(final.name)
        os.replace(pointer, root / LATEST_FILE)
        fsync_path(root)
        return epoch
