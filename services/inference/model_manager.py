"""Which versions are loaded, and the swap from one to the next.

For each served model the manager keeps a record per version (loading, available,
unloading, failed with the reason, ended) and an immutable routing table. A static model
loads its listed files once at start. A registry model follows the alias events the
registry source delivers: they update the desired alias targets, and a per-model
reconciler (after a short settle, so a replayed burst becomes one target) loads each
version that is wanted and not loaded (fetch with digest check, load, warm up at every
allowed batch size), then swaps the routing table in one assignment. A version that
fails to load or warm up never replaces a working one: the alias keeps its old target.
Versions no alias names any more leave the table first, then drain their queue, then
unload. Each loaded version watches its live inputs for drift from the dataset version
its lineage names, when a baseline source is given (services.inference.live_drift)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from opentelemetry import trace

from services.inference import metrics
from services.inference.alias_feed import AliasEvent, AliasFeed
from services.inference.batcher import Batcher, BatchingOptions
from services.inference.catalog import Catalog, ModelView, VersionState, VersionView
from services.inference.config import ModelSpec
from services.inference.drift import (
    Baseline,
    DriftWindow,
    baselines_from_statistics,
    drift_applicable,
)
from services.inference.feedback import PredictionLog
from services.inference.live_drift import LiveDrift
from services.inference.metrics import BatcherMetrics
from services.inference.routing import RoutingTable
from services.inference.runtimes import (
    AUTO,
    RUNTIMES,
    Runtime,
    Signature,
    load_runtime,
    runtime_for,
    static_runtime,
    zero_inputs,
)
from services.inference.statistics import VersionStatistics
from shared.aliases import CANARY, PRODUCTION
from shared.errors import NotFound
from shared.heap import collect_released, freeze_loaded

log = logging.getLogger(__name__)

__all__ = ["LoadedVersion", "ModelManager", "ServedModel", "VersionRecord", "VersionState"]


@dataclass(eq=False)
class LoadedVersion:
    model: str
    version: int
    runtime: Runtime
    batcher: Batcher
    statistics: VersionStatistics
    drift: LiveDrift


@dataclass(frozen=True)
class DriftOptions:
    """How each version's live inputs are sampled for drift, and from where baselines come."""

    baselines: BaselineSource
    sampling_rate: float = 0.1
    window_rows: int = 2000


class BaselineSource(Protocol):
    async def fetch(self, model: str, version: int) -> Baseline | None: ...


@dataclass
class VersionRecord:
    version: int
    state: VersionState
    runtime: str
    reason: str = ""
    device: str = ""
    loaded: LoadedVersion | None = None


@dataclass(eq=False)
class ServedModel:
    spec: ModelSpec
    records: dict[int, VersionRecord] = field(default_factory=dict)
    table: RoutingTable[LoadedVersion] = field(default_factory=RoutingTable)
    # Alias -> (version, traffic weight), as the registry last said.
    desired: dict[str, tuple[int, int]] = field(default_factory=dict)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    # Recent predictions, for the feedback clients report on them.
    feedback: PredictionLog = field(default_factory=PredictionLog)

    @property
    def name(self) -> str:
        return self.spec.name

    def view(self) -> ModelView:
        views = {number: _version_view(self.name, r) for number, r in sorted(self.records.items())}
        return ModelView(
            self.name,
            self.spec.runtime,
            self.spec.batching,
            views,
            RoutingTable(
                {number: views[number] for number in self.table.by_version},
                {label: views[loaded.version] for label, loaded in self.table.by_label.items()},
                self.table.canary_weight,
            ),
        )


def _version_view(model: str, record: VersionRecord) -> VersionView:
    signature = record.loaded.runtime.signature if record.loaded is not None else None
    return VersionView(
        model, record.version, record.state, record.runtime, record.reason, record.device, signature
    )


