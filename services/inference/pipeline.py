"""The one path every request takes, whichever protocol brought it and whichever process
serves it: route, validate, submit, record.

`Pipeline.predict` picks the version (a pin, a label, or production with the canary's
share) from the submitter's catalog, checks the inputs against that version's signature,
hands the request to the submitter and awaits the answer; it opens one span per request
(the batch's span links back to it) and counts requests by model, version and status
code. Control calls (statistics, feedback: services.inference.controls) go through the
submitter too. The submitter
is all that differs between the shapes of the service: `LocalSubmitter`
(services.inference.execution) where the models are in this process, `OwnerLink`
(services.inference.dataplane.link) in a front end. Errors name request fields by the
core's paths (`inputs[<name>]`, `output_filter`); each protocol adapter rewrites them
into its own. Every prediction has a request id, the client's or one made up here, by
which feedback names it later."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, Protocol, TypeVar

import numpy as np
from opentelemetry import trace

from services.inference.batcher import Arrays
from services.inference.catalog import Catalog, VersionView
from services.inference.controls import Controls
from services.inference.feedback import MAX_REQUEST_ID
from services.inference.metrics import count_request
from services.inference.routing import Router
from services.inference.validation import check_output_filter, validate_inputs
from shared.errors import DomainError, invalid

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Submission:
    """A request routed and validated by the pipeline, on its way to a version."""

    model: str
    # The version the pipeline routed to.
    version: int
    # True when the client pinned `version`; else the request may be routed again.
    pinned: bool
    label: str
    rows: int
    inputs: Arrays
    # A `time.monotonic()` instant (one clock for every process of the machine), or None.
    deadline: float | None
    request_id: str
    # Outputs to return; empty: all of them.
    output_filter: tuple[str, ...] = ()
    # The request's span, linked from its batch's span; None: the current span.
    link: trace.SpanContext | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Prediction:
    model: str
    version: int
    outputs: dict[str, np.ndarray]
    request_id: str = ""


class Submitter(Protocol):
    def catalog(self) -> Catalog:
        """The current catalog; raises Unavailable when none can be had (owner down)."""
        ...

    def ready(self) -> bool:
        """Whether predictions can be served now (the model owner is reachable)."""
        ...

    async def submit(self, target: VersionView, submission: Submission) -> tuple[int, Arrays]:
        """The version that answered `submission` (routed to `target`) and its outputs."""
        ...

    async def control(
        self, method: Callable[Concatenate[Controls, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`method` of the model holder's `Controls`, called with these arguments."""
        ...


def request_id_or_new(given: str, field: str = "request_id") -> str:
    """The client's request id, or a new random one when it gave none."""
    if len(given) > MAX_REQUEST_ID:
        raise invalid(field, f"at most {MAX_REQUEST_ID} characters")
    return given or uuid.uuid4().hex


class Pipeline:
    def __init__(
        self, submitter: Submitter, router: Router | None = None, tracer: trace.Tracer | None = None
    ) -> None:
        self._submitter = submitter
        self._router = router or Router()
        self._tracer = tracer or trace.NoOpTracer()

    def catalog(self) -> Catalog:
        return self._submitter.catalog()

    def ready(self) -> bool:
        return self._submitter.ready()

    async def predict(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        version: int = 0,
        label: str = "",
        deadline: float | None = None,
        output_filter: Sequence[str] = (),
        request_id: str = "",
    ) -> Prediction:
        """Outputs for `inputs`; `deadline` is a `time.monotonic()` instant."""
        started = time.perf_counter()
        request_id = request_id_or_new(request_id)
        known = False
        chosen = 0
        code = "OK"
        with self._tracer.start_as_current_span("inference.request") as span:
            try:
                catalog = self._submitter.catalog()
                known = catalog.knows(model)
                served = catalog.model(model)
                target = self._router.route(model, served.table, version, label)
                chosen = target.version
                span.set_attributes({"model": model, "model.version": chosen})
                assert target.signature is not None  # routable versions are loaded
                rows = validate_inputs(inputs, target.signature, served.batching.max_queued_rows)
                if output_filter:
                    check_output_filter(output_filter, target.signature)
                span.set_attribute("rows", rows)
                submission = Submission(
                    model,
                    chosen,
                    version != 0,
                    label,
                    rows,
                    inputs,
                    deadline,
                    request_id,
                    tuple(output_filter),
                )
                chosen, outputs = await self._submitter.submit(target, submission)
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
                count_request(model, known, chosen, code, started)
        return Prediction(model, chosen, outputs, request_id)

    async def control(
        self, method: Callable[Concatenate[Controls, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """A control call: `method` of the model holder's `Controls`, with these arguments."""
        return await self._submitter.control(method, *args, **kwargs)
