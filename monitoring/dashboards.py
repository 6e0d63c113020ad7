"""Grafana dashboards as code: the platform overview, inference per model and version,
training and data, built as plain dicts over the metric contract's names (#11) and
written as JSON to k8s/components/monitoring/dashboards/, which the monitoring component
ships to Grafana's dashboard sidecar.

`python -m monitoring.dashboards` writes the files; `--check` exits 1 naming the ones that
regenerating would change. Every query reads the data source chosen in `${datasource}`;
the inference dashboard's `model` and `version` variables are used only in regex matchers
(`=~`), so that "All" (`.+`) and multi-value selections work."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitoring.generated import REPO, main

OUTPUT_DIR = REPO / "k8s" / "components" / "monitoring" / "dashboards"

Panel = dict[str, Any]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WINDOW = "[$__rate_interval]"
GRID_WIDTH = 24
# The codes the SLOs count as server-side errors (metric contract): overload refusals
# (RESOURCE_EXHAUSTED) included, since the caller saw a failure.
SERVER_ERRORS = "UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|DATA_LOSS|RESOURCE_EXHAUSTED"
TFMESH_JOBS = 'job=~"tfmesh-.+"'
MODEL_VERSION = 'model=~"$model", version=~"$version"'
# Inference SLO: 99% of requests answered within 0.25 s, 99.5% not an error.
LATENCY_SLO_S = 0.25
ERROR_BUDGET = 0.005
# Drift thresholds: a PSI above 0.25 is a significant shift; L-infinity above 0.3.
PSI_THRESHOLD = 0.25
LINF_THRESHOLD = 0.3


def selector(metric: str, *matchers: str) -> str:
    return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric


def aggregate(how: str, by: str, metric: str, *matchers: str) -> str:
    return f"{how} by ({by}) ({selector(metric, *matchers)})"


def sum_rate(by: str, metric: str, *matchers: str) -> str:
    return f"sum by ({by}) (rate({selector(metric, *matchers)}{WINDOW}))"


def sum_increase(by: str, metric: str, *matchers: str) -> str:
    return f"sum by ({by}) (increase({selector(metric, *matchers)}{WINDOW}))"


def quantile(q: float, by: str, histogram: str, *matchers: str) -> str:
    return f"histogram_quantile({q}, {sum_rate(f'{by}, le', f'{histogram}_bucket', *matchers)})"


def mean(by: str, histogram: str, *matchers: str) -> str:
    return (
        f"{sum_rate(by, f'{histogram}_sum', *matchers)}"
        f" / {sum_rate(by, f'{histogram}_count', *matchers)}"
    )


def zero_filled(part: str, whole: str) -> str:
    """`part`, with 0 for every label set of `whole` that `part` lacks: a counter of
    failures has no series until the first one, and the panel should show 0, not nothing."""
    return f"({part} or {whole} * 0)"


def error_ratio(by: str, counter: str, code_label: str, *matchers: str) -> str:
    errors = sum_rate(by, counter, *matchers, f'{code_label}=~"{SERVER_ERRORS}"')
    total = sum_rate(by, counter, *matchers)
    return f"{zero_filled(errors, total)} / {total}"


def target(expr: str, legend: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True}


def threshold_line(value: float) -> dict[str, Any]:
    """Field config that draws `value` as a red dashed line (an SLO or alert threshold)."""
    return {
        "custom": {"thresholdsStyle": {"mode": "dashed"}},
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": value}],
        },
    }


def timeseries(
    title: str,
    description: str,
    unit: str,
    targets: list[dict[str, Any]],
    *,
    width: int = GRID_WIDTH // 2,
    stack: bool = False,
    threshold: float | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> Panel:
    custom: dict[str, Any] = {"fillOpacity": 10, "showPoints": "never", "lineWidth": 1}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    defaults: dict[str, Any] = {"unit": unit, "min": 0, "custom": custom}
    if threshold is not None:
        line = threshold_line(threshold)
        defaults["custom"].update(line["custom"])
        defaults["thresholds"] = line["thresholds"]
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"w": width, "h": 8},
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title: str, description: str, expr: str, legend: str) -> Panel:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"w": GRID_WIDTH, "h": 4},
        "targets": [{**target(expr, legend), "refId": "A"}],
        "fieldConfig": {
            "defaults": {
                "unit": "short",
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
                },
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
        },
    }


def row(title: str, panels: list[Panel]) -> Panel:
    """An open row: a header over `panels` (which `layout` places after it)."""
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"w": GRID_WIDTH, "h": 1},
        "panels": panels,
    }


def layout(items: list[Panel]) -> list[Panel]:
    """Ids and grid positions in reading order: panels flow left to right in lines
    GRID_WIDTH wide. A row starts a new line, and its panels follow it at the top level
    (where Grafana keeps the panels of an open row)."""
    placed: list[Panel] = []
    next_id = 1
    x = y = height = 0

    def place(panel: Panel) -> Panel:
        nonlocal next_id, x, y, height
        w, h = panel["gridPos"]["w"], panel["gridPos"]["h"]
        if x + w > GRID_WIDTH:
            x, y, height = 0, y + height, 0
        positioned = {"id": next_id, **panel, "gridPos": {"x": x, "y": y, "w": w, "h": h}}
        next_id += 1
        x, height = x + w, max(height, h)
        return positioned

    for item in items:
        if item["type"] != "row":
            placed.append(place(item))
            continue
        x, y, height = 0, y + height, 0
        placed.append(place({**item, "panels": []}))
        x, y, height = 0, y + height, 0
        placed += [place(child) for child in item["panels"]]
    return placed


DATASOURCE_VARIABLE = {
    "name": "datasource",
    "label": "Data source",
    "type": "datasource",
    "query": "prometheus",
    "current": {},
    "hide": 0,
    "includeAll": False,
    "multi": False,
    "options": [],
    "refresh": 1,
    "regex": "",
}


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-value variable from `label_values(...)`, defaulting to All; All stands for
    `.+` rather than a list of every value, so a long list never bloats the queries."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "includeAll": True,
        "allValue": ".+",
        "multi": True,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    items: list[Panel],
    variables: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["tfmesh"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "version": 1,
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [DATASOURCE_VARIABLE, *(variables or [])]},
        "panels": layout(items),
    }


def overview() -> dict[str, Any]:
    return dashboard(
        "tfmesh-overview",
        "tfmesh / Platform overview",
        "Every tfmesh service: scrape targets, gRPC traffic, errors and latency, and the "
        "gateway's HTTP traffic.",
        [
            stat(
                "Targets up",
                "Scrape targets answering, per service (job tfmesh-<service>).",
                f"sum by (job) (up{{{TFMESH_JOBS}}})",
                "{{job}}",
            ),
            timeseries(
                "gRPC requests per service",
                "RPCs handled per second by each service's servers, every code.",
                "reqps",
                [target(sum_rate("job", "grpc_server_handled_total", TFMESH_JOBS), "{{job}}")],
            ),
            timeseries(
                "gRPC server-error ratio per service",
                f"Share of RPCs ending in a server-side error ({SERVER_ERRORS}).",
                "percentunit",
                [
                    target(
                        error_ratio("job", "grpc_server_handled_total", "grpc_code", TFMESH_JOBS),
                        "{{job}}",
                    )
                ],
                threshold=ERROR_BUDGET,
            ),
            timeseries(
                "Gateway HTTP requests per handler",
                "REST requests answered per second, by route template.",
                "reqps",
                [
                    target(
                        sum_rate("handler", "http_requests_total", 'job="tfmesh-gateway"'),
                        "{{handler}}",
                    )
                ],
            ),
            timeseries(
                "gRPC p99 latency per service",
                "99th percentile of server-side RPC handling time.",
                "s",
                [
                    target(
                        quantile(0.99, "job", "grpc_server_handling_seconds", TFMESH_JOBS),
                        "{{job}}",
                    )
                ],
            ),
        ],
    )


def inference() -> dict[str, Any]:
    per_version = "model, version"
    legend = "{{model}} v{{version}}"
    return dashboard(
        "tfmesh-inference",
        "tfmesh / Inference",
        "Inference per model and version: traffic, latency, batching, rollout and drift.",
        [
            row(
                "Traffic",
                [
                    timeseries(
                        "Requests by version",
                        "Inference requests per second, every code.",
                        "reqps",
                        [
                            target(
                                sum_rate(
                                    per_version, "tfmesh_inference_requests_total", MODEL_VERSION
                                ),
                                legend,
                            )
                        ],
                    ),
                    timeseries(
                        "Server-error ratio by version",
                        f"Share of requests ending in a server-side error ({SERVER_ERRORS}); "
                        "the line is the 0.5% error budget.",
                        "percentunit",
                        [
                            target(
                                error_ratio(
                                    per_version,
                                    "tfmesh_inference_requests_total",
                                    "code",
                                    MODEL_VERSION,
                                ),
                                legend,
                            )
                        ],
                        threshold=ERROR_BUDGET,
                    ),
                    timeseries(
                        "Latency p50 and p99 by version",
                        "Request duration percentiles; the line is the 0.25 s latency SLO.",
                        "s",
                        [
                            target(
                                quantile(
                                    q,
                                    per_version,
                                    "tfmesh_inference_request_duration_seconds",
                                    MODEL_VERSION,
                                ),
                                f"p{round(q * 100)} {legend}",
                            )
                            for q in (0.5, 0.99)
                        ],
                        width=GRID_WIDTH,
                        threshold=LATENCY_SLO_S,
                    ),
                ],
            ),
            row(
                "Batching",
                [
                    timeseries(
                        "Queued rows",
                        "Rows waiting for a batch, and the version's queue limit (requests "
                        "beyond it are refused with RESOURCE_EXHAUSTED).",
                        "short",
                        [
                            target(
                                aggregate(
                                    "sum",
                                    per_version,
                                    "tfmesh_inference_queued_rows",
                                    MODEL_VERSION,
                                ),
                                f"queued {legend}",
                            ),
                            target(
                                aggregate(
                                    "sum",
                                    per_version,
                                    "tfmesh_inference_queue_capacity_rows",
                                    MODEL_VERSION,
                                ),
                                f"limit {legend}",
                            ),
                        ],
                    ),
                    timeseries(
                        "Queue wait and compute p99",
                        "99th percentile of the time a request waits for its batch, and of "
                        "the model's time on a batch.",
                        "s",
                        [
                            target(
                                quantile(
                                    0.99,
                                    per_version,
                                    "tfmesh_inference_queue_seconds",
                                    MODEL_VERSION,
                                ),
                                f"queue {legend}",
                            ),
                            target(
                                quantile(
                                    0.99,
                                    per_version,
                                    "tfmesh_inference_compute_seconds",
                                    MODEL_VERSION,
                                ),
                                f"compute {legend}",
                            ),
                        ],
                    ),
                    timeseries(
                        "Batch and padding rows (average)",
                        "Rows per batch the model ran, and how many of them were padding.",
                        "short",
                        [
                            target(
                                mean(per_version, "tfmesh_inference_batch_rows", MODEL_VERSION),
                                f"batch {legend}",
                            ),
                            target(
                                mean(per_version, "tfmesh_inference_padding_rows", MODEL_VERSION),
                                f"padding {legend}",
                            ),
                        ],
                        width=GRID_WIDTH,
                    ),
                ],
            ),
            row(
                "Rollout",
                [
                    timeseries(
                        "Route weight by version",
                        "Share of un-pinned traffic routed to each version.",
                        "percentunit",
                        [
                            target(
                                aggregate(
                                    "avg",
                                    per_version,
                                    "tfmesh_inference_route_weight_ratio",
                                    MODEL_VERSION,
                                ),
                                legend,
                            )
                        ],
                    ),
                    timeseries(
                        "Loads, unloads and alias swaps",
                        "Versions loaded (or failing to load), unloaded, and aliases moved to "
                        "another version, per interval.",
                        "short",
                        [
                            target(
                                sum_increase(
                                    f"{per_version}, outcome",
                                    "tfmesh_inference_model_loads_total",
                                    MODEL_VERSION,
                                ),
                                f"load {{{{outcome}}}} {legend}",
                            ),
                            target(
                                sum_increase(
                                    per_version,
                                    "tfmesh_inference_model_unloads_total",
                                    MODEL_VERSION,
                                ),
                                f"unload {legend}",
                            ),
                            target(
                                sum_increase(
                                    "model, alias",
                                    "tfmesh_inference_alias_swaps_total",
                                    'model=~"$model"',
                                ),
                                "{{model}} {{alias}} moved",
                            ),
                        ],
                    ),
                ],
            ),
            row(
                "Drift",
                [
                    timeseries(
                        "Drift score per feature",
                        "Population stability index of numeric features (significant above "
                        "0.25) and L-infinity distance of categorical ones (above 0.3), "
                        "once a version has sampled 100 rows.",
                        "short",
                        [
                            target(
                                aggregate(
                                    "max",
                                    f"{per_version}, feature, statistic",
                                    "tfmesh_inference_drift_score",
                                    MODEL_VERSION,
                                ),
                                "{{feature}} {{statistic}} " + legend,
                            )
                        ],
                        width=GRID_WIDTH,
                        threshold=PSI_THRESHOLD,
                        overrides=[
                            {
                                "matcher": {"id": "byRegexp", "options": ".* linf .*"},
                                "properties": [
                                    {
                                        "id": "thresholds",
                                        "value": threshold_line(LINF_THRESHOLD)["thresholds"],
                                    }
                                ],
                            }
                        ],
                    ),
                ],
            ),
        ],
        [
            query_variable(
                "model", "Model", "label_values(tfmesh_inference_requests_total, model)"
            ),
            query_variable(
                "version",
                "Version",
                'label_values(tfmesh_inference_requests_total{model=~"$model"}, version)',
            ),
        ],
    )


def training() -> dict[str, Any]:
    return dashboard(
        "tfmesh-training",
        "tfmesh / Training",
        "Training jobs by state, how they end, and how long an epoch takes.",
        [
            timeseries(
                "Jobs by state",
                "Jobs now in each state.",
                "short",
                [target(aggregate("sum", "state", "tfmesh_training_jobs"), "{{state}}")],
                stack=True,
            ),
            timeseries(
                "Finished jobs by state",
                "Jobs ending per second, by final state.",
                "ops",
                [target(sum_rate("state", "tfmesh_training_jobs_finished_total"), "{{state}}")],
            ),
            timeseries(
                "Epoch time p50 and p99",
                "Wall time of one training epoch, per model.",
                "s",
                [
                    target(
                        quantile(q, "model", "tfmesh_training_epoch_seconds"),
                        f"p{round(q * 100)} {{{{model}}}}",
                    )
                    for q in (0.5, 0.99)
                ],
                width=GRID_WIDTH,
            ),
        ],
    )


def data() -> dict[str, Any]:
    ingested = sum_rate("dataset", "tfmesh_data_rows_ingested_total")
    rejected = sum_rate("dataset", "tfmesh_data_rows_rejected_total")
    # Each filled with zeros for the datasets only the other has seen.
    ingested, rejected = zero_filled(ingested, rejected), zero_filled(rejected, ingested)
    return dashboard(
        "tfmesh-data",
        "tfmesh / Data",
        "Rows ingested into and rejected from each dataset.",
        [
            timeseries(
                "Rows ingested and rejected per dataset",
                "Rows per second that passed validation into a dataset, and rows refused.",
                "short",
                [
                    target(ingested, "ingested {{dataset}}"),
                    target(rejected, "rejected {{dataset}}"),
                ],
            ),
            timeseries(
                "Rejected share per dataset",
                "Share of a dataset's incoming rows that validation refused.",
                "percentunit",
                [target(f"{rejected} / ({ingested} + {rejected})", "{{dataset}}")],
            ),
        ],
    )


DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "overview": overview,
    "inference": inference,
    "training": training,
    "data": data,
}


def expected_files() -> dict[Path, str]:
    return {
        OUTPUT_DIR / f"{name}.json": json.dumps(build(), indent=2) + "\n"
        for name, build in DASHBOARDS.items()
    }


def written_files() -> list[Path]:
    return sorted(OUTPUT_DIR.glob("*.json"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], "monitoring.dashboards", expected_files, written_files))
