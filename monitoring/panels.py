"""The queries of the generated Grafana dashboards, ready for a plain Prometheus: every
target of every panel (rows' nested panels included) with Grafana's variables replaced,
so that tests can check that each one parses and returns data.

Template variables (`$model`, `${version}`, `[[x]]`, any custom one) become `.+`, which is
what "All" stands for on these dashboards and is valid because the dashboards use them in
regex matchers only; the interval built-ins (`$__rate_interval`, `$__interval`,
`$__range`) become the given window."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from monitoring.dashboards import OUTPUT_DIR

ANY_VALUE = ".+"
INTERVALS = ("__rate_interval", "__interval", "__range")
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")


def dashboard_files() -> list[Path]:
    """The generated dashboards' JSON files, sorted by path."""
    return sorted(OUTPUT_DIR.glob("*.json"))


def substitute(expr: str, window: str = "1m") -> str:
    """`expr` with Grafana's variables replaced; ValueError for a built-in (`$__x`) that
    has no stand-in here, rather than a silently wrong query."""

    def replace(found: re.Match[str]) -> str:
        name = next(group for group in found.groups() if group)
        if name in INTERVALS:
            return window
        if name.startswith("__"):
            raise ValueError(f"no stand-in for Grafana's built-in ${name} in {expr!r}")
        return ANY_VALUE

    return VARIABLE.sub(replace, expr)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


def panel_queries(dashboard: dict[str, Any], window: str = "1m") -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel of `dashboard` (a dashboard's
    JSON model), in panel order, variables substituted (`window` for the intervals)."""
    return [
        (panel["title"], substitute(target["expr"], window))
        for panel in _panels(dashboard.get("panels") or [])
        for target in panel.get("targets") or []
    ]
