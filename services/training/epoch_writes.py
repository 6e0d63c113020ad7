"""What a job's final training writes at each epoch's end, behind the training
(services.training.write_behind): every epoch's event; a checkpoint at the end of the
first epoch `interval_s` or more after the last checkpoint, and at the end of the last
epoch (early stopping's included). Each epoch's arrays are still copied on the training
thread, so that a shutdown (not a cancel, nor a lost claim) writes the last complete
epoch's checkpoint before the job goes back to the queue: only a killed worker loses the
epochs since its last checkpoint, which a resume then trains (and reports) again."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from services.training.checkpoints import Checkpoint, CheckpointArrays, CheckpointDir
from services.training.jobs import SHUTDOWN, StopRequested
from services.training.write_behind import WriteBehind

if TYPE_CHECKING:
    from services.training.trainer import Reporter, StopCheck


class FinalEpochWrites:
    def __init__(
        self,
        checkpoints: CheckpointDir,
        reporter: Reporter,
        epochs: int,
        interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._writes = WriteBehind()
        self._checkpoints = checkpoints
        self._reporter = reporter
        self._epochs = epochs
        self._interval_s = interval_s
        self._clock = clock
        self._lap = self._checkpointed = clock()
        # The last epoch's arrays when its checkpoint was not written.
        self._unwritten: CheckpointArrays | None = None
        self.written: list[Checkpoint] = []

    def stop_check(self, should_stop: StopCheck) -> StopCheck:
        return self._writes.stop_check(should_stop)

    def epoch_ended(self, snapshot: CheckpointArrays, metrics: dict[str, float]) -> None:
        """Queue the epoch's event, after its checkpoint when one is due."""
        now = self._clock()
        seconds, self._lap = now - self._lap, now
        epoch = snapshot.state.epochs_completed
        reporter = self._reporter
        event = functools.partial(reporter.epoch_ended, 0, epoch, self._epochs, metrics, seconds)
        if snapshot.state.finished or now - self._checkpointed >= self._interval_s:
            self._checkpointed, self._unwritten = now, None
            self._writes.submit(functools.partial(self._checkpoint, snapshot, event))
        else:
            self._unwritten = snapshot
            self._writes.submit(event)

    def _checkpoint(self, snapshot: CheckpointArrays, then: Callable[[], None] | None) -> None:
        self.written.append(self._checkpoints.write(snapshot))
        self._reporter.checkpoint_saved(self.written[-1])
        if then is not None:
            then()

    def close(self, stopped: BaseException | None = None) -> BaseException | None:
        """Wait for the queued writes (after a shutdown, the last epoch's checkpoint
        too); the first that failed, if any."""
        shutdown = isinstance(stopped, StopRequested) and stopped.reason == SHUTDOWN
        if shutdown and self._unwritten is not None:
            self._writes.submit(functools.partial(self._checkpoint, self._unwritten, None))
        return self._writes.close()
