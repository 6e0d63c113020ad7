"""What to serve: model specs from the settings and an optional model config file.

The file is JSON, modelled on TF Serving's model config list: one entry per model with
its runtime, runtime options and batching parameters. An entry with `versions` serves
those local files (paths relative to the file) with `labels` naming versions (default:
`production` is the highest) and an optional `canary_weight`; an entry without follows
the registry's aliases. For example:

    {"models": [{"name": "digits", "runtime": "keras_jax",
                 "versions": [{"version": 1, "path": "digits.keras"}],
                 "batching": {"max_batch_size": 64, "batch_timeout_micros": 500}}]}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.inference.batcher import BatchingOptions, powers_of_two_up_to
from services.inference.runtimes import known_runtime
from services.inference.settings import InferenceSettings
from shared.aliases import CANARY, PRODUCTION
from shared.names import name_problem
from shared.settings import SettingsError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    runtime: str
    batching: BatchingOptions
    runtime_options: Mapping[str, Any] = field(default_factory=dict)
    # Local files by version; empty for a model that follows the registry.
    static_versions: Mapping[int, Path | None] = field(default_factory=dict)
    static_labels: Mapping[str, int] = field(default_factory=dict)
    static_canary_weight: int = 0
    # Registry aliases this model follows.
    aliases: tuple[str, ...] = ()

    @property
    def from_registry(self) -> bool:
        return not self.static_versions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchingEntry(_Strict):
    max_batch_size: int | None = None
    batch_timeout_micros: int | None = None
    allowed_batch_sizes: list[int] | None = None
    num_batch_threads: int | None = None
    max_enqueued_batches: int | None = None


class VersionEntry(_Strict):
    version: int = Field(ge=1)
    path: Path | None = None


class ModelEntry(_Strict):
    name: str
    runtime: str | None = None
    runtime_options: dict[str, Any] = Field(default_factory=dict)
    batching: BatchingEntry = Field(default_factory=BatchingEntry)
    versions: list[VersionEntry] = Field(default_factory=list)
    labels: dict[str, int] = Field(default_factory=dict)
    canary_weight: int = Field(default=0, ge=0, le=100)
    aliases: list[str] | None = None


class ModelConfigFile(_Strict):
    models: list[ModelEntry]


def batching_options(settings: InferenceSettings, entry: BatchingEntry) -> BatchingOptions:
    """The entry's parameters over the settings' defaults; ValueError when inconsistent."""
    max_batch_size = entry.max_batch_size or settings.max_batch_size
    if entry.allowed_batch_sizes is not None:
        allowed = tuple(entry.allowed_batch_sizes)
    elif settings.allowed_batch_sizes and entry.max_batch_size is None:
        allowed = tuple(settings.allowed_batch_sizes)
    else:
        allowed = powers_of_two_up_to(max_batch_size)

    def pick(value: int | None, default: int) -> int:
        return default if value is None else value

    return BatchingOptions(
        max_batch_size=max_batch_size,
        batch_timeout_micros=pick(entry.batch_timeout_micros, settings.batch_timeout_micros),
        allowed_batch_sizes=allowed,
        num_batch_threads=pick(entry.num_batch_threads, settings.num_batch_threads),
        max_enqueued_batches=pick(entry.max_enqueued_batches, settings.max_enqueued_batches),
    )


def _spec(entry: ModelEntry, settings: InferenceSettings, base: Path) -> ModelSpec:
    runtime = known_runtime(entry.runtime or settings.runtime)
    if problem := name_problem(entry.name):
        raise ValueError(f"model name {entry.name!r} {problem}")
    options = {"gpu_memory_limit_mb": settings.gpu_memory_limit_mb, **entry.runtime_options}
    batching = batching_options(settings, entry.batching)
    if not entry.versions:
        aliases = tuple(entry.aliases if entry.aliases is not None else settings.aliases)
        return ModelSpec(entry.name, runtime, batching, options, aliases=aliases)
    versions = {v.version: (base / v.path if v.path else None) for v in entry.versions}
    if len(versions) != len(entry.versions):
        raise ValueError(f"model {entry.name!r} lists a version twice")
    if runtime != "noop" and None in versions.values():
        raise ValueError(f"model {entry.name!r}: every version of a {runtime} model needs a path")
    labels = dict(entry.labels) or {PRODUCTION: max(versions)}
    for label, version in labels.items():
        if version not in versions:
            raise ValueError(f"label {label!r} of model {entry.name!r} names no listed version")
    if entry.canary_weight and CANARY not in labels:
        raise ValueError(f"model {entry.name!r} has a canary_weight but no {CANARY!r} label")
    return ModelSpec(
        entry.name,
        runtime,
        batching,
        options,
        static_versions=versions,
        static_labels=labels,
        static_canary_weight=entry.canary_weight,
    )


def model_specs(settings: InferenceSettings) -> list[ModelSpec]:
    """Every model to serve; raises SettingsError naming the variable or file at fault."""
    entries: list[tuple[ModelEntry, Path, str]] = []
    if settings.model_config_file is not None:
        path = settings.model_config_file
        source = f"TFMESH_INFERENCE_MODEL_CONFIG_FILE ({path})"
        try:
            document = ModelConfigFile.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError, ValidationError) as error:
            raise SettingsError(f"{source}: {error}") from None
        entries += [(entry, path.parent, source) for entry in document.models]
    entries += [
        (ModelEntry(name=name), Path.cwd(), "TFMESH_INFERENCE_MODELS") for name in settings.models
    ]
    specs: dict[str, ModelSpec] = {}
    for entry, base, source in entries:
        try:
            spec = _spec(entry, settings, base)
        except ValueError as error:
            raise SettingsError(f"{source}: {error}") from None
        if spec.name in specs:
            raise SettingsError(f"{source}: model {spec.name!r} is configured twice")
        specs[spec.name] = spec
    return list(specs.values())
