"""Labelled Prometheus children, looked up once per label set.

prometheus_client's `labels()` takes a lock and builds a key on every call (about a
microsecond); a request path that counts and times itself calls it several times.
`child(METRIC, *values)` keeps each child in a dict instead. The callers already bound
their label values (route templates, model names that exist, status codes), so this dict
holds no more entries than prometheus_client's own."""

from __future__ import annotations

from typing import Any

from prometheus_client.metrics import MetricWrapperBase

_children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}


def child(metric: MetricWrapperBase, *values: str) -> Any:
    """`metric.labels(*values)`, from the dict after the first time."""
    key = (metric, values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    return found
