"""Feedback: the prediction log and its joins (unit), then ReportFeedback and GetVersionStats
over gRPC and REST on both server shapes, with request ids made up or given."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest

from services.inference.feedback import (
    MAX_LOGGED_ROWS,
    FeedbackItem,
    PredictionLog,
    predicted_values,
)
from shared.errors import FailedPrecondition, InvalidArgument
from shared.tensors import from_tensor, to_tensor
from tests.inference.models import digits_rows
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc

PROBABILITIES = {"out": np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_classifier_predicts_the_argmax_and_a_single_column_a_value():
    classes, classifier = predicted_values(PROBABILITIES)  # type: ignore[misc]
    assert classifier and classes.tolist() == [1, 0]
    values, classifier = predicted_values({"y": np.array([[1.5], [2.0]])})  # type: ignore[misc]
    assert not classifier and values.tolist() == [1.5, 2.0]
    assert predicted_values({"image": np.zeros((2, 4, 4))}) is None


def test_feedback_joins_by_id_and_counts_correct_rows_per_version():
    log = PredictionLog()
    log.record("a", 1, PROBABILITIES)
    log.record("b", 2, PROBABILITIES)
    outcome = log.report(
        [FeedbackItem("a", (1, 1)), FeedbackItem("b", (0, 1)), FeedbackItem("zzz", (1,))], {1, 2}
    )
    assert (outcome.matched, outcome.unknown, outcome.late) == (2, 1, 0)
    assert (log.tally(1).rows, log.tally(1).correct_rows) == (2, 1)
    assert log.tally(1).classified_rows == 2
    assert (log.tally(2).rows, log.tally(2).correct_rows) == (2, 0)
    assert log.unknown == 1


def test_a_regressor_adds_its_absolute_error():
    log = PredictionLog()
    log.record("r", 3, {"y": np.array([[1.0], [4.0]])})
    log.report([FeedbackItem("r", (2.0, 2.5))], {3})
    assert log.tally(3).abs_error_sum == pytest.approx(2.5)
    # No accuracy for a regressor: none of its rows are classified.
    assert log.tally(3).correct_rows == 0 and log.tally(3).classified_rows == 0


def test_a_prediction_of_more_rows_than_the_log_keeps_is_not_logged():
    log = PredictionLog()
    log.record("big", 1, {"out": np.zeros((MAX_LOGGED_ROWS + 1, 3))})
    assert log.report([FeedbackItem("big", (0,) * (MAX_LOGGED_ROWS + 1))], {1}).unknown == 1


def test_the_log_forgets_the_oldest_past_its_bound_and_late_feedback_is_counted():
    clock = Clock()
    log = PredictionLog(max_predictions=2, retention_s=10, clock=clock)
    for request_id in ("a", "b", "c"):
        log.record(request_id, 1, PROBABILITIES)
    clock.now = 11
    outcome = log.report([FeedbackItem("a", (1, 0)), FeedbackItem("b", (1, 0))], {1})
    assert (outcome.matched, outcome.unknown, outcome.late) == (0, 1, 1)
    assert log.tally(1).late == 1 and log.tally(1).rows == 0


@pytest.mark.parametrize(
    ("items", "served", "error", "text"),
    [
        ([FeedbackItem("a", (1, 0)), FeedbackItem("a", (1, 0))], {1}, InvalidArgument, "repeats"),
        ([FeedbackItem("a", (1,))], {1}, InvalidArgument, "1 values for a prediction of 2"),
        ([FeedbackItem("a", (0.5, 1))], {1}, InvalidArgument, "class indices"),
        ([FeedbackItem("a", (float("nan"), 1))], {1}, InvalidArgument, "finite"),
        ([FeedbackItem("a", (1, 0), version=2)], {1, 2}, InvalidArgument, "served by version 1"),
        ([FeedbackItem("x", (1,), version=7)], {1}, FailedPrecondition, "version 7 is not served"),
        ([], {1}, InvalidArgument, "at least one"),
    ],
)
def test_a_bad_report_is_refused_whole_and_changes_nothing(items, served, error, text):
    log = PredictionLog()
    log.record("a", 1, PROBABILITIES)
    good = [FeedbackItem("b", (1,))]
    with pytest.raises(error, match=text):
        log.report([*good, *items] if items else items, served)
    assert log.tally(1).requests == 0 and log.unknown == 0


def test_feedback_for_an_id_already_reported_is_refused():
    log = PredictionLog()
    log.record("a", 1, PROBABILITIES)
    log.report([FeedbackItem("a", (1, 0))], {1})
    with pytest.raises(FailedPrecondition, match="already recorded"):
        log.report([FeedbackItem("a", (1, 0))], {1})
    assert log.tally(1).requests == 1


def test_a_log_of_size_zero_records_nothing():
    log = PredictionLog(max_predictions=0)
    log.record("a", 1, PROBABILITIES)
    assert log.report([FeedbackItem("a", (1, 0))], {1}).unknown == 1


# --- through the service ------------------------------------------------------------------


async def predict(stub, rows: int, **pin) -> pb.PredictResponse:
    request = pb.PredictRequest(model="digits", inputs={"x": to_tensor(digits_rows(rows))}, **pin)
    return await stub.Predict(request, timeout=10)


async def test_feedback_over_grpc_moves_live_accuracy_and_stats(server, channel):
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    made_up = await predict(stub, 3, version=1)
    given = await predict(stub, 1, version=2, request_id="client-chose-this")
    assert len(made_up.request_id) == 32 and given.request_id == "client-chose-this"
    predicted = np.argmax(from_tensor(made_up.outputs["output_0"]), axis=1)
    truth = [int(predicted[0]), int(predicted[1]), (int(predicted[2]) + 1) % 10]
    answer = await stub.ReportFeedback(
        pb.ReportFeedbackRequest(
            model="digits",
            items=[
                pb.FeedbackItem(request_id=made_up.request_id, labels=truth, version=1),
                pb.FeedbackItem(request_id="never-predicted", labels=[3]),
            ],
        ),
        timeout=10,
    )
    assert (answer.matched, answer.unknown, answer.late) == (1, 1, 0)
    stats = await stub.GetVersionStats(pb.GetVersionStatsRequest(model="digits"), timeout=10)
    by_version = {v.version: v for v in stats.versions}
    assert by_version[1].feedback.rows == 3 and by_version[1].feedback.correct_rows == 2
    assert by_version[1].requests == 1 and by_version[2].requests == 1
    assert by_version[1].model_errors == 0
    assert sum(by_version[1].latency_counts) == 1
    assert len(by_version[1].latency_counts) == len(by_version[1].latency_bounds_seconds) + 1
    assert by_version[1].labels == ["production"] and by_version[2].labels == ["canary"]

    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await stub.ReportFeedback(
            pb.ReportFeedbackRequest(
                model="digits",
                items=[pb.FeedbackItem(request_id=made_up.request_id, labels=truth)],
            ),
            timeout=10,
        )
    assert twice.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as unserved:
        await stub.ReportFeedback(
            pb.ReportFeedbackRequest(
                model="digits",
                items=[pb.FeedbackItem(request_id=given.request_id, labels=[1], version=9)],
            ),
            timeout=10,
        )
    assert unserved.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as too_long:
        await predict(stub, 1, request_id="x" * 129)
    assert too_long.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    stats = await stub.GetVersionStats(pb.GetVersionStatsRequest(model="digits"), timeout=10)
    assert {v.version: v.feedback.requests for v in stats.versions} == {1: 1, 2: 0}


async def test_rest_answers_carry_the_request_id(server):
    body = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        made_up = await client.post("/v2/models/digits/infer", json=body)
        header = await client.post(
            "/v2/models/digits/infer", json=body, headers={"x-request-id": "from-envoy"}
        )
        tf = await client.post(
            "/v1/models/digits:predict",
            json={"instances": [[0.5] * 64]},
            headers={"x-request-id": "tf-serving-call"},
        )
    assert made_up.status_code == 200 and len(made_up.json()["id"]) == 32
    assert made_up.headers["x-request-id"] == made_up.json()["id"]
    assert header.json()["id"] == "from-envoy"
    assert tf.status_code == 200 and tf.headers["x-request-id"] == "tf-serving-call"


async def test_tf_serving_grpc_takes_and_returns_the_request_id_as_metadata(server, channel):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(digits_rows(1)))
    given = stub.Predict(request, metadata=(("x-request-id", "tf-grpc-1"),), timeout=10)
    await given
    assert dict(await given.trailing_metadata())["x-request-id"] == "tf-grpc-1"
    made_up = stub.Predict(request, timeout=10)
    await made_up
    assert len(dict(await made_up.trailing_metadata())["x-request-id"]) == 32
