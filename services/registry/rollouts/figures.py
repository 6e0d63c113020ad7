"""The controller's figures, read from the inference service's `GetVersionStats` over gRPC:
from one address, or summed over several (every replica of the service)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from services.registry.rollouts.evidence import VersionFigures
from shared.errors import NotFound, Unavailable
from tfmesh.inference.v1 import inference_pb2 as pb
from tfmesh.inference.v1 import inference_pb2_grpc

TIMEOUT_S = 5.0


def figures_of(stats: pb.VersionStats) -> VersionFigures:
    return VersionFigures(
        version=stats.version,
        requests=stats.requests,
        model_errors=stats.model_errors,
        latency_bounds=tuple(stats.latency_bounds_seconds),
        latency_counts=tuple(stats.latency_counts),
        feedback_rows=stats.feedback.classified_rows,
        feedback_correct=stats.feedback.correct_rows,
    )


def summed(parts: Sequence[VersionFigures]) -> VersionFigures:
    first = parts[0]
    if any(p.latency_bounds != first.latency_bounds for p in parts):
        raise Unavailable("inference replicas report different latency buckets (mixed builds?)")
    return VersionFigures(
        version=first.version,
        requests=sum(p.requests for p in parts),
        model_errors=sum(p.model_errors for p in parts),
        latency_bounds=first.latency_bounds,
        latency_counts=tuple(
            sum(counts) for counts in zip(*(p.latency_counts for p in parts), strict=True)
        ),
        feedback_rows=sum(p.feedback_rows for p in parts),
        feedback_correct=sum(p.feedback_correct for p in parts),
    )


class InferenceFigures:
    def __init__(self, channels: Sequence[grpc.aio.Channel]) -> None:
        self._stubs = [inference_pb2_grpc.InferenceServiceStub(c) for c in channels]

    async def figures(self, model: str) -> dict[int, VersionFigures]:
        request = pb.GetVersionStatsRequest(model=model)
        try:
            answers = await asyncio.gather(
                *(stub.GetVersionStats(request, timeout=TIMEOUT_S) for stub in self._stubs)
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                raise NotFound("served model", model, "model") from None
            raise Unavailable(
                f"inference service: {error.code().name}: {error.details()}"
            ) from None
        parts: dict[int, list[VersionFigures]] = {}
        for answer in answers:
            for stats in answer.versions:
                parts.setdefault(stats.version, []).append(figures_of(stats))
        return {version: summed(found) for version, found in parts.items()}
