"""The local stack's scaled shape (cli.scaled): which processes `tfmesh up --scaled` runs,
on which ports, and how each learns every replica of its peers."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.rpc import address
from cli.scaled import REPLICA_OFFSET
from cli.stack import SCALED_MARKER, built_services, peer_environment


def test_the_embedded_shape_trains_in_one_worker_process() -> None:
    services = built_services()
    assert [spec.name for spec in services] == [
        "registry",
        "data",
        "training",
        "worker",
        "inference",
        "gateway",
    ]
    by_name = {spec.name: spec for spec in services}
    assert by_name["training"].process_environment()["TFMESH_TRAINING_CONCURRENCY"] == "0"
    assert "TFMESH_TRAINING_CONCURRENCY" not in by_name["worker"].process_environment()
    assert len({spec.port for spec in services}) == len(services)
    assert len({spec.metrics_port for spec in services}) == len(services)


def test_the_workers_ports_follow_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFMESH_TRAINING_WORKER_PORT", "41234")
    monkeypatch.setenv("TFMESH_TRAINING_WORKER_METRICS_PORT", "41235")
    monkeypatch.setenv("TFMESH_TRAINING_PORT", "41236")
    by_name = {spec.name: spec for spec in built_services()}
    assert (by_name["worker"].port, by_name["worker"].metrics_port) == (41234, 41235)
    assert by_name["training"].port == 41236
    scaled = {spec.name: spec for spec in built_services(scaled=True)}
    assert (scaled["worker-1"].port, scaled["worker-1"].metrics_port) == (41234, 41235)
    assert scaled["worker-2"].port == 41234 + REPLICA_OFFSET


def test_two_replicas_of_the_stateful_services_and_two_workers() -> None:
    shaped = built_services(scaled=True)
    names = [spec.name for spec in shaped]
    assert names == [
        "registry",
        "registry-2",
        "data",
        "data-2",
        "training",
        "training-2",
        "worker-1",
        "worker-2",
        "inference",
        "gateway",
    ]
    by_name = {spec.name: spec for spec in shaped}
    assert by_name["data-2"].port == by_name["data"].port + REPLICA_OFFSET
    assert len({spec.port for spec in shaped}) == len(shaped)
    assert len({spec.metrics_port for spec in shaped}) == len(shaped)
    # The training API trains nothing itself; the workers do, on ports of their own.
    for name in ("training", "training-2"):
        assert by_name[name].process_environment()["TFMESH_TRAINING_CONCURRENCY"] == "0"
    worker = by_name["worker-2"].process_environment()
    assert worker["TFMESH_TRAINING_WORKER_PORT"] == str(by_name["worker-2"].port)
    assert "TFMESH_TRAINING_PORT" not in worker


def test_every_client_is_given_every_replica() -> None:
    shaped = built_services(scaled=True)
    env = peer_environment(shaped)
    by_name = {spec.name: spec for spec in shaped}
    both = f"{by_name['registry'].address},{by_name['registry-2'].address}"
    assert env["TFMESH_INFERENCE_REGISTRY_ADDR"] == both
    assert env["TFMESH_TRAINING_REGISTRY_ADDR"] == both
    assert env["TFMESH_GATEWAY_TRAINING_ADDR"] == (
        f"{by_name['training'].address},{by_name['training-2'].address}"
    )
    # Workers are nobody's peer.
    assert not any(key.endswith("_TRAINING-WORKER_ADDR") for key in env)


def test_the_command_reaches_every_replica_of_a_scaled_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFMESH_HOME", str(tmp_path))
    for variable in ("REGISTRY_ADDR", "REGISTRY_PORT", "INFERENCE_ADDR", "INFERENCE_PORT"):
        monkeypatch.delenv(f"TFMESH_{variable}", raising=False)
    assert address("registry") == "127.0.0.1:50053"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / SCALED_MARKER).touch()
    assert address("registry") == "127.0.0.1:50053,127.0.0.1:50153"
    assert address("inference") == "127.0.0.1:50054"
    monkeypatch.setenv("TFMESH_REGISTRY_ADDR", "10.0.0.1:1")
    assert address("registry") == "10.0.0.1:1"
