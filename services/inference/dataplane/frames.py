"""The descriptor format between front ends and the model owner: the one module both sides
share, so neither knows more of the other than what is written here.

On the socket, a frame is a 4-byte little-endian length and a serialized
`tfmesh.inference.dataplane.v1.Frame`. Tensors lie in the front end's slab: numeric
arrays as their C-order little-endian bytes, BYTES (string) tensors as Triton lays them
out, each element a 4-byte little-endian length and its bytes. A `TensorRef` says where;
an output with no reserved room comes back inline in its ref. The catalog, the statistics
and feedback reports travel as frames too, converted here to and from the types the
servicers use."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence

import numpy as np
from google.rpc import status_pb2

from services.inference.batcher import BatchingOptions
from services.inference.catalog import Catalog, ModelView, VersionState, VersionView
from services.inference.drift import DriftScore, DriftStatus
from services.inference.feedback import FeedbackItem, FeedbackOutcome, FeedbackTally
from services.inference.routing import RoutingTable
from services.inference.runtimes import Signature, TensorSpec
from services.inference.statistics import BatchDurations, Duration, VersionStatistics
from shared.errors import DomainError
from tfmesh.inference.dataplane.v1 import dataplane_pb2 as dp

LENGTH = struct.Struct("<I")
BYTES_DTYPE = "bytes"
# A frame larger than this is a broken peer, not a message (frames carry no tensors).
MAX_FRAME_BYTES = 64 * 1024 * 1024


def encode(frame: dp.Frame) -> bytes:
    body = frame.SerializeToString()
    return LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Cuts a byte stream into frames; bytes of an incomplete frame wait for the rest."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[dp.Frame]:
        self._buffer += data
        start = 0
        buffer = self._buffer
        while len(buffer) - start >= LENGTH.size:
            (size,) = LENGTH.unpack_from(buffer, start)
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"a frame of {size} bytes: the peer is not speaking frames")
            end = start + LENGTH.size + size
            if len(buffer) < end:
                break
            yield dp.Frame.FromString(bytes(buffer[start + LENGTH.size : end]))
            start = end
        del self._buffer[:start]


# --- tensors in the slab -------------------------------------------------------------------


def _serialized_strings(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        value = item if isinstance(item, bytes) else str(item).encode()
        parts.append(LENGTH.pack(len(value)) + value)
    return b"".join(parts)


def _deserialized_strings(data: memoryview, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
    values = []
    offset = 0
    for _ in range(count):
        (size,) = LENGTH.unpack_from(data, offset)
        offset += LENGTH.size
        values.append(bytes(data[offset : offset + size]))
        offset += size
    return np.array(values, dtype=object).reshape(shape)


def is_strings(array: np.ndarray) -> bool:
    return array.dtype.kind in "USO"


def tensor_size(array: np.ndarray) -> int:
    """Bytes `array` takes in a slab."""
    if is_strings(array):
        return sum(
            LENGTH.size + len(v if isinstance(v, bytes) else str(v).encode())
            for v in array.reshape(-1)
        )
    return array.nbytes


def write_tensor(memory, offset: int, name: str, array: np.ndarray) -> dp.TensorRef:
    """Copy `array` into `memory` at `offset`; the ref that reads it back."""
    if is_strings(array):
        data = _serialized_strings(array)
        memory[offset : offset + len(data)] = data
        return dp.TensorRef(
            name=name, dtype=BYTES_DTYPE, shape=array.shape, offset=offset, size=len(data)
        )
    little = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    target = np.ndarray(array.shape, little, buffer=memory, offset=offset)
    target[...] = array
    return dp.TensorRef(
        name=name, dtype=little.str, shape=array.shape, offset=offset, size=array.nbytes
    )


def read_tensor(memory, ref: dp.TensorRef) -> np.ndarray:
    """The tensor `ref` describes: inline, or a view of `memory` (copied for BYTES)."""
    shape = tuple(ref.shape)
    if ref.inline_data:
        data = memoryview(ref.inline_data)
    else:
        data = memoryview(memory)[ref.offset : ref.offset + ref.size]
    if ref.dtype == BYTES_DTYPE:
        return _deserialized_strings(data, shape)
    return np.frombuffer(data, np.dtype(ref.dtype)).reshape(shape)


def reserved_output(spec: TensorSpec, rows: int) -> dp.TensorRef:
    """An output's ref before the call: its size when the signature fixes it, else 0
    (such an output comes back inline)."""
    dims = spec.shape[1:]
    if spec.dtype.kind in "USO" or any(dim is None for dim in dims):
        return dp.TensorRef(name=spec.name)
    shape = (rows, *(int(d) for d in dims if d is not None))
    dtype = spec.dtype.newbyteorder("<") if spec.dtype.byteorder == ">" else spec.dtype
    return dp.TensorRef(
        name=spec.name, dtype=dtype.str, shape=shape, size=math.prod(shape) * dtype.itemsize
    )


def write_output(memory, reserved: dp.TensorRef, array: np.ndarray) -> dp.TensorRef:
    """Put an output where the front end reserved room for it, or inline when it does not
    fit the reservation exactly (a size the signature did not fix)."""
    if (
        reserved.size
        and not is_strings(array)
        and array.dtype.str == reserved.dtype
        and tuple(array.shape) == tuple(reserved.shape)
    ):
        return write_tensor(memory, reserved.offset, reserved.name, array)
    if is_strings(array):
        return dp.TensorRef(
            name=reserved.name,
            dtype=BYTES_DTYPE,
            shape=array.shape,
            size=0,
            inline_data=_serialized_strings(array),
        )
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return dp.TensorRef(
        name=reserved.name,
        dtype=little.dtype.str,
        shape=array.shape,
        inline_data=little.tobytes(),
    )


# --- errors --------------------------------------------------------------------------------


def error_bytes(error: DomainError) -> bytes:
    return error.to_status().SerializeToString()


def error_status(data: bytes) -> status_pb2.Status:
    return status_pb2.Status.FromString(data)


# --- the catalog ---------------------------------------------------------------------------


def _spec_to_frame(spec: TensorSpec) -> dp.TensorSpec:
    return dp.TensorSpec(
        name=spec.name, dtype=spec.dtype.str, shape=[-1 if d is None else d for d in spec.shape]
    )


def _spec_from_frame(spec: dp.TensorSpec) -> TensorSpec:
    return TensorSpec(
        spec.name, np.dtype(spec.dtype), tuple(None if d < 0 else d for d in spec.shape)
    )


def catalog_to_frame(catalog: Catalog) -> dp.Frame:
    models = []
    for model in catalog.ordered():
        batching = model.batching
        versions = []
        for view in model.versions.values():
            version = dp.Version(
                version=view.version,
                state=view.state.value,
                runtime=view.runtime,
                reason=view.reason,
                device=view.device,
                loaded=view.signature is not None,
            )
            if view.signature is not None:
                version.inputs.extend(_spec_to_frame(s) for s in view.signature.inputs)
                version.outputs.extend(_spec_to_frame(s) for s in view.signature.outputs)
            versions.append(version)
        models.append(
            dp.Model(
                name=model.name,
                runtime=model.runtime,
                batching=dp.Batching(
                    max_batch_size=batching.max_batch_size,
                    batch_timeout_micros=batching.batch_timeout_micros,
                    allowed_batch_sizes=batching.allowed_batch_sizes,
                    num_batch_threads=batching.num_batch_threads,
                    max_enqueued_batches=batching.max_enqueued_batches,
                ),
                versions=versions,
                labels={label: view.version for label, view in model.table.by_label.items()},
                canary_weight=model.table.canary_weight,
            )
        )
    return dp.Frame(catalog=dp.Catalog(revision=catalog.revision, models=models))


def catalog_from_frame(frame: dp.Catalog) -> Catalog:
    models = {}
    for model in frame.models:
        views = {}
        for version in model.versions:
            signature = None
            if version.loaded:
                signature = Signature(
                    tuple(_spec_from_frame(s) for s in version.inputs),
                    tuple(_spec_from_frame(s) for s in version.outputs),
                )
            views[version.version] = VersionView(
                model.name,
                version.version,
                VersionState(version.state),
                version.runtime,
                version.reason,
                version.device,
                signature,
            )
        by_label = {label: views[number] for label, number in model.labels.items()}
        batching = model.batching
        models[model.name] = ModelView(
            model.name,
            model.runtime,
            BatchingOptions(
                max_batch_size=batching.max_batch_size,
                batch_timeout_micros=batching.batch_timeout_micros,
                allowed_batch_sizes=tuple(batching.allowed_batch_sizes),
                num_batch_threads=batching.num_batch_threads,
                max_enqueued_batches=batching.max_enqueued_batches,
            ),
            views,
            RoutingTable(
                {view.version: view for view in by_label.values()},
                by_label,
                model.canary_weight,
            ),
        )
    return Catalog(models, frame.revision)


# --- statistics ----------------------------------------------------------------------------


def _duration_to_frame(value: Duration) -> dp.Duration:
    return dp.Duration(count=value.count, ns=value.ns)


def _duration_from_frame(value: dp.Duration) -> Duration:
    return Duration(value.count, value.ns)


def statistics_to_frame(query: int, statistics: Sequence[VersionStatistics]) -> dp.Frame:
    versions = [
        dp.VersionStatistics(
            model=s.model,
            version=s.version,
            last_inference_ms=s.last_inference_ms,
            inference_count=s.inference_count,
            execution_count=s.execution_count,
            success=_duration_to_frame(s.success),
            fail=_duration_to_frame(s.fail),
            queue=_duration_to_frame(s.queue),
            compute_input=_duration_to_frame(s.compute_input),
            compute_infer=_duration_to_frame(s.compute_infer),
            compute_output=_duration_to_frame(s.compute_output),
            batches=[
                dp.BatchStatistics(
                    batch_size=size,
                    compute_input=_duration_to_frame(b.compute_input),
                    compute_infer=_duration_to_frame(b.compute_infer),
                    compute_output=_duration_to_frame(b.compute_output),
                )
                for size, b in sorted(s.batches.items())
            ],
            queued_rows=s.queued_rows,
            drift=dp.Drift(
                baseline=s.drift.baseline,
                sampled_rows=s.drift.sampled_rows,
                window_rows=s.drift.window_rows,
                features=[
                    dp.FeatureScore(feature=d.feature, statistic=d.statistic, score=d.score)
                    for d in s.drift.scores
                ],
                note=s.drift.note,
            ),
            latency_counts=s.latency_counts,
            model_errors=s.model_errors,
            feedback=dp.FeedbackTally(
                requests=s.feedback.requests,
                rows=s.feedback.rows,
                correct_rows=s.feedback.correct_rows,
                abs_error_sum=s.feedback.abs_error_sum,
                late=s.feedback.late,
                classified_rows=s.feedback.classified_rows,
            ),
        )
        for s in statistics
    ]
    return dp.Frame(statistics=dp.Statistics(query=query, versions=versions))


def statistics_from_frame(frame: dp.Statistics) -> list[VersionStatistics]:
    return [
        VersionStatistics(
            model=s.model,
            version=s.version,
            last_inference_ms=s.last_inference_ms,
            inference_count=s.inference_count,
            execution_count=s.execution_count,
            success=_duration_from_frame(s.success),
            fail=_duration_from_frame(s.fail),
            queue=_duration_from_frame(s.queue),
            compute_input=_duration_from_frame(s.compute_input),
            compute_infer=_duration_from_frame(s.compute_infer),
            compute_output=_duration_from_frame(s.compute_output),
            batches={
                b.batch_size: BatchDurations(
                    _duration_from_frame(b.compute_input),
                    _duration_from_frame(b.compute_infer),
                    _duration_from_frame(b.compute_output),
                )
                for b in s.batches
            },
            queued_rows=s.queued_rows,
            drift=DriftStatus(
                s.drift.baseline,
                s.drift.sampled_rows,
                s.drift.window_rows,
                [
                    DriftScore(d.feature, d.statistic, d.score, s.drift.window_rows)  # type: ignore[arg-type]
                    for d in s.drift.features
                ],
                s.drift.note,
            ),
            latency_counts=list(s.latency_counts),
            model_errors=s.model_errors,
            feedback=FeedbackTally(
                s.feedback.requests,
                s.feedback.rows,
                s.feedback.correct_rows,
                s.feedback.abs_error_sum,
                s.feedback.late,
                s.feedback.classified_rows,
            ),
        )
        for s in frame.versions
    ]


# --- feedback ------------------------------------------------------------------------------


def feedback_report_to_frame(query: int, model: str, items: Sequence[FeedbackItem]) -> dp.Frame:
    return dp.Frame(
        feedback_report=dp.FeedbackReport(
            query=query,
            model=model,
            items=[
                dp.FeedbackItem(request_id=i.request_id, labels=i.labels, version=i.version)
                for i in items
            ],
        )
    )


def feedback_items_from_frame(report: dp.FeedbackReport) -> list[FeedbackItem]:
    return [FeedbackItem(i.request_id, tuple(i.labels), i.version) for i in report.items]


def feedback_reply_to_frame(query: int, outcome: FeedbackOutcome) -> dp.Frame:
    return dp.Frame(
        feedback_reply=dp.FeedbackReply(
            query=query, matched=outcome.matched, unknown=outcome.unknown, late=outcome.late
        )
    )
