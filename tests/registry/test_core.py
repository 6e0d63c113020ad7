"""The registry core on both stores (SQLite and a real PostgreSQL), with no sockets."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from services.registry import entities as e
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.registry.conftest import add_version


def test_versions_are_numbered_per_model_and_never_reused(core):
    assert [add_version(core, "a", b"%d" % i)[0].version for i in range(3)] == [1, 2, 3]
    assert add_version(core, "b", b"x")[0].version == 1
    core.delete_version("a", 3)
    assert add_version(core, "a", b"again")[0].version == 4
    assert core.get_model("a").latest_version == 4


def test_concurrent_uploads_get_distinct_numbers(core):
    core.create_model("c")
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda i: add_version(core, "c", b"v%d" % i)[0].version, range(8)))
    assert sorted(versions) == list(range(1, 9))


def test_concurrent_retries_with_one_key_create_one_version(core):
    core.create_model("c")
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda _: add_version(core, "c", b"same", idempotency_key="job-1"), range(6))
        )
    assert {v.version for v, _ in results} == {1}
    assert sum(created for _, created in results) == 1
    assert len(core.list_versions("c").items) == 1


def test_promotion_gate_respects_direction_and_margin(core):
    core.create_model("loss", rule=e.PromotionRule("loss", 0.05, higher_is_better=False))
    add_version(core, "loss", b"1", metrics={"loss": 0.50})
    add_version(core, "loss", b"2", metrics={"loss": 0.47})
    add_version(core, "loss", b"3", metrics={"loss": 0.40})
    add_version(core, "loss", b"4")
    core.aliases.set_alias("loss", "production", 1)
    with pytest.raises(FailedPrecondition, match="does not beat"):
        core.aliases.set_alias("loss", "production", 2)
    with pytest.raises(FailedPrecondition, match="no 'loss' metric"):
        core.aliases.set_alias("loss", "production", 4)
    with pytest.raises(InvalidArgument) as refused:
        core.aliases.set_alias("loss", "production", 2, override_gate=True)
    assert refused.value.violations[0].field == "reason"
    alias, change = core.aliases.set_alias("loss", "production", 3, actor="ci")
    assert alias.version == 3 and change is not None and not change.overridden


def test_canary_weight_changes_are_events_and_audited(core):
    add_version(core, "m", b"1")
    add_version(core, "m", b"2")
    core.aliases.set_alias("m", "canary", 2, traffic_weight=20, actor="alice", reason="try")
    core.aliases.set_alias("m", "canary", 2, traffic_weight=50, actor="alice")
    alias, change = core.aliases.set_alias("m", "canary", 2, traffic_weight=50)
    assert alias.traffic_weight == 50 and change is None  # no-op writes no event
    with pytest.raises(InvalidArgument):
        core.aliases.set_alias("m", "production", 1, traffic_weight=10)
    kinds = [c.event_type for c in core.changes_after(0, ["m"])]
    assert kinds[-2:] == [e.EventType.ALIAS_MOVED, e.EventType.ALIAS_WEIGHT_CHANGED]
    history = core.aliases.list_alias_history("m").items
    assert [(h.old_traffic_weight, h.new_traffic_weight) for h in history] == [(0, 20), (20, 50)]


def test_delete_of_aliased_version_is_refused_and_blob_kept_while_shared(core):
    first, _ = add_version(core, "m", b"shared")
    add_version(core, "n", b"shared")
    core.aliases.set_alias("m", "production", 1)
    with pytest.raises(FailedPrecondition):
        core.delete_version("m", 1)
    core.aliases.delete_alias("m", "production")
    core.delete_version("m", 1)
    digest = first.artifacts[0].sha256
    assert core.blobs.exists(digest), "still used by model n"
    core.delete_version("n", 1)
    assert not core.blobs.exists(digest)


def test_change_feed_is_ordered_and_filterable(core):
    add_version(core, "a", b"1")
    add_version(core, "b", b"2")
    core.aliases.set_alias("a", "production", 1)
    everything = core.changes_after(0)
    revisions = [c.revision for c in everything]
    assert revisions == sorted(revisions) and len(everything) == 5
    only_b = core.changes_after(0, ["b"])
    assert {c.model for c in only_b} == {"b"}
    assert core.changes_after(revisions[2]) == everything[3:]


def test_unknown_things_are_not_found(core):
    with pytest.raises(NotFound):
        core.get_model("missing")
    add_version(core, "m", b"1")
    with pytest.raises(NotFound):
        core.get_version("m", alias="production")
    with pytest.raises(NotFound):
        core.open_artifact("m", 1, "nope")
