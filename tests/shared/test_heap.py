"""shared.heap, in a child process of its own: freezing pytest's heap would keep every
later test's cyclic garbage alive."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHECKS = textwrap.dedent(
    """
    import gc
    import weakref

    from shared.heap import collect_released, freeze_heap, freeze_loaded


    class Node:
        pass


    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return a


    # A process that never froze: both hooks leave the collector alone.
    freeze_loaded()
    collect_released()
    assert gc.get_freeze_count() == 0

    model = cycle()
    freeze_heap()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    # Unloaded after the freeze: a plain collection never scans it.
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is not None, "a frozen cycle was collected"
    collect_released()
    assert gone() is None, "collect_released left the released cycle"
    assert gc.get_freeze_count() > 0, "the heap is frozen again"

    loaded = [cycle() for _ in range(1000)]
    before = gc.get_freeze_count()
    freeze_loaded()
    assert gc.get_freeze_count() >= before + 2000
    print("ok")
    """
)


def test_a_frozen_heap_skips_frozen_cycles_until_an_unload_collects_them():
    finished = subprocess.run(
        [sys.executable, "-c", CHECKS], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "ok"
