"""Rollouts decided by live evidence, on a real stack of processes: a registry (with its
rollout controller) and an inference service (a model owner and a front end), under
steady unpinned load with feedback from the test split. In order:

(a) a better v2 goes 5 -> 20 -> 50 -> 100 % and is promoted with no failed request, while
    the registry is killed with SIGKILL mid-rollout and started again;
(b) v3, failing on about a fifth of the rows, is rolled back within its first step;
(c) v4, trained on shuffled labels (fast, no errors, right one time in ten), is rolled back
    once its live accuracy has its minimum sample;
(d) v5, several times slower, trips the latency check.

Each asserts the rollout's events (the decision and its evidence) and the alias audit
log. The versions' registered metrics are what an offline evaluation said, so each passes
the promotion gate; the live evidence is what tells them apart."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import threading
import time

import grpc
import pytest

from services.registry.client import ArtifactFile, NewVersion, RegistryClient
from shared.tensors import to_tensor
from tests.inference.test_process import wait_for_labels
from tests.rollouts import models
from tests.support.processes import REPO, service_process
from tfmesh.inference.v1 import inference_pb2 as ipb
from tfmesh.inference.v1 import inference_pb2_grpc
from tfmesh.registry.v1 import registry_pb2 as pb
from tfmesh.registry.v1 import registry_pb2_grpc

MODEL = "digits"
CLIENTS = 4
POLICY = pb.RolloutPolicy(
    model=MODEL,
    steps=[5, 20, 50, 100],
    step_seconds=1.0,
    step_min_requests=25,
    step_timeout_seconds=60,
    checks=[
        pb.RolloutCheck(
            metric=pb.RolloutCheck.METRIC_ERROR_RATIO, max_degradation=0.02, min_samples=40
        ),
        pb.RolloutCheck(
            metric=pb.RolloutCheck.METRIC_LATENCY_P99, max_degradation=1.0, min_samples=40
        ),
        pb.RolloutCheck(
            metric=pb.RolloutCheck.METRIC_LIVE_ACCURACY, max_degradation=0.1, min_samples=60
        ),
    ],
    confidence=0.99,
)
ENDED = {pb.Rollout.STATE_PROMOTED, pb.Rollout.STATE_ROLLED_BACK, pb.Rollout.STATE_ABORTED}


class Traffic:
    """`CLIENTS` closed-loop clients on a thread of their own, each sending one test row at a
    time, unpinned; the true label of every answered prediction goes back as feedback by its
    request id, in batches. Answers are counted by (version, status code)."""

    def __init__(self, address: str, data: models.Digits) -> None:
        self._address = address
        self._data = data
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: collections.Counter[tuple[int, str]] = collections.Counter()
        self.feedback: collections.Counter[str] = collections.Counter()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def take(self) -> collections.Counter[tuple[int, str]]:
        """The answers counted since the last take."""
        with self._lock:
            taken, self.answers = self.answers, collections.Counter()
        return taken

    async def _main(self) -> None:
        pending: list[ipb.FeedbackItem] = []
        async with grpc.aio.insecure_channel(self._address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            tasks = [asyncio.create_task(self._client(stub, i, pending)) for i in range(CLIENTS)]
            while not self._stop.is_set():
                await asyncio.sleep(0.2)
                batch, pending[:] = list(pending), []
                if batch:
                    answer = await stub.ReportFeedback(
                        ipb.ReportFeedbackRequest(model=MODEL, items=batch), timeout=10
                    )
                    self.feedback.update(matched=answer.matched, unknown=answer.unknown)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, stub, index: int, pending: list[ipb.FeedbackItem]) -> None:
        rows = range(index, len(self._data.test_x), CLIENTS)
        while True:
            for row in rows:
                request = ipb.PredictRequest(
                    model=MODEL, inputs={"x": to_tensor(self._data.test_x[row : row + 1])}
                )
                try:
                    answer = await stub.Predict(request, timeout=10)
                except grpc.aio.AioRpcError as error:
                    with self._lock:
                        self.answers[(0, error.code().name)] += 1
                    continue
                with self._lock:
                    self.answers[(answer.version, "OK")] += 1
                pending.append(
                    ipb.FeedbackItem(
                        request_id=answer.request_id, labels=[float(self._data.test_y[row])]
                    )
                )


def registry_stub(address: str) -> tuple[grpc.Channel, registry_pb2_grpc.RegistryServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, registry_pb2_grpc.RegistryServiceStub(channel)


def upload(address: str, tar, accuracy: float) -> int:
    async def go() -> int:
        async with grpc.aio.insecure_channel(address) as channel:
            new = NewVersion(MODEL, [ArtifactFile("saved_model.tar", tar)], {"accuracy": accuracy})
            return (await RegistryClient(channel).upload_version(new)).version.version

    return asyncio.run(go())


def rollout_of(address: str) -> pb.Rollout | None:
    channel, stub = registry_stub(address)
    with channel:
        try:
            return stub.GetRollout(pb.GetRolloutRequest(model=MODEL), timeout=5).rollout
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                return None
            raise


def wait_rollout(address: str, version: int, until, timeout_s: float = 120) -> pb.Rollout:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rollout = rollout_of(address)
        if rollout is not None and rollout.version == version and until(rollout):
            return rollout
        time.sleep(0.1)
    raise AssertionError(f"the rollout of v{version} did not get there: {rollout_of(address)}")


def alias_history(address: str) -> list[pb.AliasChange]:
    channel, stub = registry_stub(address)
    with channel:
        request = pb.ListAliasHistoryRequest(model=MODEL, page_size=1000)
        return list(stub.ListAliasHistory(request, timeout=5).changes)


def assert_promoted_step_by_step(address: str, version: int) -> None:
    """The alias audit trail of a promotion: the canary at each of the policy's steps,
    then production, then no canary."""
    moves = [(c.alias, c.new_version, c.new_traffic_weight) for c in alias_history(address)]
    steps = [("canary", version, weight) for weight in POLICY.steps]
    assert moves[-len(steps) - 2 :] == [*steps, ("production", version, 0), ("canary", 0, 0)]


def rolled_back(address: str, rollout: pb.Rollout) -> pb.RolloutEvent:
    """The rollback event of a rolled-back rollout, after checking its alias audit trail:
    the canary went to the version at the first step and away again, both moves by the
    controller, and production never named the version."""
    assert rollout.state == pb.Rollout.STATE_ROLLED_BACK, rollout
    assert [e.kind for e in rollout.events][-1] == "rolled_back"
    version = rollout.version
    history = alias_history(address)
    moves = [c for c in history if version in (c.new_version, c.old_version)]
    assert (moves[0].alias, moves[0].new_version, moves[0].new_traffic_weight) == (
        "canary",
        version,
        POLICY.steps[0],
    )
    assert (moves[-1].alias, moves[-1].new_version) == ("canary", 0)
    assert {c.alias for c in moves} == {"canary"}
    assert {c.actor for c in moves} == {"rollout-controller"}
    assert moves[-1].reason == rollout.events[-1].detail
    return rollout.events[-1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollouts")
    data = models.digits()
    small = models.trained(16, 5, data)
    large = models.trained(64, 20, data)
    shuffled = models.trained(64, 20, data, shuffle_labels=True)
    tars = {
        1: models.export(small, root / "v1"),
        2: models.export(large, root / "v2"),
        3: models.export(large, root / "v3", "failing"),
        4: models.export(shuffled, root / "v4"),
        5: models.export(large, root / "v5", "slow"),
    }
    home = root / "home"
    home.mkdir()
    inference = service_process(
        "services.inference.server",
        "TFMESH_INFERENCE_",
        home,
        TFMESH_INFERENCE_MODELS=MODEL,
        TFMESH_INFERENCE_FRONTENDS="1",
        TFMESH_INFERENCE_REGISTRY_MAX_BACKOFF_S="0.5",
        TFMESH_INFERENCE_MAX_BATCH_SIZE="16",
    )
    registry = service_process(
        "services.registry.server",
        "TFMESH_REGISTRY_",
        home,
        TFMESH_REGISTRY_WATCH_POLL_INTERVAL_S="0.2",
        TFMESH_REGISTRY_INFERENCE_ADDR=inference.address,
        TFMESH_REGISTRY_ROLLOUT_INTERVAL_S="0.2",
    )
    inference.env["TFMESH_INFERENCE_REGISTRY_ADDR"] = registry.address
    traffic = Traffic(inference.address, data)
    try:
        registry.start()
        assert upload(registry.address, tars[1], 0.90) == 1
        channel, stub = registry_stub(registry.address)
        with channel:
            stub.SetAlias(pb.SetAliasRequest(model=MODEL, alias="production", version=1))
            stub.SetRolloutPolicy(pb.SetRolloutPolicyRequest(policy=POLICY))
        inference.start(timeout_s=120)
        wait_for_labels(inference.address, {"production": 1})
        traffic.start()
        yield registry, inference, traffic, tars
    finally:
        traffic.stop()
        inference.stop_quietly()
        registry.stop_quietly()


def test_a_better_version_rolls_out_to_all_traffic_and_survives_a_killed_registry(stack):
    registry, inference, traffic, tars = stack
    traffic.take()
    assert upload(registry.address, tars[2], 0.95) == 2
    wait_rollout(registry.address, 2, lambda r: r.step >= 1)
    registry.kill()  # SIGKILL mid-rollout: the controller's next start resumes it
    time.sleep(0.5)
    registry.start()
    rollout = wait_rollout(registry.address, 2, lambda r: r.state in ENDED)
    assert rollout.state == pb.Rollout.STATE_PROMOTED, rollout
    assert [(e.kind, e.step, e.traffic_weight) for e in rollout.events] == [
        ("started", 0, 5),
        ("stepped", 1, 20),
        ("stepped", 2, 50),
        ("stepped", 3, 100),
        ("promoted", 3, 100),
    ]
    assert {e.actor for e in rollout.events} == {"rollout-controller"}
    passed = rollout.events[-1]
    assert passed.detail.startswith("step 4 of 4 (100%) passed")
    assert passed.evidence["live_accuracy.canary"] > 0.9
    assert passed.evidence["error_ratio.canary"] == 0
    wait_for_labels(inference.address, {"production": 2})
    answers = traffic.take()
    assert {code for _, code in answers} == {"OK"}, answers
    assert answers[(2, "OK")] > 100 and answers[(1, "OK")] > 0
    assert_promoted_step_by_step(registry.address, 2)
    assert traffic.feedback["matched"] > 100
    status = subprocess.run(
        [sys.executable, "-m", "cli", "rollout", "status", MODEL],
        cwd=REPO,
        env={"TFMESH_REGISTRY_ADDR": registry.address, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert "promoted" in status.stdout and "step 4 of 4 (100%) passed" in status.stdout


def test_a_version_that_fails_a_fifth_of_rows_is_rolled_back_in_its_first_step(stack):
    registry, inference, traffic, tars = stack
    traffic.take()
    assert upload(registry.address, tars[3], 0.96) == 3
    event = rolled_back(
        registry.address, wait_rollout(registry.address, 3, lambda r: r.state in ENDED)
    )
    assert event.step == 0 and event.traffic_weight == 5
    assert "error ratio" in event.detail and "worse by more than 0.02" in event.detail
    assert event.evidence["error_ratio.canary"] > 0.05
    assert event.evidence["error_ratio.production"] == 0
    wait_for_labels(inference.address, {"production": 2})
    answers = traffic.take()
    failed = sum(n for (_, code), n in answers.items() if code != "OK")
    assert 0 < failed < answers[(2, "OK")] / 10, answers


def test_a_version_with_poor_live_accuracy_is_rolled_back_at_its_minimum_sample(stack):
    registry, inference, traffic, tars = stack
    traffic.take()
    assert upload(registry.address, tars[4], 0.97) == 4
    event = rolled_back(
        registry.address, wait_rollout(registry.address, 4, lambda r: r.state in ENDED)
    )
    assert "live accuracy" in event.detail
    assert "error ratio" not in event.detail and "p99 latency" not in event.detail
    assert event.evidence["live_accuracy.canary"] < 0.3
    assert event.evidence["live_accuracy.canary_n"] >= 60
    assert event.evidence["error_ratio.canary"] == 0
    wait_for_labels(inference.address, {"production": 2})
    assert {code for _, code in traffic.take()} == {"OK"}


def test_a_slower_version_trips_the_latency_check(stack):
    registry, inference, traffic, tars = stack
    traffic.take()
    assert upload(registry.address, tars[5], 0.98) == 5
    event = rolled_back(
        registry.address, wait_rollout(registry.address, 5, lambda r: r.state in ENDED)
    )
    assert "p99 latency" in event.detail
    assert "live accuracy" not in event.detail
    canary, production = (
        event.evidence["latency_p99.canary_seconds"],
        event.evidence["latency_p99.production_seconds"],
    )
    assert canary >= 3 * production, event
    wait_for_labels(inference.address, {"production": 2})
    assert {code for _, code in traffic.take()} == {"OK"}
