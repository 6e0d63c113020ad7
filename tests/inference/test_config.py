"""Unit tests of settings and the model config file: defaults, overrides, clear errors."""

from __future__ import annotations

import json
import os

import pytest

from services.inference import settings as inference_settings
from services.inference.config import model_specs
from services.inference.settings import InferenceSettings, usable_cores
from shared.settings import SettingsError, load_settings


def test_registry_models_from_the_environment_get_the_default_batching(monkeypatch, tmp_path):
    monkeypatch.setenv("TFMESH_INFERENCE_MODELS", "digits, cnn")
    monkeypatch.setenv("TFMESH_INFERENCE_MAX_BATCH_SIZE", "12")
    settings = load_settings(InferenceSettings, home=tmp_path)
    assert settings.port == 50054
    specs = model_specs(settings)
    assert [s.name for s in specs] == ["digits", "cnn"]
    assert all(s.from_registry for s in specs)
    assert specs[0].aliases == ("production", "canary")
    assert specs[0].batching.allowed_batch_sizes == (1, 2, 4, 8, 12)


def test_a_bad_variable_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("TFMESH_INFERENCE_RUNTIME", "pytorch")
    with pytest.raises(SettingsError, match="TFMESH_INFERENCE_RUNTIME"):
        load_settings(InferenceSettings, home=tmp_path)
    monkeypatch.delenv("TFMESH_INFERENCE_RUNTIME")
    monkeypatch.setenv("TFMESH_INFERENCE_ALLOWED_BATCH_SIZES", "1,two")
    with pytest.raises(SettingsError, match="TFMESH_INFERENCE_ALLOWED_BATCH_SIZES"):
        load_settings(InferenceSettings, home=tmp_path)


def write(tmp_path, models) -> InferenceSettings:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": models}))
    return InferenceSettings(home=tmp_path, model_config_file=path)


def test_static_entries_resolve_paths_labels_and_batching(tmp_path):
    settings = write(
        tmp_path,
        [
            {
                "name": "digits",
                "runtime": "keras_jax",
                "versions": [{"version": 1, "path": "a.keras"}, {"version": 3, "path": "b.keras"}],
                "batching": {"max_batch_size": 6, "num_batch_threads": 2},
            }
        ],
    )
    (spec,) = model_specs(settings)
    assert spec.static_versions == {1: tmp_path / "a.keras", 3: tmp_path / "b.keras"}
    assert spec.static_labels == {"production": 3}
    assert spec.batching.allowed_batch_sizes == (1, 2, 4, 6)
    assert spec.batching.num_batch_threads == 2


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"name": "m", "batching": {"max_batch_size": 8, "allowed_batch_sizes": [2, 4]}}, "equal"),
        ({"name": "m", "runtime": "onnx"}, "unknown runtime"),
        ({"name": "../m"}, "model name"),
        ({"name": "m", "versions": [{"version": 1, "path": "a"}], "labels": {"x": 2}}, "label"),
        ({"name": "m", "versions": [{"version": 1}]}, "needs a path"),
        ({"name": "m", "batchng": {}}, "batchng"),
    ],
)
def test_config_problems_name_the_file(tmp_path, entry, problem):
    with pytest.raises(SettingsError, match=problem) as error:
        model_specs(write(tmp_path, [entry]))
    assert "TFMESH_INFERENCE_MODEL_CONFIG_FILE" in str(error.value)


def test_a_model_configured_twice_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TFMESH_INFERENCE_MODELS", "m")
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [{"name": "m"}]}))
    settings = load_settings(InferenceSettings, home=tmp_path, model_config_file=path)
    with pytest.raises(SettingsError, match="twice"):
        model_specs(settings)


def test_usable_cores_follow_the_affinity_and_a_cgroup_cpu_limit(tmp_path, monkeypatch):
    """The default number of front ends: a container limited to 1.5 CPUs on a 16-core node
    gets 2, not 16 (CPU limits are quotas, which the affinity mask does not show)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    v2 = tmp_path / "cpu.max"
    monkeypatch.setattr(inference_settings, "CGROUP_QUOTAS", ((v2, None),))
    v2.write_text("150000 100000\n")
    assert usable_cores() == 2
    v2.write_text("max 100000\n")
    assert usable_cores() == 16
    quota, period = tmp_path / "cfs_quota_us", tmp_path / "cfs_period_us"
    monkeypatch.setattr(inference_settings, "CGROUP_QUOTAS", ((quota, period),))
    quota.write_text("400000\n")
    period.write_text("100000\n")
    assert usable_cores() == 4
    quota.write_text("-1\n")
    assert usable_cores() == 16
    monkeypatch.setattr(inference_settings, "CGROUP_QUOTAS", ((tmp_path / "none", None),))
    assert usable_cores() == 16
    assert InferenceSettings().frontends == 16


def test_tensorflow_threads_are_the_cores_the_front_ends_leave(monkeypatch):
    from services.inference import server

    monkeypatch.setattr(server, "usable_cores", lambda: 16)
    assert server.compute_threads(InferenceSettings(frontends=12)) == (4, 4)
    assert server.compute_threads(InferenceSettings(frontends=16)) == (1, 1)
    assert server.compute_threads(InferenceSettings(frontends=0)) == (16, 16)
    explicit = InferenceSettings(frontends=12, intra_op_threads=2, inter_op_threads=3)
    assert server.compute_threads(explicit) == (2, 3)
