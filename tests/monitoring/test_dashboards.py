"""The Grafana dashboards (monitoring/dashboards.py, written to k8s/components/monitoring/
dashboards/): the committed JSON is what the generator makes, the dashboards are well
formed, every query parses (promtool) and reads only the metric contract's names, template
variables appear in regex matchers only, and `panel_queries` substitutes them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.dashboards import DASHBOARDS, OUTPUT_DIR, expected_files
from monitoring.panels import dashboard_files, panel_queries, substitute

# The metric contract (issue #11). Histograms are listed by their base name.
COUNTERS_AND_GAUGES = {
    "up",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_client_started_total",
    "grpc_client_handled_total",
    "http_requests_total",
    "tfmesh_inference_requests_total",
    "tfmesh_inference_queued_rows",
    "tfmesh_inference_queue_capacity_rows",
    "tfmesh_inference_model_loads_total",
    "tfmesh_inference_model_unloads_total",
    "tfmesh_inference_alias_swaps_total",
    "tfmesh_inference_route_weight_ratio",
    "tfmesh_inference_drift_score",
    "tfmesh_inference_drift_sampled_rows_total",
    "tfmesh_training_jobs",
    "tfmesh_training_jobs_finished_total",
    "tfmesh_data_rows_ingested_total",
    "tfmesh_data_rows_rejected_total",
}
HISTOGRAMS = {
    "grpc_server_handling_seconds",
    "grpc_client_handling_seconds",
    "http_request_duration_seconds",
    "tfmesh_inference_request_duration_seconds",
    "tfmesh_inference_queue_seconds",
    "tfmesh_inference_compute_seconds",
    "tfmesh_inference_batch_rows",
    "tfmesh_inference_padding_rows",
    "tfmesh_training_epoch_seconds",
}
CONTRACT = COUNTERS_AND_GAUGES | {
    f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")
}
PROMTOOL_TIMEOUT_S = 60

# What is left of an expression once strings, label matchers, ranges and grouping clauses
# are gone: identifiers before "(" are functions or aggregations; the others are metrics
# or binary operators.
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
BRACKETED = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?")
OPERATORS = {"and", "or", "unless", "bool", "offset"}
REGEX_MATCHER = re.compile(r'(=~|!~)\s*"(?:[^"\\]|\\.)*"')
VARIABLE = re.compile(r"\$\{?(\w+)|\[\[(\w+)")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def all_panels(panels: list[dict]) -> list[dict]:
    return [p for panel in panels for p in (panel, *all_panels(panel.get("panels") or []))]


def metric_names(expr: str) -> set[str]:
    bare = BRACKETED.sub(" ", GROUPING.sub(" ", STRING.sub('""', expr)))
    return {name for name, call in IDENTIFIER.findall(bare) if not call and name not in OPERATORS}


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed: run `make setup` (it installs Debian's prometheus)",
            pytrace=False,
        )
    return binary


DASHBOARD_FILES = dashboard_files()


def test_the_committed_dashboards_are_what_the_generator_makes():
    expected = expected_files()
    assert sorted(expected) == DASHBOARD_FILES, "run `python -m monitoring.dashboards`"
    for path, text in expected.items():
        assert path.read_text() == text, (
            f"{path.name} is stale: run `python -m monitoring.dashboards`"
        )


def test_the_component_ships_every_dashboard_with_the_sidecar_label():
    kustomization = yaml.safe_load((OUTPUT_DIR.parent / "kustomization.yaml").read_text())
    generators = kustomization["configMapGenerator"]
    shipped = sorted(OUTPUT_DIR.parent / f for g in generators for f in g["files"])
    assert shipped == DASHBOARD_FILES
    for generator in generators:
        assert generator["options"]["labels"] == {"grafana_dashboard": "1"}, generator["name"]


def test_each_dashboard_has_a_unique_uid_and_title():
    dashboards = [load(path) for path in DASHBOARD_FILES]
    assert len(dashboards) == len(DASHBOARDS) == 4
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    assert len({d["title"] for d in dashboards}) == len(dashboards)


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_every_panel_has_a_query_on_the_chosen_data_source(path):
    dashboard = load(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in all_panels(dashboard["panels"]) if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [p["id"] for p in all_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))


def test_the_inference_dashboard_filters_by_model_and_version():
    dashboard = load(OUTPUT_DIR / "inference.json")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["model"]["definition"].startswith("label_values(")
    assert variables["version"]["definition"].startswith("label_values(")
    assert '{model=~"$model"}' in variables["version"]["definition"]
    exprs = [t["expr"] for p in all_panels(dashboard["panels"]) for t in p.get("targets", [])]
    assert all('model=~"$model"' in expr for expr in exprs)
    # Alias swaps are counted per model and alias: they have no version label.
    unversioned = [e for e in exprs if 'version=~"$version"' not in e]
    assert all("tfmesh_inference_alias_swaps_total" in expr for expr in unversioned)


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_variables_appear_only_in_regex_matchers(path):
    """All stands for `.+`, which is right only after `=~` or `!~`; after `=` it would
    match nothing."""
    for panel in all_panels(load(path)["panels"]):
        for target in panel.get("targets", []):
            outside = REGEX_MATCHER.sub("", target["expr"])
            names = {name for found in VARIABLE.findall(outside) for name in found if name}
            assert names <= {"__rate_interval"}, f"{panel['title']}: {target['expr']}"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_promtool_parses_every_query(path, tmp_path):
    queries = panel_queries(load(path))
    rules = [{"record": f"check:expr_{n}", "expr": expr} for n, (_, expr) in enumerate(queries)]
    rule_file = tmp_path / "queries.rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    run = subprocess.run(
        [promtool(), "check", "rules", str(rule_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
    )
    titles = "\n".join(f"check:expr_{n}: {title}" for n, (title, _) in enumerate(queries))
    assert run.returncode == 0, f"{run.stdout}\n{titles}"
    assert f"SUCCESS: {len(queries)} rules found" in run.stdout


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_every_query_reads_only_contracted_metrics(path):
    for title, expr in panel_queries(load(path)):
        names = metric_names(expr)
        assert names, f"{title}: no metric found in {expr}"
        assert names <= CONTRACT, f"{title}: {sorted(names - CONTRACT)} are not in the contract"


def test_metric_names_are_told_from_functions_labels_and_strings():
    expr = (
        'histogram_quantile(0.99, sum by (model, le) (rate(a_seconds_bucket{model=~"x|y"}[1m])))'
        " / on (model) group_left (version) (b_total or c * 0)"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c"}


def test_panel_queries_substitute_variables_in_every_panel_rows_included():
    dashboard = {
        "panels": [
            {"type": "row", "title": "open row", "panels": []},
            {
                "type": "timeseries",
                "title": "top",
                "targets": [{"expr": 'sum(rate(x_total{model=~"$model"}[$__rate_interval]))'}],
            },
            {
                "type": "row",
                "title": "collapsed row",
                "collapsed": True,
                "panels": [
                    {
                        "type": "timeseries",
                        "title": "nested",
                        "targets": [
                            {"expr": 'y{version=~"${version}", a=~"[[custom]]"}'},
                            {"expr": "increase(z_total[${__rate_interval}])"},
                        ],
                    }
                ],
            },
        ]
    }
    assert panel_queries(dashboard, window="5m") == [
        ("top", 'sum(rate(x_total{model=~".+"}[5m]))'),
        ("nested", 'y{version=~".+", a=~".+"}'),
        ("nested", "increase(z_total[5m])"),
    ]
    assert panel_queries(dashboard)[0][1].endswith("[1m]))")


def test_an_unknown_builtin_is_refused_rather_than_guessed():
    with pytest.raises(ValueError, match=r"\$__from"):
        substitute("x[$__from]")
