"""A front end's link to the model owner: the `Serving` its servicers call.

The link keeps one connection to the owner, reconnecting with backoff whenever it drops,
and the last catalog the owner sent. A prediction is routed and validated here against
that catalog, so a bad request never crosses; then its inputs go into the slab beside
room for its outputs, a `Submit` frame goes out, and the answer's outputs are copied
out of the slab before the room is freed. A caller that gives up sends `Cancel`; the
room is freed only when the owner's `Result` says it is done with it. While the owner
is away every call fails fast with UNAVAILABLE and a retry delay, the link reports not
ready, and the slab is all free again (the owner that read it is gone)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.inference.catalog import Catalog, VersionView
from services.inference.dataplane import frames
from services.inference.dataplane.connection import FrameConnection, socket_address
from services.inference.dataplane.slab import ALIGNMENT, Slab, SlabAllocator, SlabFull
from services.inference.feedback import FeedbackItem, FeedbackOutcome
from services.inference.metrics import count_request
from services.inference.routing import Router
from services.inference.serving import Prediction, request_id_or_new
from services.inference.statistics import VersionStatistics
from services.inference.validation import check_output_filter, default_field, validate_inputs
from shared.errors import DomainError, RemoteStatus, ResourceExhausted, Unavailable
from tfmesh.inference.dataplane.v1 import dataplane_pb2 as dp

log = logging.getLogger(__name__)

PROPAGATOR = TraceContextTextMapPropagator()
OWNER_RETRY_AFTER_S = 1.0
MAX_RECONNECT_DELAY_S = 1.0


def _aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


@dataclass(eq=False)
class _Call:
    future: asyncio.Future[tuple[int, dict[str, np.ndarray]]]
    offset: int


class OwnerLink:
    def __init__(
        self,
        address: str,
        slab: Slab,
        frontend: int,
        *,
        tracer: trace.Tracer | None = None,
        router: Router | None = None,
    ) -> None:
        self._address = address
        self._slab = slab
        self._allocator = SlabAllocator(slab.size)
        self._frontend = frontend
        self._tracer = tracer or trace.NoOpTracer()
        self._router = router or Router()
        self._catalog: Catalog | None = None
        self._connection: FrameConnection | None = None
        self._calls: dict[int, _Call] = {}
        # Statistics queries and feedback reports awaiting the owner's reply.
        self._queries: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._listeners: list[Callable[[bool], None]] = []
        self._lost = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- connection -----------------------------------------------------------------------

    def on_ready_change(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._stay_connected(), name="owner-link")

    async def wait_ready(self, timeout_s: float | None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._connection is not None:
            self._connection.close()
        self._slab.close()

    async def _stay_connected(self) -> None:
        delay = 0.02
        while True:
            try:
                await self._connect()
            except OSError as error:
                log.debug("model owner not reachable", extra={"error": str(error)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY_S)
                continue
            delay = 0.02
            await self._lost.wait()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, socket_address(self._address))
            hello = dp.Hello(frontend=self._frontend, pid=os.getpid(), slab_bytes=self._slab.size)
            assert self._slab.fd is not None
            socket.send_fds(sock, [frames.encode(dp.Frame(hello=hello))], [self._slab.fd])
            self._lost.clear()

            def connect() -> FrameConnection:
                self._connection = FrameConnection(self._on_frame, self._on_lost)
                return self._connection

            await loop.create_unix_connection(connect, sock=sock)
        except BaseException:
            self._connection = None
            sock.close()
            raise

    def _on_frame(self, frame: dp.Frame) -> None:
        kind = frame.WhichOneof("body")
        if kind == "result":
            self._on_result(frame.result)
        elif kind == "catalog":
            first = self._catalog is None
            self._catalog = frames.catalog_from_frame(frame.catalog)
            if first:
                self._ready.set()
                self._notify(True)
        elif kind in ("statistics", "feedback_reply"):
            reply = getattr(frame, kind)
            query = self._queries.pop(reply.query, None)
            if query is not None and not query.done():
                query.set_result(reply)
        else:
            log.warning("unexpected frame from the model owner", extra={"kind": kind})

    def _on_lost(self, exc: Exception | None) -> None:
        was_ready = self._catalog is not None
        self._connection = None
        self._catalog = None
        self._ready.clear()
        for call in self._calls.values():
            if not call.future.done():
                call.future.set_exception(self._owner_away())
        self._calls.clear()
        for query in self._queries.values():
            if not query.done():
                query.set_exception(self._owner_away())
        self._queries.clear()
        self._allocator.reset()
        self._lost.set()
        if was_ready:
            log.warning("lost the model owner", extra={"frontend": self._frontend})
            self._notify(False)

    def _notify(self, ready: bool) -> None:
        for listener in self._listeners:
            listener(ready)

    @staticmethod
    def _owner_away() -> Unavailable:
        return Unavailable(
            "the model owner is not reachable (restarting?); retry", OWNER_RETRY_AFTER_S
        )

    def _live_connection(self) -> FrameConnection:
        if self._connection is None or self._catalog is None:
            raise self._owner_away()
        return self._connection

    # --- Serving --------------------------------------------------------------------------

    def catalog(self) -> Catalog:
        self._live_connection()
        assert self._catalog is not None
        return self._catalog

    def ready(self) -> bool:
        return self._connection is not None and self._catalog is not None

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
        started = time.perf_counter()
        request_id = request_id_or_new(request_id)
        known = False
        chosen = 0
        code = "OK"
        with self._tracer.start_as_current_span("inference.request") as span:
            try:
                catalog = self.catalog()
                known = catalog.knows(model)
                served = catalog.model(model)
                target = self._router.route(model, served.table, version, label)
                chosen = target.version
                span.set_attributes({"model": model, "model.version": chosen})
                assert target.signature is not None  # routable versions are loaded
                rows = validate_inputs(
                    inputs, target.signature, served.batching.max_queued_rows, field_of
                )
                if output_filter:
                    check_output_filter(output_filter, target.signature, output_filter_field)
                span.set_attribute("rows", rows)
                carrier: dict[str, str] = {}
                PROPAGATOR.inject(carrier)
                answered, outputs = await self._call(
                    target,
                    version != 0,
                    label,
                    rows,
                    inputs,
                    output_filter,
                    deadline,
                    carrier,
                    request_id,
                )
                chosen = answered
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

    async def _call(
        self,
        target: VersionView,
        pinned: bool,
        label: str,
        rows: int,
        inputs: dict[str, np.ndarray],
        output_filter: Sequence[str],
        deadline: float | None,
        carrier: dict[str, str],
        request_id: str,
    ) -> tuple[int, dict[str, np.ndarray]]:
        connection = self._live_connection()
        assert target.signature is not None
        wanted = [
            spec
            for spec in target.signature.outputs
            if not output_filter or spec.name in output_filter
        ]
        reserved = [frames.reserved_output(spec, rows) for spec in wanted]
        sizes = [frames.tensor_size(array) for array in inputs.values()]
        total = sum(_aligned(size) for size in sizes) + sum(_aligned(r.size) for r in reserved)
        try:
            offset = self._allocator.allocate(total)
        except SlabFull as full:
            raise self._slab_full(full) from None
        memory = self._slab.memory
        position = offset
        refs = []
        for (name, array), size in zip(inputs.items(), sizes, strict=True):
            refs.append(frames.write_tensor(memory, position, name, array))
            position += _aligned(size)
        for ref in reserved:
            if ref.size:
                ref.offset = position
                position += _aligned(ref.size)
        call_id = next(self._ids)
        future: asyncio.Future[tuple[int, dict[str, np.ndarray]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._calls[call_id] = _Call(future, offset)
        connection.send(
            dp.Frame(
                submit=dp.Submit(
                    call=call_id,
                    model=target.model,
                    version=target.version,
                    version_pinned=pinned,
                    label=label,
                    rows=rows,
                    deadline=deadline or 0.0,
                    traceparent=carrier.get("traceparent", ""),
                    inputs=refs,
                    outputs=reserved,
                    request_id=request_id,
                )
            )
        )
        try:
            return await future
        except asyncio.CancelledError:
            # The room stays taken until the owner's Result says it is done with it.
            if call_id in self._calls and self._connection is connection:
                connection.send(dp.Frame(cancel=dp.Cancel(call=call_id)))
            raise

    def _slab_full(self, full: SlabFull) -> ResourceExhausted:
        if full.larger_than_slab:
            return ResourceExhausted(
                f"the request and its answer need {full.wanted} bytes of shared memory, more "
                f"than a front end's slab holds ({self._slab.size} bytes: "
                "TFMESH_INFERENCE_SLAB_BYTES)"
            )
        return ResourceExhausted(
            "this front end's shared memory is full of requests in flight", retry_after_s=0.05
        )

    def _on_result(self, result: dp.Result) -> None:
        call = self._calls.pop(result.call, None)
        if call is None:
            return
        try:
            if call.future.done():
                return
            if result.error:
                call.future.set_exception(RemoteStatus(frames.error_status(result.error)))
                return
            memory = self._slab.memory
            outputs = {
                ref.name: np.array(frames.read_tensor(memory, ref)) for ref in result.outputs
            }
            call.future.set_result((result.version, outputs))
        finally:
            self._allocator.free(call.offset)

    async def _ask(self, query: int, frame: dp.Frame) -> Any:
        """Send a query frame and wait for the owner's reply to it; raises its error."""
        connection = self._live_connection()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queries[query] = future
        connection.send(frame)
        reply = await future
        if reply.error:
            raise RemoteStatus(frames.error_status(reply.error))
        return reply

    async def statistics(self, model: str = "", version: int = 0) -> list[VersionStatistics]:
        query = next(self._ids)
        frame = dp.Frame(
            statistics_query=dp.StatisticsQuery(query=query, model=model, version=version)
        )
        return frames.statistics_from_frame(await self._ask(query, frame))

    async def report_feedback(self, model: str, items: Sequence[FeedbackItem]) -> FeedbackOutcome:
        query = next(self._ids)
        reply = await self._ask(query, frames.feedback_report_to_frame(query, model, items))
        return FeedbackOutcome(reply.matched, reply.unknown, reply.late)
