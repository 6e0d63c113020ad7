"""The side of the pipeline that holds the models: a routed, validated request goes onto
its version's batcher, and its answer is recorded.

`Executor.start` finds the version a request was routed to (routing it again, by its
label or as unpinned, if that version left meanwhile, and checking its inputs against the
new signature), lets the version's drift watch see the inputs, and queues them on the
version's batcher; when the batch is done it records the answer in the version's
statistics and logs the prediction for the feedback that may follow. The model owner
starts requests that front ends submit across the link; `LocalSubmitter` starts those of
the pipeline in the same process. Either way this is the one place it happens."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np
from opentelemetry import trace

from services.inference.batcher import Arrays, Batcher
from services.inference.catalog import Catalog, VersionView
from services.inference.controls import Controls
from services.inference.feedback import PredictionLog
from services.inference.model_manager import LoadedVersion, ModelManager
from services.inference.pipeline import Submission
from services.inference.routing import Router
from services.inference.validation import validate_inputs
from shared.errors import DeadlineExceeded, DomainError, NotFound

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Execution:
    """A started request: the version that takes it and its answer to come."""

    target: LoadedVersion
    outputs: asyncio.Future[Arrays]


class Executor:
    def __init__(self, manager: ModelManager, router: Router) -> None:
        self._manager = manager
        self._router = router

    def start(self, submission: Submission) -> Execution:
        """Queue `submission`; raises a DomainError when it cannot be queued."""
        started = time.perf_counter()
        served = self._manager.model(submission.model)
        target = served.table.by_version.get(submission.version)
        if target is None:
            if submission.pinned:
                raise NotFound(
                    "model version", f"{submission.model}/{submission.version}", "version"
                )
            target = self._router.route(submission.model, served.table, 0, submission.label)
            validate_inputs(
                submission.inputs, target.runtime.signature, target.batcher.options.max_queued_rows
            )
        target.drift.observe(submission.inputs)
        outputs = submit_in_batches(
            target.batcher,
            submission.inputs,
            submission.rows,
            submission.deadline,
            submission.link,
        )
        outputs.add_done_callback(
            functools.partial(_record, target, served.feedback, submission.request_id, started)
        )
        return Execution(target, outputs)


def _record(
    target: LoadedVersion,
    predictions: PredictionLog,
    request_id: str,
    started: float,
    outputs: asyncio.Future[Arrays],
) -> None:
    """Count a finished request in its version's statistics; log its prediction."""
    took = time.perf_counter() - started
    if outputs.cancelled():
        target.statistics.record_answer(False, took)
        return
    error = outputs.exception()
    target.statistics.record_answer(error is None, took)
    if error is None:
        predictions.record(request_id, target.version, outputs.result())
    elif isinstance(error, DeadlineExceeded):
        target.statistics.record_timeout(took)
    elif not isinstance(error, DomainError):
        target.statistics.record_model_error()


class LocalSubmitter:
    """The pipeline's submitter where the models are in the same process."""

    def __init__(self, manager: ModelManager, router: Router) -> None:
        self._manager = manager
        self._executor = Executor(manager, router)
        self._controls = Controls(manager)

    def catalog(self) -> Catalog:
        return self._manager.catalog()

    def ready(self) -> bool:
        return True

    async def submit(self, target: VersionView, submission: Submission) -> tuple[int, Arrays]:
        execution = self._executor.start(submission)
        outputs = await execution.outputs
        if submission.output_filter:
            outputs = {name: outputs[name] for name in submission.output_filter}
        return execution.target.version, outputs

    async def control(
        self, method: Callable[Concatenate[Controls, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return method(self._controls, *args, **kwargs)


def submit_in_batches(
    batcher: Batcher,
    inputs: Arrays,
    rows: int,
    deadline: float | None,
    link: trace.SpanContext | None = None,
) -> asyncio.Future[Arrays]:
    """Queue a request; one larger than `max_batch_size` goes in pieces of that size (TF
    Serving's large-batch splitting) whose outputs are joined back in order. If a piece
    cannot be queued or fails, the other pieces are cancelled and never computed; so are
    they all when the returned future is cancelled."""
    size = batcher.options.max_batch_size
    if rows <= size:
        return batcher.submit(inputs, rows, deadline, link)
    pieces: list[asyncio.Future[Arrays]] = []
    try:
        for start in range(0, rows, size):
            piece = {name: array[start : start + size] for name, array in inputs.items()}
            pieces.append(batcher.submit(piece, min(size, rows - start), deadline, link))
    except BaseException:
        for future in pieces:
            future.cancel()
        raise
    joined: asyncio.Future[Arrays] = asyncio.get_running_loop().create_future()
    remaining = len(pieces)

    def piece_done(piece: asyncio.Future[Arrays]) -> None:
        nonlocal remaining
        remaining -= 1
        if joined.done():
            return
        if piece.cancelled() or piece.exception() is not None:
            for future in pieces:
                future.cancel()
            if piece.cancelled():
                joined.cancel()
            else:
                joined.set_exception(piece.exception())  # type: ignore[arg-type]
        elif remaining == 0:
            parts = [future.result() for future in pieces]
            joined.set_result({name: np.concatenate([p[name] for p in parts]) for name in parts[0]})

    def joined_done(result: asyncio.Future[Arrays]) -> None:
        if result.cancelled():
            for future in pieces:
                future.cancel()

    for future in pieces:
        future.add_done_callback(piece_done)
    joined.add_done_callback(joined_done)
    return joined
