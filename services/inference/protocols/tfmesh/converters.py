"""`tfmesh.inference.v1` messages to and from the core's types (arrays, predictions, status)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from services.inference.batcher import BatchingOptions
from services.inference.catalog import ModelView, VersionState, VersionView
from services.inference.feedback import FeedbackItem
from services.inference.live_drift import THRESHOLDS
from services.inference.pipeline import Prediction
from services.inference.runtimes import TensorSpec
from services.inference.statistics import LATENCY_BOUNDS_S, VersionStatistics
from shared.errors import Code, DomainError
from shared.tensors import dtype_enum, from_tensor, to_tensor
from tfmesh.common.v1 import common_pb2
from tfmesh.inference.v1 import inference_pb2 as pb

STATES = {
    VersionState.LOADING: pb.VersionStatus.STATE_LOADING,
    VersionState.AVAILABLE: pb.VersionStatus.STATE_AVAILABLE,
    VersionState.UNLOADING: pb.VersionStatus.STATE_UNLOADING,
    VersionState.FAILED: pb.VersionStatus.STATE_FAILED,
    VersionState.END: pb.VersionStatus.STATE_END,
}


def input_field(name: str) -> str:
    return f"inputs[{name}]"


def inputs_from_proto(tensors: Mapping[str, common_pb2.Tensor]) -> dict[str, np.ndarray]:
    return {name: from_tensor(tensor, input_field(name)) for name, tensor in tensors.items()}


def prediction_to_proto(prediction: Prediction) -> pb.PredictResponse:
    return pb.PredictResponse(
        model=prediction.model,
        version=prediction.version,
        outputs={name: to_tensor(value) for name, value in prediction.outputs.items()},
        request_id=prediction.request_id,
    )


def feedback_items_from_proto(items: Iterable[pb.FeedbackItem]) -> list[FeedbackItem]:
    return [FeedbackItem(i.request_id, tuple(i.labels), i.version) for i in items]


def version_stats_to_proto(model: ModelView, stats: VersionStatistics) -> pb.VersionStats:
    feedback = stats.feedback
    return pb.VersionStats(
        version=stats.version,
        labels=model.labels_of(stats.version),
        requests=stats.success.count + stats.model_errors,
        model_errors=stats.model_errors,
        latency_bounds_seconds=LATENCY_BOUNDS_S,
        latency_counts=stats.latency_counts,
        feedback=pb.LiveFeedback(
            requests=feedback.requests,
            rows=feedback.rows,
            correct_rows=feedback.correct_rows,
            abs_error_sum=feedback.abs_error_sum,
            late=feedback.late,
            classified_rows=feedback.classified_rows,
        ),
    )


def error_to_proto(error: Exception) -> pb.Status:
    """A domain error's status; INTERNAL, with no detail leaked, for anything else."""
    if not isinstance(error, DomainError):
        return pb.Status(code=Code.INTERNAL, message="internal error")
    status = error.to_status()
    return pb.Status(code=status.code, message=status.message, details=status.details)


def tensor_spec_to_proto(spec: TensorSpec) -> pb.TensorSpec:
    try:
        dtype = dtype_enum(spec.dtype)
    except ValueError:
        dtype = common_pb2.DTYPE_UNSPECIFIED
    return pb.TensorSpec(
        name=spec.name, dtype=dtype, shape=[-1 if d is None else d for d in spec.shape]
    )


def batching_to_proto(options: BatchingOptions) -> pb.BatchingParameters:
    return pb.BatchingParameters(
        max_batch_size=options.max_batch_size,
        batch_timeout_micros=options.batch_timeout_micros,
        allowed_batch_sizes=options.allowed_batch_sizes,
        num_batch_threads=options.num_batch_threads,
        max_enqueued_batches=options.max_enqueued_batches,
    )


def version_to_proto(model: ModelView, view: VersionView, queued_rows: int) -> pb.VersionStatus:
    status = pb.VersionStatus(
        version=view.version,
        state=STATES[view.state],
        reason=view.reason,
        labels=model.labels_of(view.version),
        runtime=view.runtime,
        device=view.device,
        queued_rows=queued_rows,
    )
    if view.signature is not None:
        status.inputs.extend(tensor_spec_to_proto(s) for s in view.signature.inputs)
        status.outputs.extend(tensor_spec_to_proto(s) for s in view.signature.outputs)
    return status


def model_status_to_proto(model: ModelView, queued_rows: Mapping[int, int]) -> pb.ModelStatus:
    """`queued_rows`: rows waiting per loaded version."""
    return pb.ModelStatus(
        name=model.name,
        versions=[
            version_to_proto(model, view, queued_rows.get(number, 0))
            for number, view in sorted(model.versions.items())
        ],
        canary_weight=model.table.canary_weight,
        batching=batching_to_proto(model.batching),
    )


def drift_to_proto(model: str, statistics: Sequence[VersionStatistics]) -> pb.GetDriftResponse:
    """The drift of each version in `statistics`, with the thresholds it is judged by."""
    return pb.GetDriftResponse(
        model=model,
        versions=[
            pb.VersionDrift(
                version=s.version,
                baseline=s.drift.baseline,
                sampled_rows=s.drift.sampled_rows,
                window_rows=s.drift.window_rows,
                features=[
                    pb.FeatureDrift(
                        feature=score.feature,
                        statistic=score.statistic,
                        score=score.score,
                        threshold=THRESHOLDS[score.statistic],
                        drifted=score.score > THRESHOLDS[score.statistic],
                    )
                    for score in s.drift.scores
                ],
                note=s.drift.note,
            )
            for s in statistics
        ],
    )
