"""Prometheus metrics of the data service: rows stored and rows dropped as bad, per dataset.

Counted when an upload creates a new dataset version (an identical upload adds nothing).
An upload refused for too many bad rows stores nothing and counts nothing here; its
refusal is an INVALID_ARGUMENT on the RPC metrics."""

from __future__ import annotations

from prometheus_client import Counter

ROWS_INGESTED = Counter(
    "tfmesh_data_rows_ingested_total",
    "Rows stored in new dataset versions, by dataset.",
    ["dataset"],
)
ROWS_REJECTED = Counter(
    "tfmesh_data_rows_rejected_total",
    "Rows dropped as bad (unparsable, missing or unknown values) from new dataset versions.",
    ["dataset"],
)
