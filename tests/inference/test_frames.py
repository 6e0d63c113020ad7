"""The descriptor format between front ends and the model owner: framing on a byte stream,
tensors written into and read back from a slab (every dtype, BYTES, big-endian input),
output reservations and their inline fallback, the catalog, and control calls and their
answers, which must come back equal to what was sent; a control frame that names no
control call, or arguments it does not take, is refused."""

from __future__ import annotations

import math
import mmap

import numpy as np
import pytest

from services.inference.batcher import BatchingOptions
from services.inference.catalog import Catalog, ModelView, VersionState, VersionView
from services.inference.controls import Controls
from services.inference.dataplane import frames
from services.inference.drift import DriftScore, DriftStatus
from services.inference.feedback import FeedbackItem, FeedbackOutcome, FeedbackTally
from services.inference.routing import RoutingTable
from services.inference.runtimes import Signature, TensorSpec
from services.inference.statistics import BatchTiming, VersionStatistics
from shared.errors import Code, FieldViolation, InvalidArgument, ResourceExhausted, from_status
from tfmesh.inference.dataplane.v1 import dataplane_pb2 as dp


def test_frames_survive_any_cut_of_the_stream():
    sent = [dp.Frame(cancel=dp.Cancel(call=n)) for n in range(50)]
    stream = b"".join(frames.encode(frame) for frame in sent)
    for cut in (1, 3, 7, 64, len(stream)):
        decoder = frames.FrameDecoder()
        got = []
        for start in range(0, len(stream), cut):
            got += list(decoder.feed(stream[start : start + cut]))
        assert [frame.cancel.call for frame in got] == list(range(50))


def test_a_length_past_the_limit_is_refused():
    decoder = frames.FrameDecoder()
    with pytest.raises(ValueError, match="not speaking frames"):
        list(decoder.feed(frames.LENGTH.pack(frames.MAX_FRAME_BYTES + 1)))


@pytest.fixture
def memory():
    with mmap.mmap(-1, 1 << 20) as region:
        yield region


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(6, dtype=np.int64).reshape(3, 2),
        np.array([[True, False]]),
        np.arange(8, dtype=np.uint8).reshape(2, 2, 2),
        np.arange(4, dtype=np.float16),
        np.arange(4, dtype=">f8"),
        np.array([[b"a", b""], [b"long value", b"text"]], dtype=object),
        np.array(["x", "y"]),
    ],
    ids=["f32", "i64", "bool", "u8", "f16", "big-endian f64", "bytes", "unicode"],
)
def test_tensors_round_trip_through_the_slab(memory, array):
    ref = frames.write_tensor(memory, 128, "t", array)
    assert ref.size == frames.tensor_size(array)
    back = frames.read_tensor(memory, dp.TensorRef.FromString(ref.SerializeToString()))
    assert back.shape == array.shape
    if array.dtype.kind in "USO":
        expected = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        assert list(back.reshape(-1)) == expected
    else:
        np.testing.assert_array_equal(back, array)
        assert back.dtype.byteorder in "<|="


def test_an_output_of_fixed_size_fills_its_reservation(memory):
    spec = TensorSpec("probs", np.dtype("float32"), (None, 10))
    reserved = frames.reserved_output(spec, 4)
    assert (list(reserved.shape), reserved.size) == ([4, 10], 160)
    reserved.offset = 1024
    value = np.random.default_rng(0).random((4, 10), dtype=np.float32)
    ref = frames.write_output(memory, reserved, value)
    assert not ref.inline_data and ref.offset == 1024
    np.testing.assert_array_equal(frames.read_tensor(memory, ref), value)


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        (TensorSpec("seq", np.dtype("float32"), (None, None)), np.ones((2, 7), np.float32)),
        (TensorSpec("label", np.dtype(object), (None,)), np.array([b"cat", b"dog"], object)),
        # The model answered another shape than its signature promised.
        (TensorSpec("probs", np.dtype("float32"), (None, 10)), np.ones((2, 3), np.float32)),
    ],
    ids=["free dimension", "strings", "shape differs"],
)
def test_an_output_that_does_not_fit_its_reservation_comes_back_inline(memory, spec, value):
    reserved = frames.reserved_output(spec, 2)
    ref = frames.write_output(memory, reserved, value)
    assert ref.inline_data
    back = frames.read_tensor(memory, ref)
    assert back.shape == value.shape
    assert list(back.reshape(-1)) == list(value.reshape(-1))


def test_an_error_crosses_with_its_code_message_and_details():
    error = ResourceExhausted("queue full", retry_after_s=0.05)
    status = frames.error_status(frames.error_bytes(error))
    assert status.code == error.code == Code.RESOURCE_EXHAUSTED
    assert status.message == "queue full"
    assert len(status.details) == 1


