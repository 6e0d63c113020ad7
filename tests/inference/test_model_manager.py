"""The model manager with the noop runtime and a scripted registry source: swaps, failed
loads that never replace a working version, draining, and static models.

The registry source is a stand-in here (a class with `fetch` and `follow`) so each test
sends exactly the alias events it needs; the real registry drives the process tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from services.inference.alias_feed import AliasEvent
from services.inference.batcher import BatchingOptions
from services.inference.config import ModelSpec
from services.inference.model_manager import ModelManager, VersionState
from services.inference.runtimes import noop_runtime
from tests.inference.test_batcher import wait_until

OPTIONS = BatchingOptions(max_batch_size=4, allowed_batch_sizes=(1, 2, 4))


class ScriptedSource:
    """Delivers alias events the test pushes; versions in `broken` fail to download."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[AliasEvent] = asyncio.Queue()
        self.broken: set[int] = set()
        self.fetched: list[int] = []

    async def fetch(self, model: str, version: int, artifact: str) -> Path:
        self.fetched.append(version)
        if version in self.broken:
            raise ConnectionError(f"artifact of version {version} is corrupt")
        return Path(f"/nonexistent/{version}")

    async def follow(self, on_event, on_connected) -> None:
        on_connected()
        while True:
            on_event(await self.events.get())


def registry_spec(**options) -> ModelSpec:
    return ModelSpec(
        "m", "noop", OPTIONS, runtime_options=options, aliases=("production", "canary")
    )


@pytest.fixture
async def manager_and_source():
    source = ScriptedSource()
    manager = ModelManager([registry_spec()], source=source, settle_s=0.01)  # type: ignore[arg-type]
    await manager.start()
    yield manager, source
    await manager.stop()


def labels(manager: ModelManager) -> dict[str, int]:
    return {label: v.version for label, v in manager.model("m").table.by_label.items()}


async def test_alias_events_load_warm_and_swap(manager_and_source):
    manager, source = manager_and_source
    await source.events.put(AliasEvent("m", "production", 1, 0))
    await wait_until(lambda: labels(manager) == {"production": 1})
    await source.events.put(AliasEvent("m", "canary", 2, 30))
    await wait_until(lambda: labels(manager) == {"production": 1, "canary": 2})
    assert manager.model("m").table.canary_weight == 30
    await source.events.put(AliasEvent("m", "production", 2, 0))
    await source.events.put(AliasEvent("m", "canary", 0, 0))
    await wait_until(lambda: labels(manager) == {"production": 2})
    records = manager.model("m").records
    await wait_until(lambda: records[1].state is VersionState.END)
    assert records[1].reason == "no served alias names it any more"
    assert records[2].state is VersionState.AVAILABLE


async def test_events_for_other_aliases_and_models_are_ignored(manager_and_source):
    manager, source = manager_and_source
    await source.events.put(AliasEvent("m", "staging", 1, 0))
    await source.events.put(AliasEvent("other", "production", 1, 0))
    await source.events.put(AliasEvent("m", "production", 3, 0))
    await wait_until(lambda: labels(manager) == {"production": 3})
    assert source.fetched == [3]


async def test_a_version_that_fails_never_replaces_the_working_one(manager_and_source):
    manager, source = manager_and_source
    await source.events.put(AliasEvent("m", "production", 1, 0))
    await wait_until(lambda: labels(manager) == {"production": 1})
    source.broken.add(2)
    await source.events.put(AliasEvent("m", "production", 2, 0))
    records = manager.model("m").records
    await wait_until(lambda: 2 in records and records[2].state is VersionState.FAILED)
    assert "corrupt" in records[2].reason and records[2].reason.startswith("download failed")
    assert labels(manager) == {"production": 1}
    assert records[1].state is VersionState.AVAILABLE


async def test_a_burst_of_events_settles_into_one_load():
    source = ScriptedSource()
    manager = ModelManager([registry_spec()], source=source, settle_s=0.2)  # type: ignore[arg-type]
    await manager.start()
    for version in (1, 2, 3, 4):
        await source.events.put(AliasEvent("m", "production", version, 0))
    await wait_until(lambda: labels(manager) == {"production": 4})
    assert source.fetched == [4]
    await manager.stop()


async def test_warmup_failure_is_recorded(monkeypatch):
    # A model that answers fewer rows than it gets (the noop runtime, patched to drop all
    # but the first row): warmup must catch it before any request reaches it.
    monkeypatch.setattr(
        noop_runtime.NoOpRuntime,
        "predict",
        lambda self, inputs: {"output_0": next(iter(inputs.values()))[:1]},
    )
    source = ScriptedSource()
    spec = ModelSpec("m", "noop", OPTIONS, aliases=("production",))
    manager = ModelManager([spec], source=source, settle_s=0.01)  # type: ignore[arg-type]
    await manager.start()
    await source.events.put(AliasEvent("m", "production", 1, 0))
    records = manager.model("m").records
    await wait_until(lambda: 1 in records and records[1].state is VersionState.FAILED)
    assert records[1].reason.startswith("warmup failed")
    assert "batch size 2" in records[1].reason
    assert labels(manager) == {}
    await manager.stop()


async def test_the_old_version_drains_its_queue_before_unloading():
    source = ScriptedSource()
    spec = ModelSpec(
        "m",
        "noop",
        BatchingOptions(max_batch_size=1),
        runtime_options={"delay_ms": 100},
        aliases=("production",),
    )
    manager = ModelManager([spec], source=source, settle_s=0.01)  # type: ignore[arg-type]
    await manager.start()
    await source.events.put(AliasEvent("m", "production", 1, 0))
    await wait_until(lambda: labels(manager) == {"production": 1})
    old = manager.model("m").table.by_label["production"]
    queued = [old.batcher.submit({"x": np.full((1, 64), i, np.float32)}, 1) for i in range(3)]
    await source.events.put(AliasEvent("m", "production", 2, 0))
    await wait_until(lambda: labels(manager) == {"production": 2})
    answers = await asyncio.gather(*queued)
    assert [float(a["output_0"][0, 0]) for a in answers] == [0, 1, 2]
    await wait_until(lambda: manager.model("m").records[1].state is VersionState.END)
    await manager.stop()


async def test_static_models_load_at_start_with_their_labels(tmp_path):
    spec = ModelSpec(
        "s",
        "noop",
        OPTIONS,
        static_versions={1: None, 2: None},
        static_labels={"production": 1, "canary": 2},
        static_canary_weight=25,
    )
    manager = ModelManager([spec])
    await manager.start()
    table = manager.model("s").table
    assert {label: v.version for label, v in table.by_label.items()} == {
        "production": 1,
        "canary": 2,
    }
    assert table.canary_weight == 25
    await manager.stop()
    assert {r.state for r in manager.model("s").records.values()} == {VersionState.END}
