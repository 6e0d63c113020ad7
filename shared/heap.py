"""A long-lived server's heap and the garbage collector.

A server imports large libraries (TensorFlow, JAX, protobuf descriptors) and loads models
before its first request: hundreds of thousands of objects that live as long as the
process. Python's cyclic collector scans every tracked object on each full collection
(about 0.2 s with TensorFlow imported), and objects that requests leave alive (the
feedback log's recent predictions) trigger such collections every few seconds under load:
a tenth of the CPU a no-op REST request took (the overhead bench).

`freeze_heap` moves every object alive at the end of start-up to the collector's permanent
generation, which it never scans. Cyclic garbage among frozen objects is not collected, so
a process that unloads something large (a model version) calls `collect_released`, which
thaws the heap, collects once, and freezes it again; `freeze_loaded` adds what a load
made. Both do nothing in a process that never froze its heap (tests, tools)."""

from __future__ import annotations

import gc


def freeze_heap() -> None:
    """Collect what is garbage now, then exempt every surviving object from later scans."""
    gc.collect()
    gc.freeze()


def freeze_loaded() -> None:
    """After a large load in a frozen process: exempt the new objects too. Cyclic garbage
    the load left is collected by the next `collect_released`."""
    if gc.get_freeze_count():
        gc.freeze()


def collect_released() -> None:
    """After an unload in a frozen process: collect what it released (one full scan), and
    freeze the rest again."""
    if gc.get_freeze_count():
        gc.unfreeze()
        freeze_heap()
