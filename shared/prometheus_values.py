"""prometheus_client's multiprocess values, with the process id read once.

In multiprocess mode (`PROMETHEUS_MULTIPROC_DIR` set: the inference service's owner and
front ends) prometheus_client asks `os.getpid()` on every update of every value, to notice
a fork. glibc makes each a system call, and a request updates about fifteen values: the
profile of a front end under a no-op load put 8.5 % of its CPU there. `install` makes the
values ask a cached id instead, refreshed in a forked child (`os.register_at_fork`).

It must run before the process creates its first metric value: values made by two value
classes would write one file through two maps. The inference package runs it on import
(`services/inference/__init__.py`), before any of its modules, or shared ones, define
metrics."""

from __future__ import annotations

import os

from prometheus_client import values

_pid = os.getpid()


def _refresh() -> None:
    global _pid
    _pid = os.getpid()


def _cached_pid() -> int:
    return _pid


def install() -> None:
    """In multiprocess mode, make every value created from now on use the cached id."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        values.ValueClass = values.MultiProcessValue(process_identifier=_cached_pid)


os.register_at_fork(after_in_child=_refresh)