def test_an_invalid_argument_crosses_as_one_so_an_adapter_can_rename_its_fields():
    sent = InvalidArgument([FieldViolation("inputs[x]", "missing input")])
    back = from_status(frames.error_status(frames.error_bytes(sent)))
    assert isinstance(back, InvalidArgument)
    assert back.violations == sent.violations
    other = from_status(frames.error_status(frames.error_bytes(ResourceExhausted("full"))))
    assert not isinstance(other, InvalidArgument)
    assert other.code is Code.RESOURCE_EXHAUSTED
    # A retry delay crosses too, so a front end's REST answer says Retry-After.
    full = ResourceExhausted("queue full", retry_after_s=0.05)
    assert from_status(frames.error_status(frames.error_bytes(full))).retry_after_s == 0.05


def catalog() -> Catalog:
    signature = Signature(
        (TensorSpec("x", np.dtype("<f4"), (None, 64)),),
        (TensorSpec("output_0", np.dtype("<f4"), (None, 10)),),
    )
    views = {
        1: VersionView("m", 1, VersionState.AVAILABLE, "tensorflow", "", "/CPU:0", signature),
        2: VersionView("m", 2, VersionState.AVAILABLE, "tensorflow", "", "/CPU:0", signature),
        3: VersionView("m", 3, VersionState.FAILED, "tensorflow", "load failed: boom"),
    }
    model = ModelView(
        "m",
        "tensorflow",
        BatchingOptions(8, 500, (1, 2, 4, 8), 2, 4),
        views,
        RoutingTable({1: views[1], 2: views[2]}, {"production": views[1], "canary": views[2]}, 30),
    )
    empty = ModelView("n", "noop", BatchingOptions())
    return Catalog({"m": model, "n": empty}, revision=17)


def test_the_catalog_comes_back_equal():
    sent = catalog()
    frame = dp.Frame.FromString(frames.catalog_to_frame(sent).SerializeToString())
    assert frames.catalog_from_frame(frame.catalog) == sent


def crossed(frame: dp.Frame) -> dp.Frame:
    return dp.Frame.FromString(frame.SerializeToString())


def test_a_statistics_call_and_its_answer_come_back_equal():
    frame = crossed(frames.control_to_frame(9, Controls.statistics, ("m",), {"version": 2}))
    method, arguments = frames.control_from_frame(frame.control)
    assert (frame.control.call, method, arguments) == (
        9,
        Controls.statistics,
        {"model": "m", "version": 2},
    )
    statistics = VersionStatistics("m", 2)
    statistics.record_queued(0.002)
    statistics.record_batch(4, 3, 3, BatchTiming(10, 2000, 30))
    statistics.record_answer(True, 0.004)
    statistics.record_answer(False, 0.001)
    drift = DriftStatus("dataset 1", 40, 30, [DriftScore("x", "psi", 0.3, 30)], "")
    sent = [statistics.snapshot(5, drift, FeedbackTally(2, 3, 1, 0.5, 1, 3))]
    answer = crossed(frames.control_answer_to_frame(9, "statistics", sent)).control_answer
    assert frames.control_result("statistics", answer) == sent


def test_a_feedback_call_and_its_answer_come_back_equal():
    items = [FeedbackItem("r-1", (1.0, 0.0), 3), FeedbackItem("r-2", (2.5,))]
    frame = crossed(frames.control_to_frame(4, Controls.report_feedback, ("m", items), {}))
    method, arguments = frames.control_from_frame(frame.control)
    assert method is Controls.report_feedback
    assert arguments == {"model": "m", "items": items}
    outcome = FeedbackOutcome(1, 1, 0, {3: FeedbackTally(1, 2, 1, 0.0, 0, 2)})
    answer = crossed(frames.control_answer_to_frame(4, "report_feedback", outcome))
    assert frames.control_result("report_feedback", answer.control_answer) == outcome


@pytest.mark.parametrize(
    ("method", "arguments"),
    [
        ("_controls", b"{}"),  # not a public method
        ("no_such_call", b"{}"),
        ("statistics", b"[1, 2]"),  # not an object
        ("statistics", b'{"model": "m", "colour": 1}'),  # an argument it does not take
        ("statistics", b'{"model": "m"}'),  # one it needs, missing
        ("statistics", b'{"model": "m", "version": "two"}'),  # a value of the wrong type
    ],
)
def test_a_control_frame_that_is_no_call_of_controls_is_refused(method, arguments):
    with pytest.raises(ValueError):
        frames.control_from_frame(dp.Control(call=1, method=method, arguments=arguments))


def test_nan_and_infinities_cross_a_control_frame_as_they_are():
    # A regressor's feedback can sum to infinity; a bad report can carry NaN labels, which
    # the owner must see to refuse them field by field.
    items = [FeedbackItem("r", (math.nan, math.inf))]
    frame = crossed(frames.control_to_frame(1, Controls.report_feedback, ("m", items), {}))
    _, arguments = frames.control_from_frame(frame.control)
    (item,) = arguments["items"]
    assert math.isnan(item.labels[0]) and item.labels[1] == math.inf
    outcome = FeedbackOutcome(1, 0, 0, {2: FeedbackTally(1, 1, 0, math.inf)})
    answer = crossed(frames.control_answer_to_frame(1, "report_feedback", outcome))
    assert frames.control_result("report_feedback", answer.control_answer) == outcome
