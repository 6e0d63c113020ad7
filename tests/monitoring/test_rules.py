"""The Prometheus rules in monitoring/rules, checked by promtool: every rule file is valid,
every unit test in monitoring/rules_tests passes, and every alert has a test case where it
fires and one where it stays quiet. Two tests feed promtool a broken rule file and a wrong
expectation, so that a pass here is known to mean something."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.processes import REPO

RULES = REPO / "monitoring" / "rules"
RUNBOOK = (REPO / "docs" / "operations.md").read_text()
RULE_TESTS = REPO / "monitoring" / "rules_tests"
RULE_FILES = sorted(RULES.glob("*.rules.yaml"))
TEST_FILES = sorted(RULE_TESTS.glob("*.yaml"))
PROMTOOL_TIMEOUT_S = 60


def promtool(*arguments: str | Path) -> subprocess.CompletedProcess:
    """promtool's answer to `arguments`, stdout and stderr together; fails the test (never
    skips it) when promtool is not installed."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed: run `make setup` (it installs Debian's prometheus)",
            pytrace=False,
        )
    return subprocess.run(
        [binary, *map(str, arguments)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
    )


def alert_names() -> set[str]:
    return {
        rule["alert"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def alert_cases() -> list[tuple[str, bool]]:
    """(alert name, whether it is expected to fire) for every alert_rule_test case."""
    return [
        (case["alertname"], bool(case.get("exp_alerts")))
        for path in TEST_FILES
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def test_there_are_rule_files_and_tests_of_them():
    # An empty glob would leave the parametrized tests below with nothing to run.
    assert len(RULE_FILES) >= 4
    assert len(TEST_FILES) >= 4


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_promtool_accepts_the_rule_file(path):
    run = promtool("check", "rules", path)
    assert run.returncode == 0, run.stdout
    assert "SUCCESS" in run.stdout


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda path: path.name)
def test_the_rule_unit_tests_pass(path):
    run = promtool("test", "rules", path)
    assert run.returncode == 0, run.stdout
    assert "SUCCESS" in run.stdout


def test_every_rule_file_is_under_test():
    tested = {
        (path.parent / rule_file).resolve()
        for path in TEST_FILES
        for rule_file in yaml.safe_load(path.read_text())["rule_files"]
    }
    untested = [path.name for path in RULE_FILES if path.resolve() not in tested]
    assert not untested, f"no file in monitoring/rules_tests loads {untested}"


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not():
    cases = alert_cases()
    alerts = alert_names()
    assert len(alerts) >= 8
    missing = [
        f"{name} ({'firing' if fires else 'quiet'})"
        for name in sorted(alerts)
        for fires in (True, False)
        if (name, fires) not in cases
    ]
    assert not missing, f"alerts without a test case: {missing}"
    unknown = sorted({name for name, _ in cases} - alerts)
    assert not unknown, f"test cases for alerts no rule file defines: {unknown}"


def test_every_alert_has_a_severity_and_the_annotations_of_a_runbook_entry():
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                name = rule["alert"]
                assert rule["labels"]["severity"] in ("warning", "critical"), name
                annotations = rule["annotations"]
                assert {"summary", "description"} <= annotations.keys(), name
                assert annotations["runbook_url"].endswith(
                    f"docs/operations.md#alert-{name.lower()}"
                ), name
                # The anchor is the one GitHub makes of the entry's heading.
                assert f"\n### Alert: {name}\n" in RUNBOOK, f"no runbook entry for {name}"


BROKEN_RULES = {
    "invalid PromQL": (
        "      - record: job:up:sum\n        expr: sum by (job (up)\n",
        "could not parse expression",
    ),
    "an unknown key": (
        "      - alert: Down\n        expresion: up == 0\n",
        "field expresion not found in type rulefmt.RuleNode",
    ),
}


@pytest.mark.parametrize("broken", BROKEN_RULES, ids=str)
def test_promtool_refuses_a_broken_rule_file(tmp_path, broken):
    rules, message = BROKEN_RULES[broken]
    path = tmp_path / "broken.rules.yaml"
    path.write_text(f"groups:\n  - name: broken\n    rules:\n{rules}")
    run = promtool("check", "rules", path)
    assert run.returncode != 0, run.stdout
    assert message in run.stdout


def test_a_wrong_expectation_fails_the_unit_tests(tmp_path):
    """The services tests with their first firing case expecting silence instead: promtool
    must report that very alert as failed."""
    source = RULE_TESTS / "services.test.yaml"
    document = yaml.safe_load(source.read_text())
    document["rule_files"] = [str(source.parent / name) for name in document["rule_files"]]
    case = next(
        case
        for test in document["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    )
    case["exp_alerts"] = []
    path = tmp_path / "wrong.test.yaml"
    path.write_text(yaml.safe_dump(document))
    run = promtool("test", "rules", path)
    assert run.returncode != 0, run.stdout
    assert "FAILED" in run.stdout
    assert f"alertname: {case['alertname']}" in run.stdout
