"""The tfmesh inference API on a real grpc.aio server (in-process, port 0): predictions,
pins, streams, status, bad input, overload, deadlines, metrics and spans."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from services.inference.settings import InferenceSettings
from shared.channels import open_channel
from shared.telemetry import setup_telemetry
from shared.tensors import from_tensor, to_tensor
from tests.inference.conftest import slow_model_entry, start_server_in_process, write_model_config
from tests.inference.models import digits_rows
from tfmesh.common.v1 import common_pb2
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc


@pytest.fixture
def stub(channel) -> inference_pb2_grpc.InferenceServiceStub:
    return inference_pb2_grpc.InferenceServiceStub(channel)


def keras_predict(artifacts, version: int, rows: np.ndarray) -> np.ndarray:
    import keras

    model = keras.saving.load_model(artifacts[version]["model.keras"])
    return np.asarray(model.predict(rows, verbose=0))


def request(rows: np.ndarray, **fields) -> pb.PredictRequest:
    return pb.PredictRequest(model="digits", inputs={"x": to_tensor(rows)}, **fields)


async def test_predict_follows_production_and_pins(stub, artifacts):
    rows = digits_rows(3)
    answer = await stub.Predict(request(rows))
    assert answer.version == 1
    output = from_tensor(answer.outputs["output_0"])
    np.testing.assert_allclose(output, keras_predict(artifacts, 1, rows), rtol=1e-5, atol=1e-6)
    pinned = await stub.Predict(request(rows, version=2))
    assert pinned.version == 2
    np.testing.assert_allclose(
        from_tensor(pinned.outputs["output_0"]),
        keras_predict(artifacts, 2, rows),
        rtol=1e-5,
        atol=1e-6,
    )
    labelled = await stub.Predict(request(rows, label="canary", request_id="r1"))
    assert (labelled.version, labelled.request_id) == (2, "r1")


async def test_concurrent_requests_are_batched_and_answered_separately(stub):
    rows = digits_rows(16, seed=3)
    answers = await asyncio.gather(*(stub.Predict(request(rows[i : i + 1])) for i in range(16)))
    together = from_tensor((await stub.Predict(request(rows[:8]))).outputs["output_0"])
    for i in range(8):
        np.testing.assert_allclose(
            from_tensor(answers[i].outputs["output_0"])[0], together[i], rtol=1e-5, atol=1e-6
        )


async def test_predict_stream_answers_each_request_and_survives_a_bad_one(stub):
    good = digits_rows(1)

    async def requests():
        for i in range(4):
            yield request(good, request_id=f"ok-{i}")
        yield request(good.astype(np.float64), request_id="bad")
        yield request(good, version=2, request_id="v2")

    answers = {a.request_id: a async for a in stub.PredictStream(requests())}
    assert set(answers) == {"ok-0", "ok-1", "ok-2", "ok-3", "bad", "v2"}
    assert answers["v2"].response.version == 2
    assert answers["ok-0"].response.version == 1
    error = answers["bad"].error
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    status = status_pb2.Status.FromString(error.SerializeToString())
    bad_request = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "inputs[x]"


async def test_model_status_and_list(stub):
    status = (await stub.GetModelStatus(pb.GetModelStatusRequest(model="digits"))).status
    assert [v.version for v in status.versions] == [1, 2]
    assert {v.state for v in status.versions} == {pb.VersionStatus.STATE_AVAILABLE}
    assert [list(v.labels) for v in status.versions] == [["production"], ["canary"]]
    first = status.versions[0]
    assert first.runtime == "tensorflow" and "CPU" in first.device
    assert first.inputs[0].name == "x" and list(first.inputs[0].shape) == [-1, 64]
    assert first.inputs[0].dtype == common_pb2.DTYPE_FLOAT32
    assert status.batching.max_batch_size == 8
    assert list(status.batching.allowed_batch_sizes) == [1, 2, 4, 8]
    page = await stub.ListModels(pb.ListModelsRequest(page_size=1))
    assert [m.name for m in page.models] == ["digits"] and page.next_page_token
    rest = await stub.ListModels(pb.ListModelsRequest(page_token=page.next_page_token))
    assert [m.name for m in rest.models] == ["slow"] and not rest.next_page_token


BAD_INPUTS = {
    "wrong dtype": ({"x": to_tensor(digits_rows(2).astype(np.float64))}, "inputs[x]", "float64"),
    "wrong rank": ({"x": to_tensor(digits_rows(2).reshape(2, 8, 8))}, "inputs[x]", "rank 3"),
    "wrong dims": ({"x": to_tensor(digits_rows(2)[:, :63])}, "inputs[x]", "dimension 1"),
    "unknown input name": (
        {"x": to_tensor(digits_rows(1)), "pixels": to_tensor(digits_rows(1))},
        "inputs[pixels]",
        "unknown input",
    ),
    "empty tensor": ({"x": to_tensor(np.zeros((0, 64), np.float32))}, "inputs[x]", "no rows"),
    "wrong byte length": (
        {
            "x": common_pb2.Tensor(
                dtype=common_pb2.DTYPE_FLOAT32, shape=[1, 64], content=b"\0" * 255
            )
        },
        "inputs[x].content",
        "256 bytes",
    ),
    # The digits model batches 8 rows and queues 16 batches: 129 rows cannot be queued.
    "too many rows": ({"x": to_tensor(digits_rows(129))}, "inputs[x]", "max_enqueued_batches"),
}


async def test_a_request_over_max_batch_size_is_split_and_joined_in_order(stub):
    rows = digits_rows(20, seed=3)
    whole = await stub.Predict(request(rows))
    one_by_one = [await stub.Predict(request(rows[i : i + 1])) for i in range(len(rows))]
    joined = from_tensor(whole.outputs["output_0"])
    assert joined.shape[0] == 20
    expected = np.concatenate([from_tensor(r.outputs["output_0"]) for r in one_by_one])
    np.testing.assert_allclose(joined, expected, atol=1e-6)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
async def test_bad_input_is_invalid_argument_with_a_field_violation(stub, case):
    inputs, field, words = BAD_INPUTS[case]
    call = stub.Predict(pb.PredictRequest(model="digits", inputs=inputs))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status.aio.from_call(call)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    violations = {v.field: v.description for v in bad_request.field_violations}
    assert words in violations[field]
    assert (await stub.Predict(request(digits_rows(1)))).version == 1


async def test_unknown_model_version_and_label_are_not_found(stub):
    for bad in (
        pb.PredictRequest(model="nope", inputs={"x": to_tensor(digits_rows(1))}),
        request(digits_rows(1), version=7),
        request(digits_rows(1), label="staging"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Predict(bad)
        assert error.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Predict(
            pb.PredictRequest(
                model="digits", output_filter=["logits"], inputs={"x": to_tensor(digits_rows(1))}
            )
        )
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def computed_rows(model: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "tfmesh_inference_batch_rows_sum", {"model": model, "version": "1"}
        )
        or 0.0
    )


def queued_rows(model: str) -> float:
    return (
        REGISTRY.get_sample_value("tfmesh_inference_queued_rows", {"model": model, "version": "1"})
        or 0
    )


async def fill_the_queue(stub, rows: int, timeout_s: float = 10) -> list[asyncio.Future]:
    """Send slow requests, one every 20 ms, until `rows` wait behind the batch computing;
    the calls sent. Arrivals keep coming until the queue is seen full, so a slow machine
    only makes it wait longer (a request that finds it full is refused: counted later)."""
    deadline = time.monotonic() + timeout_s
    calls: list[asyncio.Future] = []
    while queued_rows("slow") < rows:
        assert time.monotonic() < deadline, f"{rows} rows of slow never queued"
        calls.append(asyncio.ensure_future(stub.Predict(slow_request(len(calls) + 1))))
        await asyncio.sleep(0.02)
    return calls


async def served_count(calls: list[asyncio.Future]) -> int:
    """How many of `calls` were answered; every other one must have been refused as full."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(
        isinstance(o, grpc.aio.AioRpcError) and o.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        for o in failed
    ), failed
    return len(outcomes) - len(failed)


