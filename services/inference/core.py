"""The inference core: route a request, check it against the signature, batch it.

It serves in the process that holds the models: the single-process server's servicers
call `predict`, which picks the version (pin, label, or production with the canary's
share), validates the inputs against that version's signature, queues them on its
batcher and awaits the answer; the model owner of a multi-process server calls `route`
and `enqueue` for requests a front end has already validated. It opens one span per
request (the batch span links back to it), counts requests by model, version and status
code, keeps each version's statistics of answers, and logs each prediction for the
feedback that may follow it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import numpy as np
from opentelemetry import trace

from services.inference.batcher import Arrays, Batcher
from services.inference.catalog import Catalog
from services.inference.feedback import FeedbackItem, FeedbackOutcome
from services.inference.metrics import count_feedback, count_request
from services.inference.model_manager import LoadedVersion, ModelManager
from services.inference.routing import Router
from services.inference.serving import Prediction, request_id_or_new
from services.inference.statistics import VersionStatistics
from services.inference.validation import check_output_filter, default_field, validate_inputs
from shared.errors import DeadlineExceeded, DomainError, NotFound

__all__ = ["InferenceCore", "Prediction", "submit_in_batches"]


class InferenceCore:
    def __init__(
        self, manager: ModelManager, router: Router, tracer: trace.Tracer | None = None
    ) -> None:
        self.manager = manager
        self._router = router
        self._tracer = tracer or trace.NoOpTracer()

    def catalog(self) -> Catalog:
        return self.manager.catalog()

    def ready(self) -> bool:
        return True

    def route(self, model: str, version: int = 0, label: str = "") -> LoadedVersion:
        """The loaded version a request goes to (canary share included)."""
        return self._router.route(model, self.manager.model(model).table, version, label)

    async def predict(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        version: int = 0,
        label: str = "",
        deadline: float | None = None,
        output_filter: Sequence[str] = (),
        field_of: Callable[[str], str] = default_field,
        output_filter_field: str = "output_filter",
        request_id: str = "",
    ) -> Prediction:
        """Outputs for `inputs`; `deadline` is a `time.monotonic()` instant."""
        started = time.perf_counter()
        request_id = request_id_or_new(request_id)
        target: LoadedVersion | None = None
        queued: asyncio.Future[Arrays] | None = None
        code = "OK"
        with self._tracer.start_as_current_span("inference.request") as span:
            try:
                served = self.manager.model(model)
                target = self._router.route(model, served.table, version, label)
                predictions = served.feedback
                span.set_attributes({"model": model, "model.version": target.version})
                signature = target.runtime.signature
                rows = validate_inputs(
                    inputs, signature, target.batcher.options.max_queued_rows, field_of
                )
                if output_filter:
                    check_output_filter(output_filter, signature, output_filter_field)
                span.set_attribute("rows", rows)
                target.drift.observe(inputs)
                queued = submit_in_batches(target.batcher, inputs, rows, deadline)
                outputs = await queued
            except DomainError as error:
                code = error.code.name
                if isinstance(error, DeadlineExceeded) and queued is not None and target:
                    target.statistics.record_timeout(time.perf_counter() - started)
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception:
                code = "INTERNAL"
                if queued is not None and target is not None:
                    target.statistics.record_model_error()
                raise
            finally:
                count_request(
                    model, self.manager.knows(model), target.version if target else 0, code, started
                )
                if queued is not None and target is not None:
                    # Only requests the version took count as its answers (as in the owner).
                    target.statistics.record_answer(code == "OK", time.perf_counter() - started)
        predictions.record(request_id, target.version, outputs)
        if output_filter:
            outputs = {name: outputs[name] for name in output_filter}
        return Prediction(model, target.version, outputs, request_id)

    async def statistics(self, model: str = "", version: int = 0) -> list[VersionStatistics]:
        return version_statistics(self.manager, model, version)

    async def report_feedback(self, model: str, items: Sequence[FeedbackItem]) -> FeedbackOutcome:
        return report_feedback(self.manager, model, items)


def report_feedback(
    manager: ModelManager, model: str, items: Sequence[FeedbackItem]
) -> FeedbackOutcome:
    """Join feedback to a served model's predictions, and count it."""
    served = manager.model(model)
    loaded = {n for n, record in served.records.items() if record.loaded is not None}
    outcome = served.feedback.report(items, loaded)
    count_feedback(model, outcome, served.feedback)
    return outcome


def version_statistics(manager: ModelManager, model: str, version: int) -> list[VersionStatistics]:
    """Snapshots of the loaded versions' statistics: of one model (and version) or all."""
    models = [manager.model(model)] if model else manager.models()
    found = []
    for served in models:
        for number, record in sorted(served.records.items()):
            if record.loaded is not None and version in (0, number):
                loaded = record.loaded
                found.append(
                    loaded.statistics.snapshot(
                        loaded.batcher.queued_rows,
                        loaded.drift.status(),
                        served.feedback.tally(number),
                    )
                )
    if model and version and not found:
        raise NotFound("model version", f"{model}/{version}", "version")
    return found


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