def warm_up(runtime: Runtime, batching: BatchingOptions) -> None:
    """Run a zero batch at every size a batch can have, checking the rows that come back."""
    for size in batching.warmup_sizes():
        outputs = runtime.predict(zero_inputs(runtime.signature, size))
        for spec in runtime.signature.outputs:
            value = outputs.get(spec.name)
            if value is None or len(value) != size:
                raise ValueError(
                    f"warmup at batch size {size}: output {spec.name!r} came back with "
                    f"{'no' if value is None else len(value)} rows"
                )


class ModelManager:
    def __init__(
        self,
        specs: list[ModelSpec],
        *,
        source: AliasFeed | None = None,
        tracer: trace.Tracer | None = None,
        settle_s: float = 0.05,
        drift: DriftOptions | None = None,
        feedback: Callable[[], PredictionLog] = PredictionLog,
    ) -> None:
        self._models = {spec.name: ServedModel(spec, feedback=feedback()) for spec in specs}
        self._source = source
        self._drift = drift
        self._tracer = tracer
        self._settle_s = settle_s
        self._tasks: list[asyncio.Task[None]] = []
        self._unloading: set[asyncio.Task[None]] = set()
        self._catalog: Catalog | None = None
        self._revision = 0
        self._listeners: list[Callable[[], None]] = []
        if source is None and any(spec.from_registry for spec in specs):
            raise ValueError("registry models need a registry source")

    def model(self, name: str) -> ServedModel:
        served = self._models.get(name)
        if served is None:
            raise NotFound("model", name, "model")
        return served

    def models(self) -> list[ServedModel]:
        return [self._models[name] for name in sorted(self._models)]

    def knows(self, name: str) -> bool:
        return name in self._models

    def catalog(self) -> Catalog:
        """A snapshot of every model's versions and routing, rebuilt after each change."""
        if self._catalog is None:
            self._catalog = Catalog(
                {name: served.view() for name, served in self._models.items()}, self._revision
            )
        return self._catalog

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every version state change and routing swap."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self._revision += 1
        self._catalog = None
        for listener in self._listeners:
            listener()

    async def start(self) -> None:
        """Load the static models, then follow the registry for the others."""
        for served in self._models.values():
            if not served.spec.from_registry:
                await self._load_static(served)
        registry_models = [m for m in self._models.values() if m.spec.from_registry]
        if not registry_models:
            return
        assert self._source is not None
        for served in registry_models:
            self._tasks.append(
                asyncio.create_task(self._reconcile_forever(served), name=f"swap-{served.name}")
            )
        self._tasks.append(
            asyncio.create_task(
                self._source.follow(self._on_event, self._on_connected), name="registry-watch"
            )
        )

    async def stop(self) -> None:
        """Stop following the registry, then drain and unload every loaded version."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for served in self._models.values():
            served.table = RoutingTable()
            for record in served.records.values():
                if record.state is VersionState.AVAILABLE:
                    self._begin_unload(served, record, "the service is stopping")
        while self._unloading:
            await asyncio.gather(*self._unloading, return_exceptions=True)

    async def _load_static(self, served: ServedModel) -> None:
        spec = served.spec
        for version, path in sorted(spec.static_versions.items()):
            await self._load(served, version, functools.partial(_local_file, spec.runtime, path))
        by_label = {
            label: record.loaded
            for label, version in spec.static_labels.items()
            if (record := served.records[version]).state is VersionState.AVAILABLE
            and record.loaded is not None
        }
        served.table = RoutingTable(
            {v.version: v for v in by_label.values()}, by_label, spec.static_canary_weight
        )
        self._changed()

    def _on_event(self, event: AliasEvent) -> None:
        served = self._models.get(event.model)
        if served is None or event.alias not in served.spec.aliases:
            return
        if event.version:
            served.desired[event.alias] = (event.version, event.traffic_weight)
        else:
            served.desired.pop(event.alias, None)
        served.dirty.set()

    def _on_connected(self) -> None:
        # Versions that failed while the registry was away get another try.
        for served in self._models.values():
            if served.spec.from_registry:
                served.dirty.set()

    async def _reconcile_forever(self, served: ServedModel) -> None:
        while True:
            await served.dirty.wait()
            await asyncio.sleep(self._settle_s)
            served.dirty.clear()
            try:
                await self._reconcile(served)
            except Exception:  # noqa: BLE001 - one bad swap must not stop the next ones
                log.exception("reconciling model failed", extra={"model": served.name})

    async def _reconcile(self, served: ServedModel) -> None:
        for version in sorted({version for version, _ in served.desired.values()}):
            record = served.records.get(version)
            if record is None or record.state in (VersionState.FAILED, VersionState.END):
                await self._load(served, version, functools.partial(self._fetch, served.spec))
        self._swap(served, dict(served.desired))

    async def _fetch(self, spec: ModelSpec, version: int) -> tuple[str, Path | None]:
        """The runtime that loads a registry version, and its artifact downloaded: with
        `auto`, the runtime of the first artifact (in PREFERENCE order) the version has."""
        assert self._source is not None
        runtime = spec.runtime
        if runtime == AUTO:
            runtime = runtime_for(await self._source.artifacts(spec.name, version))
        path = await self._source.fetch(spec.name, version, RUNTIMES[runtime].artifact)
        return runtime, path

    def _swap(self, served: ServedModel, desired: dict[str, tuple[int, int]]) -> None:
        old = served.table
        by_label: dict[str, LoadedVersion] = {}
        for alias, (version, _) in desired.items():
            record = served.records.get(version)
            if record is not None and record.state is VersionState.AVAILABLE:
                assert record.loaded is not None
                by_label[alias] = record.loaded
            elif alias in old.by_label:
                by_label[alias] = old.by_label[alias]
        weight = desired[CANARY][1] if CANARY in by_label and CANARY in desired else 0
        served.table = RoutingTable({v.version: v for v in by_label.values()}, by_label, weight)
        self._changed()
        metrics.record_routing(
            served.name,
            {label: v.version for label, v in old.by_label.items()},
            {label: v.version for label, v in by_label.items()},
            traffic_shares(served.table),
        )
        log.info(
            "routing table swapped",
            extra={
                "model": served.name,
                "labels": {label: v.version for label, v in by_label.items()},
                "canary_weight": weight,
            },
        )
        kept = {id(v) for v in by_label.values()}
        for record in list(served.records.values()):
            if record.state is VersionState.AVAILABLE and id(record.loaded) not in kept:
                self._begin_unload(served, record, "no served alias names it any more")

    async def _load(
        self,
        served: ServedModel,
        version: int,
        locate: Callable[[int], Awaitable[tuple[str, Path | None]]],
    ) -> None:
        spec = served.spec
        record = VersionRecord(version, VersionState.LOADING, spec.runtime)
        served.records[version] = record
        self._changed()
        stage = "download"
        try:
            record.runtime, path = await locate(version)
            stage = "load"
            runtime = await asyncio.to_thread(
                load_runtime, record.runtime, path, spec.runtime_options
            )
            stage = "warmup"
            await asyncio.to_thread(warm_up, runtime, spec.batching)
        except Exception as error:  # noqa: BLE001 - recorded in the version's status
            record.state = VersionState.FAILED
            record.reason = f"{stage} failed: {type(error).__name__}: {error}"
            self._changed()
            metrics.MODEL_LOADS.labels(spec.name, str(version), "failed").inc()
            log.warning(
                "version failed to load",
                extra={"model": spec.name, "version": version, "reason": record.reason},
            )
            return
        statistics = VersionStatistics(spec.name, version)
        drift = await self._watch_drift(spec, version, runtime.signature)
        batcher = Batcher(
            runtime.predict,
            spec.batching,
            name=f"{spec.name}/{version}",
            metrics=BatcherMetrics(spec.name, version),
            statistics=statistics,
            tracer=self._tracer,
        )
        record.loaded = LoadedVersion(spec.name, version, runtime, batcher, statistics, drift)
        record.device = runtime.device
        record.state = VersionState.AVAILABLE
        self._changed()
        freeze_loaded()
        metrics.MODEL_LOADS.labels(spec.name, str(version), "loaded").inc()
        log.info(
            "version loaded",
            extra={"model": spec.name, "version": version, "device": runtime.device},
        )

    async def _watch_drift(self, spec: ModelSpec, version: int, signature: Signature) -> LiveDrift:
        """The version's drift watch, or one saying why there is none; never fails a load."""
        if self._drift is None:
            note = "drift is off (no data service, or a sampling rate of 0)"
            return LiveDrift.off(spec.name, version, note)
        if not spec.from_registry:
            return LiveDrift.off(spec.name, version, "a static model has no lineage")
        try:
            baseline = await self._drift.baselines.fetch(spec.name, version)
        except Exception as error:  # noqa: BLE001 - drift is an extra; the version still serves
            log.warning(
                "no drift baseline",
                extra={"model": spec.name, "version": version, "reason": repr(error)},
            )
            return LiveDrift.off(spec.name, version, f"baseline unavailable: {error}")
        if baseline is None:
            return LiveDrift.off(spec.name, version, "the version's lineage names no dataset")
        name = baseline.dataset_version
        if len(signature.inputs) != 1:
            note = f"the model takes {len(signature.inputs)} inputs; drift watches one"
            return LiveDrift.off(spec.name, version, note, name)
        only = signature.inputs[0]
        try:
            features = baselines_from_statistics(baseline.features)
        except ValueError as error:
            return LiveDrift.off(spec.name, version, f"unusable statistics: {error}", name)
        if not drift_applicable(only.shape, features):
            note = (
                f"input {only.name!r} {list(only.shape)} does not end in the dataset's "
                f"{len(features)} features"
            )
            return LiveDrift.off(spec.name, version, note, name)
        window = DriftWindow(features, self._drift.sampling_rate, self._drift.window_rows)
        return LiveDrift(spec.name, version, baseline=name, input_name=only.name, window=window)

    def _begin_unload(self, served: ServedModel, record: VersionRecord, reason: str) -> None:
        record.state = VersionState.UNLOADING
        record.reason = reason
        self._changed()
        task = asyncio.create_task(self._unload(served, record))
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)

    async def _unload(self, served: ServedModel, record: VersionRecord) -> None:
        """Drain the version's queue, then free the model; its alias may want it back."""
        loaded = record.loaded
        assert loaded is not None
        await loaded.batcher.close()
        loaded.drift.close()
        await asyncio.to_thread(loaded.runtime.unload)
        record.loaded = None
        del loaded
        collect_released()
        record.state = VersionState.END
        self._changed()
        metrics.MODEL_UNLOADS.labels(served.name, str(record.version)).inc()
        log.info("version unloaded", extra={"model": served.name, "version": record.version})
        if any(version == record.version for version, _ in served.desired.values()):
            served.dirty.set()


def traffic_shares(table: RoutingTable[LoadedVersion]) -> dict[int, float]:
    """Each routed version's share (0 to 1) of the requests that pin nothing."""
    shares: dict[int, float] = {}
    canary = table.by_label.get(CANARY)
    canary_share = table.canary_weight / 100 if canary is not None else 0.0
    production = table.by_label.get(PRODUCTION)
    if production is not None:
        shares[production.version] = 1.0 - canary_share
    if canary is not None and canary_share:
        shares[canary.version] = shares.get(canary.version, 0.0) + canary_share
    return shares


async def _local_file(runtime: str, path: Path | None, version: int) -> tuple[str, Path | None]:
    """A static version's runtime (`auto`: by its file) and file."""
    return static_runtime(runtime, path), path
