"""The inference core: route a request, check it against the signature, batch it.

Every protocol's servicer converts its request into numpy arrays and calls `predict`,
which picks the version (pin, label, or production with the canary's share), validates
the inputs against that version's signature, queues them on its batcher and awaits the
answer. It opens one span per request (the batch span links back to it) and counts
requests by model, version and status code. Status views for the protocols' status and
metadata calls come from the model manager's records."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from opentelemetry import trace

from services.inference.batcher import Batcher
from services.inference.metrics import REQUESTS
from services.inference.model_manager import LoadedVersion, ModelManager, ServedModel
from services.inference.routing import Router
from services.inference.validation import check_output_filter, default_field, validate_inputs
from shared.errors import DomainError

UNKNOWN_MODEL_LABEL = "unknown"


@dataclass(frozen=True)
class Prediction:
    model: str
    version: int
    outputs: dict[str, np.ndarray]


class InferenceCore:
    def __init__(
        self, manager: ModelManager, router: Router, tracer: trace.Tracer | None = None
    ) -> None:
        self.manager = manager
        self._router = router
        self._tracer = tracer or trace.NoOpTracer()

    def resolve(self, model: str, version: int = 0, label: str = "") -> LoadedVersion:
        """The version a metadata call is about: the pinned one, or production."""
        served = self.manager.model(model)
        return self._router.route(model, served.table, version, label, follow_canary=False)

    def model(self, name: str) -> ServedModel:
        return self.manager.model(name)

    def models(self) -> list[ServedModel]:
        return self.manager.models()

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
    ) -> Prediction:
        """Outputs for `inputs`; `deadline` is a `time.monotonic()` instant."""
        chosen = 0
        code = "OK"
        with self._tracer.start_as_current_span("inference.request") as span:
            try:
                served = self.manager.model(model)
                target = self._router.route(model, served.table, version, label)
                chosen = target.version
                span.set_attributes({"model": model, "model.version": chosen})
                signature = target.runtime.signature
                rows = validate_inputs(
                    inputs, signature, target.batcher.options.max_queued_rows, field_of
                )
                if output_filter:
                    check_output_filter(output_filter, signature, output_filter_field)
                span.set_attribute("rows", rows)
                outputs = await submit_in_batches(target.batcher, inputs, rows, deadline)
            except DomainError as error:
                code = error.code.name
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception:
                code = "INTERNAL"
                raise
            finally:
                label_model = model if self.manager.knows(model) else UNKNOWN_MODEL_LABEL
                REQUESTS.labels(label_model, str(chosen), code).inc()
        if output_filter:
            outputs = {name: outputs[name] for name in output_filter}
        return Prediction(model, chosen, outputs)


async def submit_in_batches(
    batcher: Batcher, inputs: dict[str, np.ndarray], rows: int, deadline: float | None
) -> dict[str, np.ndarray]:
    """Queue a request; one larger than `max_batch_size` goes in pieces of that size (TF
    Serving's large-batch splitting) whose outputs are joined back in order. If any piece
    cannot be queued, the pieces already queued are cancelled and never computed."""
    size = batcher.options.max_batch_size
    if rows <= size:
        return await batcher.submit(inputs, rows, deadline)
    pieces: list[asyncio.Future[dict[str, np.ndarray]]] = []
    try:
        for start in range(0, rows, size):
            piece = {name: array[start : start + size] for name, array in inputs.items()}
            pieces.append(batcher.submit(piece, min(size, rows - start), deadline))
        parts = await asyncio.gather(*pieces)
    except BaseException:
        for future in pieces:
            future.cancel()
        raise
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
