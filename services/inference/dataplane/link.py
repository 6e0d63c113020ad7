"""A front end's link to the model owner: the submitter of its pipeline.

The link keeps one connection to the owner, reconnecting with backoff whenever it drops,
and the last catalog the owner sent, which the pipeline routes and validates with, so a
bad request never crosses. A submitted request's inputs go into the slab beside room for
its outputs, a `Submit` frame goes out, and the answer's outputs are copied out of the
slab before the room is freed. A caller that gives up sends `Cancel`; the room is freed
only when the owner's `Result` says it is done with it. A control call crosses as one
generic `Control` frame. While the owner is away every call fails fast with UNAVAILABLE
and a retry delay, the link reports not ready, and the slab is all free again (the owner
that read it is gone)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.inference.batcher import Arrays
from services.inference.catalog import Catalog, VersionView
from services.inference.controls import Controls
from services.inference.dataplane import frames
from services.inference.dataplane.connection import FrameConnection, socket_address
from services.inference.dataplane.slab import ALIGNMENT, Slab, SlabAllocator, SlabFull
from services.inference.pipeline import Submission
from shared.errors import ResourceExhausted, Unavailable, from_status
from tfmesh.inference.dataplane.v1 import dataplane_pb2 as dp

log = logging.getLogger(__name__)

PROPAGATOR = TraceContextTextMapPropagator()
OWNER_RETRY_AFTER_S = 1.0
MAX_RECONNECT_DELAY_S = 1.0
P = ParamSpec("P")
T = TypeVar("T")


def _aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


@dataclass(eq=False)
class _Call:
    future: asyncio.Future[tuple[int, Arrays]]
    offset: int


class OwnerLink:
    def __init__(self, address: str, slab: Slab, frontend: int) -> None:
        self._address = address
        self._slab = slab
        self._allocator = SlabAllocator(slab.size)
        self._frontend = frontend
        self._catalog: Catalog | None = None
        self._connection: FrameConnection | None = None
        self._calls: dict[int, _Call] = {}
        # Control calls awaiting the owner's answer.
        self._controls: dict[int, asyncio.Future[dp.ControlAnswer]] = {}
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
        elif kind == "control_answer":
            control = self._controls.pop(frame.control_answer.call, None)
            if control is not None and not control.done():
                control.set_result(frame.control_answer)
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
        for control in self._controls.values():
            if not control.done():
                control.set_exception(self._owner_away())
        self._controls.clear()
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

    # --- Submitter ----------------------------------------------------------------------

    def catalog(self) -> Catalog:
        self._live_connection()
        assert self._catalog is not None
        return self._catalog

    def ready(self) -> bool:
        return self._connection is not None and self._catalog is not None

    async def submit(self, target: VersionView, submission: Submission) -> tuple[int, Arrays]:
        connection = self._live_connection()
        assert target.signature is not None
        wanted = [
            spec
            for spec in target.signature.outputs
            if not submission.output_filter or spec.name in submission.output_filter
        ]
        reserved = [frames.reserved_output(spec, submission.rows) for spec in wanted]
        inputs = submission.inputs
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
        future: asyncio.Future[tuple[int, Arrays]] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = _Call(future, offset)
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier)
        connection.send(
            dp.Frame(
                submit=dp.Submit(
                    call=call_id,
                    model=submission.model,
                    version=submission.version,
                    version_pinned=submission.pinned,
                    label=submission.label,
                    rows=submission.rows,
                    deadline=submission.deadline or 0.0,
                    traceparent=carrier.get("traceparent", ""),
                    inputs=refs,
                    outputs=reserved,
                    request_id=submission.request_id,
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

    async def control(
        self, method: Callable[Concatenate[Controls, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        connection = self._live_connection()
        call_id = next(self._ids)
        frame = frames.control_to_frame(call_id, method, args, kwargs)
        future: asyncio.Future[dp.ControlAnswer] = asyncio.get_running_loop().create_future()
        self._controls[call_id] = future
        connection.send(frame)
        answer = await future
        if answer.error:
            raise from_status(frames.error_status(answer.error))
        return typing.cast(T, frames.control_result(method.__name__, answer))

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
                call.future.set_exception(from_status(frames.error_status(result.error)))
                return
            memory = self._slab.memory
            outputs = {
                ref.name: np.array(frames.read_tensor(memory, ref)) for ref in result.outputs
            }
            call.future.set_result((result.version, outputs))
        finally:
            self._allocator.free(call.offset)
