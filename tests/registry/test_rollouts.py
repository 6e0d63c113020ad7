"""Rollouts in the registry: the statistical checks, policy validation, and the controller
driven tick by tick on both stores (SQLite and a real PostgreSQL). The inference
service's figures are given by the test here (its figures are what the checks judge; the
process tests in tests/rollouts read them from a real inference service)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.inference.statistics import LATENCY_BOUNDS_S
from services.registry.core import Registry
from services.registry.rollouts.book import CONTROLLER
from services.registry.rollouts.controller import RolloutController
from services.registry.rollouts.entities import RolloutState
from services.registry.rollouts.evidence import Verdict, VersionFigures, evaluate
from services.registry.rollouts.policy import Check, Metric, PolicyDraft
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.registry.conftest import add_version

BOUNDS = LATENCY_BOUNDS_S


def latencies(seconds: float, count: int) -> tuple[int, ...]:
    """Latency counts of `count` requests that each took `seconds`."""
    counts = [0] * (len(BOUNDS) + 1)
    index = next(i for i, bound in enumerate(BOUNDS) if bound >= seconds)
    counts[index] = count
    return tuple(counts)


def figures(
    version: int,
    requests: int = 1000,
    errors: int = 0,
    seconds: float = 0.002,
    rows: int = 0,
    correct: int = 0,
) -> VersionFigures:
    return VersionFigures(
        version, requests, errors, BOUNDS, latencies(seconds, requests - errors), rows, correct
    )


# --- the checks ---------------------------------------------------------------------------


def test_a_canary_failing_a_fifth_of_requests_fails_the_error_check():
    check = Check(Metric.ERROR_RATIO, 0.01, 50)
    result = evaluate(check, figures(2, 100, errors=20), figures(1, 5000), 0.95)
    assert result.verdict is Verdict.FAIL
    assert result.evidence["error_ratio.canary"] == pytest.approx(0.2)
    assert "worse by more than 0.01" in result.detail


def test_equal_error_ratios_pass_and_too_few_samples_wait():
    check = Check(Metric.ERROR_RATIO, 0.01, 50)
    assert evaluate(check, figures(2, 200, 2), figures(1, 5000, 50), 0.95).verdict is Verdict.PASS
    assert evaluate(check, figures(2, 49, 20), figures(1, 5000), 0.95).verdict is Verdict.WAIT


def test_a_slightly_worse_error_ratio_within_the_margin_passes():
    check = Check(Metric.ERROR_RATIO, 0.05, 50)
    assert evaluate(check, figures(2, 400, 12), figures(1, 4000, 40), 0.95).verdict is Verdict.PASS


def test_live_accuracy_clearly_lower_fails_and_about_equal_passes():
    check = Check(Metric.LIVE_ACCURACY, 0.05, 100)
    production = figures(1, rows=2000, correct=1900)
    bad = evaluate(check, figures(2, rows=150, correct=20), production, 0.95)
    assert bad.verdict is Verdict.FAIL and bad.evidence["live_accuracy.canary"] < 0.2
    fine = evaluate(check, figures(2, rows=150, correct=141), production, 0.95)
    assert fine.verdict is Verdict.PASS


def test_a_canary_three_times_slower_fails_the_latency_check():
    check = Check(Metric.LATENCY_P99, 0.5, 100)
    slow = evaluate(check, figures(2, 200, seconds=0.006), figures(1, 5000, seconds=0.002), 0.95)
    assert slow.verdict is Verdict.FAIL
    assert slow.evidence["latency_p99.canary_share_above"] == 1.0
    same = evaluate(check, figures(2, 200, seconds=0.002), figures(1, 5000, seconds=0.002), 0.95)
    assert same.verdict is Verdict.PASS


# --- policies -----------------------------------------------------------------------------


def draft(**overrides) -> PolicyDraft:
    values = dict(
        steps=[5, 20, 50, 100],
        step_seconds=10.0,
        step_min_requests=20,
        step_timeout_seconds=60.0,
        checks=[("error_ratio", 0.01, 50), ("latency_p99", 0.5, 50), ("live_accuracy", 0.05, 100)],
        confidence=0.95,
    )
    values.update(overrides)
    return PolicyDraft(**values)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"steps": [5, 50, 20, 100]}, "policy.steps"),
        ({"steps": [5, 5, 100]}, "policy.steps"),
        ({"steps": [5, 50]}, "policy.steps"),
        ({"steps": [0, 100]}, "policy.steps"),
        ({"checks": [("error_ratio", 1.5, 50)]}, "policy.checks[0].max_degradation"),
        ({"checks": [("error_ratio", -0.1, 50)]}, "policy.checks[0].max_degradation"),
        ({"checks": [("latency_p99", 0.5, 0)]}, "policy.checks[0].min_samples"),
        ({"checks": [("", 0.5, 10)]}, "policy.checks[0].metric"),
        (
            {"checks": [("error_ratio", 0.1, 10), ("error_ratio", 0.1, 10)]},
            "policy.checks[1].metric",
        ),
        ({"confidence": 0.3}, "policy.confidence"),
        ({"step_timeout_seconds": 5.0}, "policy.step_timeout_seconds"),
        ({"step_seconds": float("nan")}, "policy.step_seconds"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field_and_nothing_is_stored(core, overrides, field):
    core.create_model("m")
    with pytest.raises(InvalidArgument) as refused:
        core.rollouts.set_policy("m", draft(**overrides))
    assert field in [v.field for v in refused.value.violations]
    with pytest.raises(NotFound):
        core.rollouts.get_policy("m")


def test_a_policy_round_trips_and_can_be_deleted(core):
    core.create_model("m")
    policy, _ = core.rollouts.set_policy("m", draft(confidence=0))
    assert policy.confidence == 0.95
    assert core.rollouts.get_policy("m")[0] == policy
    core.rollouts.delete_policy("m")
    with pytest.raises(NotFound):
        core.rollouts.get_policy("m")


# --- the controller -----------------------------------------------------------------------


class Figures:
    """What the inference service would report: set by the test between ticks."""

    def __init__(self) -> None:
        self.by_version: dict[int, VersionFigures] = {}

    async def figures(self, model: str) -> dict[int, VersionFigures]:
        return dict(self.by_version)


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def rig(core):
    """Model `m` with production at v1 (accuracy 0.90), a policy, and a controller."""
    add_version(core, "m", b"v1", metrics={"accuracy": 0.90})
    core.aliases.set_alias("m", "production", 1)
    core.rollouts.set_policy(
        "m",
        draft(
            steps=[10, 50, 100],
            step_seconds=5.0,
            step_min_requests=50,
            checks=[("error_ratio", 0.01, 50), ("latency_p99", 0.5, 50)],
        ),
    )
    source, clock = Figures(), Clock()
    return core, source, clock, RolloutController(core, core.rollouts, source, clock)


def aliases(core: Registry) -> dict[str, tuple[int, int]]:
    return {a.name: (a.version, a.traffic_weight) for a in core.aliases.list_aliases("m")}


async def test_a_good_version_steps_through_and_is_promoted(rig):
    core, source, clock, controller = rig
    await controller.tick()  # nothing newer than production
    with pytest.raises(NotFound):
        core.rollouts.latest("m")
    add_version(core, "m", b"v2", metrics={"accuracy": 0.95})
    await controller.tick()
    assert aliases(core)["canary"] == (2, 10)
    await controller.tick()  # no figures yet: holds
    assert core.rollouts.latest("m").step == 0
    for step, weight, served in ((0, 50, 60), (1, 100, 120), (2, None, 180)):
        source.by_version = {1: figures(1, 5000), 2: figures(2, served)}
        await controller.tick()  # enough requests, but the step has not held 5 s
        assert core.rollouts.latest("m").step == step
        clock.offset = timedelta(seconds=6)
        await controller.tick()
        clock.offset = timedelta()
        if weight is not None:
            assert aliases(core)["canary"] == (2, weight)
    rollout = core.rollouts.latest("m")
    assert rollout.state is RolloutState.PROMOTED
    assert aliases(core) == {"production": (2, 0)}
    assert [e.kind for e in rollout.events] == ["started", "stepped", "stepped", "promoted"]
    assert all(e.actor == CONTROLLER for e in rollout.events)
    assert "error ratio: canary 0.0000" in rollout.events[1].detail
    assert rollout.events[-1].evidence["canary.requests"] == 180
    history = core.aliases.list_alias_history("m").items
    assert [(h.alias, h.new_version, h.new_traffic_weight) for h in history][-5:] == [
        ("canary", 2, 10),
        ("canary", 2, 50),
        ("canary", 2, 100),
        ("production", 2, 0),
        ("canary", 0, 0),
    ]
    feed = [c for c in core.changes_after(0) if c.event_type.value.startswith("ROLLOUT_")]
    assert [c.event_type.value for c in feed] == [
        "ROLLOUT_STARTED",
        "ROLLOUT_STEPPED",
        "ROLLOUT_STEPPED",
        "ROLLOUT_PROMOTED",
    ]
    assert feed[-1].detail.startswith("step 3 of 3 (100%) passed")
    await controller.tick()  # a finished rollout is never started again
    assert len(core.rollouts.latest("m").events) == 4


async def test_a_failing_version_is_rolled_back_at_its_first_step(rig):
    core, source, clock, controller = rig
    add_version(core, "m", b"v2", metrics={"accuracy": 0.95})
    await controller.tick()
    source.by_version = {1: figures(1, 5000), 2: figures(2, 60, errors=12)}
    await controller.tick()
    rollout = core.rollouts.latest("m")
    assert rollout.state is RolloutState.ROLLED_BACK and rollout.step == 0
    assert aliases(core) == {"production": (1, 0)}
    assert rollout.events[-1].kind == "rolled_back"
    assert rollout.events[-1].evidence["error_ratio.canary"] == pytest.approx(0.2)


async def test_a_step_without_evidence_rolls_back_at_its_timeout(rig):
    core, source, clock, controller = rig
    add_version(core, "m", b"v2", metrics={"accuracy": 0.95})
    await controller.tick()
    source.by_version = {1: figures(1, 5000), 2: figures(2, 10)}
    clock.offset += timedelta(seconds=61)
    await controller.tick()
    rollout = core.rollouts.latest("m")
    assert rollout.state is RolloutState.ROLLED_BACK
    assert "undecided" in rollout.events[-1].detail and "10 of 50" in rollout.events[-1].detail


async def test_a_version_the_gate_refuses_never_takes_traffic(rig):
    core, source, clock, controller = rig
    add_version(core, "m", b"v2", metrics={"accuracy": 0.85})
    await controller.tick()
    rollout = core.rollouts.latest("m")
    assert rollout.state is RolloutState.REFUSED
    assert "does not beat" in rollout.events[0].detail
    assert "canary" not in aliases(core)


async def test_a_stale_controller_cannot_step_twice(rig):
    core, source, clock, controller = rig
    add_version(core, "m", b"v2", metrics={"accuracy": 0.95})
    await controller.tick()
    (seen,) = core.rollouts.active()
    core.rollouts.advance(seen, "first", {})
    with pytest.raises(FailedPrecondition, match="moved on"):
        core.rollouts.advance(seen, "second, from a controller that read the same step", {})
    assert core.rollouts.latest("m").step == 1
    assert aliases(core)["canary"] == (2, 50)


async def test_pause_resume_and_abort(rig):
    core, source, clock, controller = rig
    with pytest.raises(FailedPrecondition, match="no rollout"):
        core.rollouts.pause("m", "ops", "")
    add_version(core, "m", b"v2", metrics={"accuracy": 0.95})
    await controller.tick()
    core.rollouts.pause("m", "ops", "looking at a dashboard")
    with pytest.raises(FailedPrecondition, match="paused; cannot pause"):
        core.rollouts.pause("m", "ops", "")
    source.by_version = {1: figures(1, 5000), 2: figures(2, 60, errors=30)}
    await controller.tick()  # paused: not judged
    assert core.rollouts.latest("m").state is RolloutState.PAUSED
    core.rollouts.resume("m", "ops", "")
    core.rollouts.abort("m", "ops", "enough")
    rollout = core.rollouts.latest("m")
    assert rollout.state is RolloutState.ABORTED
    assert [(e.kind, e.actor) for e in rollout.events] == [
        ("started", CONTROLLER),
        ("paused", "ops"),
        ("resumed", "ops"),
        ("aborted", "ops"),
    ]
    assert aliases(core) == {"production": (1, 0)}


async def test_a_canary_moved_by_hand_ends_the_rollout_and_keeps_the_aliases(rig):
    core, source, clock, controller = rig
    add_version(core, "m", b"v2", metrics={"accuracy": 0.95})
    add_version(core, "m", b"v3", metrics={"accuracy": 0.96})
    await controller.tick()
    core.aliases.set_alias("m", "canary", 2, traffic_weight=30)
    await controller.tick()
    rollout = core.rollouts.latest("m")
    assert rollout.version == 3 and rollout.state is RolloutState.ABORTED
    assert "moved to version 2 by hand" in rollout.events[-1].detail
    assert aliases(core)["canary"] == (2, 30)


async def test_a_decision_read_before_a_pause_and_resume_is_refused(rig):
    core, source, clock, controller = rig
    add_version(core, "m", b"v2", metrics={"accuracy": 0.95})
    await controller.tick()
    (seen,) = core.rollouts.active()
    core.rollouts.pause("m", "ops", "")
    core.rollouts.resume("m", "ops", "")
    with pytest.raises(FailedPrecondition, match="moved on"):
        core.rollouts.roll_back(seen, "judged on the step clock before the pause", {})
    assert core.rollouts.latest("m").state is RolloutState.RUNNING


async def test_a_step_is_refused_when_the_canary_was_moved_after_the_tick_read_it(rig):
    core, source, clock, controller = rig
    add_version(core, "m", b"v2", metrics={"accuracy": 0.95})
    await controller.tick()
    (seen,) = core.rollouts.active()
    core.aliases.set_alias("m", "canary", 2, traffic_weight=1)
    with pytest.raises(FailedPrecondition, match="moved by hand"):
        core.rollouts.advance(seen, "stale", {})
    assert aliases(core)["canary"] == (2, 1)


def test_a_production_without_its_minimum_sample_makes_the_check_wait():
    check = Check(Metric.LIVE_ACCURACY, 0.05, 100)
    one_row = figures(1, rows=1, correct=1)
    assert evaluate(check, figures(2, rows=500, correct=475), one_row, 0.95).verdict is Verdict.WAIT


def test_a_p99_past_the_last_bucket_gives_finite_evidence():
    check = Check(Metric.LATENCY_P99, 0.5, 10)
    stuck = VersionFigures(2, 20, 0, BOUNDS, (0,) * len(BOUNDS) + (20,))
    result = evaluate(check, stuck, figures(1, 5000), 0.95)
    assert result.verdict is Verdict.FAIL
    assert all(abs(value) < 1e10 for value in result.evidence.values())