def slow_request(value: float) -> pb.PredictRequest:
    return pb.PredictRequest(
        model="slow", inputs={"x": to_tensor(np.full((1, 64), value, np.float32))}
    )


async def test_drift_questions_are_checked_and_a_version_without_drift_says_why(stub):
    for bad in (pb.GetDriftRequest(), pb.GetDriftRequest(model="digits", version=-1)):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetDrift(bad)
        assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    for unknown in (
        pb.GetDriftRequest(model="nope"),
        pb.GetDriftRequest(model="digits", version=7),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetDrift(unknown)
        assert error.value.code() is grpc.StatusCode.NOT_FOUND
    # A static model with no data service: no scores, and the answer says why (through the
    # front ends' statistics frames too, in the split shape).
    reply = await stub.GetDrift(pb.GetDriftRequest(model="digits"))
    assert [v.version for v in reply.versions] == [1, 2]
    assert all(not v.features and "drift is off" in v.note for v in reply.versions)


async def test_overload_fails_fast_and_expired_requests_are_not_computed(stub):
    await stub.Predict(slow_request(0))
    before = computed_rows("slow")
    # One batch of one row computing (200 ms), two rows queued: the queue is full. Seen
    # on the queue gauge, not assumed after a sleep.
    busy = await fill_the_queue(stub, 2)

    async def probe() -> tuple[grpc.StatusCode, float]:
        started = time.perf_counter()
        try:
            await stub.Predict(slow_request(9))
            return grpc.StatusCode.OK, time.perf_counter() - started
        except grpc.aio.AioRpcError as error:
            return error.code(), time.perf_counter() - started

    # Five at once while the queue is full. A probe that a very slow machine delivers after
    # the batch in front ended finds room and is served: counted, not failed.
    outcomes = await asyncio.gather(*(probe() for _ in range(5)))
    refused = [s for code, s in outcomes if code is grpc.StatusCode.RESOURCE_EXHAUSTED]
    served = sum(code is grpc.StatusCode.OK for code, _ in outcomes)
    assert len(refused) + served == 5, outcomes
    assert len(refused) >= 3, outcomes
    # Refused without waiting for the 200 ms batch in front; how fast is a benchmark question.
    assert max(refused) < 0.1, outcomes
    busy_served = await served_count(busy)
    # Now requests with a 1 ms deadline, queued behind a busy model: never computed.
    busy = [asyncio.ensure_future(stub.Predict(slow_request(4)))]
    await asyncio.sleep(0.02)
    expired = [stub.Predict(slow_request(5), timeout=0.001) for _ in range(2)]
    for call in expired:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.gather(*busy)
    await asyncio.sleep(0.3)
    assert computed_rows("slow") - before == busy_served + 1 + served
    refusals = REGISTRY.get_sample_value(
        "tfmesh_inference_requests_total",
        {"model": "slow", "version": "1", "code": "RESOURCE_EXHAUSTED"},
    )
    assert refusals >= len(refused)


async def test_a_queue_snapshot_shows_what_waits_behind_a_busy_version(stub):
    for bad, code in (
        (pb.GetQueueRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.GetQueueRequest(model="nope"), grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetQueue(bad)
        assert error.value.code() is code
    idle = await stub.GetQueue(pb.GetQueueRequest(model="slow"))
    assert [(v.version, v.queued_rows, v.capacity_rows) for v in idle.versions] == [(1, 0, 2)]
    await stub.Predict(slow_request(0))  # the batch size seen once, so it runs on a thread
    busy = await fill_the_queue(stub, 2)
    deadline = time.monotonic() + 2
    while True:
        (queue,) = (await stub.GetQueue(pb.GetQueueRequest(model="slow"))).versions
        # Between one batch's end and the next one's start the snapshot may show none
        # running for an instant: ask again (each batch, one row, takes 200 ms).
        if queue.running_batches == 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    # Two rows were seen queued; a batch may have ended since, taking one.
    assert queue.running_batches == 1
    assert 1 <= queue.queued_requests == queue.queued_rows <= 2
    assert 0 < queue.oldest_wait_seconds < 10
    assert queue.labels == ["production"]
    await served_count(busy)


@pytest.mark.parametrize("shape", ["single", "split"])
async def test_a_span_per_request_and_a_batch_span_linking_them(tmp_path, artifacts, shape):
    """In the split shape the request span is the front end's and the batch span the
    owner's: the trace context crosses with the frame."""
    exporter = InMemorySpanExporter()
    config = write_model_config(
        tmp_path,
        [slow_model_entry(delay_ms=50, max_batch_size=4, batch_timeout_micros=20_000)],
    )
    settings = InferenceSettings(home=tmp_path, port=0, http_port=0, model_config_file=config)
    telemetry = setup_telemetry("inference-spans", exporters=[exporter], configure_logging=False)
    running = await start_server_in_process(shape, settings, telemetry)
    try:
        async with open_channel(running.address) as channel:
            client = inference_pb2_grpc.InferenceServiceStub(channel)
            await asyncio.gather(*(client.Predict(slow_request(i)) for i in range(3)))
    finally:
        await running.stop(0)
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.name == "inference.request"]
    batches = [s for s in spans if s.name == "inference.batch" and s.attributes["batch.rows"] > 1]
    assert len(requests) >= 3
    linked = {link.context.span_id for batch in batches for link in batch.links}
    assert {r.context.span_id for r in requests[-3:]} <= linked
    assert all(r.parent is not None for r in requests[-3:])


async def test_a_cancelled_call_is_dropped_before_it_is_computed(stub):
    """The client gives up while its request waits behind a busy batch: in the split shape
    the front end's Cancel reaches the owner, which drops the request from the queue."""
    await stub.Predict(slow_request(0))
    before = computed_rows("slow")
    busy = asyncio.ensure_future(stub.Predict(slow_request(1)))
    await asyncio.sleep(0.05)
    abandoned = stub.Predict(slow_request(2))
    await asyncio.sleep(0.02)
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    await busy
    await asyncio.sleep(0.3)
    assert computed_rows("slow") - before == 1
