"""Writes behind the training: in order, bounded, and the first failure stops the rest and
reaches the training thread; a trainer whose job was taken by another worker (ClaimLost
from a write) stops within a batch and says so."""

from __future__ import annotations

import threading
import time

import pytest

from services.training.jobs import ClaimLost
from services.training.trainer import Trainer
from services.training.write_behind import WriteBehind
from tests.training.test_trainer import Recorder, digits_spec


def test_writes_run_in_order_and_a_failure_stops_the_rest() -> None:
    writes = WriteBehind(depth=2)
    done: list[int] = []
    for number in range(5):
        writes.submit(lambda number=number: done.append(number))
    assert writes.close() is None and done == [0, 1, 2, 3, 4]

    failing = WriteBehind()
    failing.submit(lambda: done.append(5))
    failing.submit(lambda: (_ for _ in ()).throw(OSError("disk full")))
    failing.submit(lambda: done.append(7))
    failure = failing.close()
    assert isinstance(failure, OSError) and done[-1] == 5, "nothing after the failure"


def test_the_training_waits_when_depth_writes_are_pending() -> None:
    writes = WriteBehind(depth=1)
    release = threading.Event()
    writes.submit(release.wait)
    submitted = threading.Event()
    waiting = threading.Thread(target=lambda: (writes.submit(lambda: None), submitted.set()))
    waiting.start()
    assert not submitted.wait(0.3), "a second write waits for the first's slot"
    release.set()
    assert submitted.wait(5)
    waiting.join(5)
    assert writes.close() is None


class TakenAway(Recorder):
    """The job store's answer once another worker holds the job: ClaimLost."""

    def __init__(self, lost_at: int) -> None:
        super().__init__()
        self.lost_at = lost_at

    def checkpoint_saved(self, checkpoint) -> None:  # type: ignore[no-untyped-def]
        if checkpoint.state.epochs_completed >= self.lost_at:
            # The store takes a moment, as a database round trip would.
            time.sleep(0.05)
            raise ClaimLost("job-a")
        super().checkpoint_saved(checkpoint)


def test_a_claim_lost_in_a_write_stops_the_training_and_is_raised(digits, tmp_path) -> None:
    reporter = TakenAway(lost_at=2)
    batches = [0]

    def counting() -> None:
        batches[0] += 1

    with pytest.raises(ClaimLost):
        Trainer(digits_spec(30), digits, tmp_path, reporter, counting).run()
    assert [epoch for _, epoch, _ in reporter.epochs] == [1], "no event after the lost claim"
    assert "evaluate" not in reporter.phases
    per_epoch = -(-len(digits.x_train) // 32)
    assert batches[0] < 6 * per_epoch, "the training stopped soon after the failed write"
