"""The model owner's side of the data plane: front ends connect, their requests go onto the
batchers of the one copy of each loaded version.

The owner listens on a Unix socket. A front end connects and sends `Hello` with its
slab's file descriptor; the owner maps the slab, sends the catalog, and from then on
takes `Submit` frames: it finds the version the front end routed to (routing an
unpinned or label-pinned request again if that version left meanwhile, and checking its
inputs against the new signature), reads the inputs in place, queues them on the
version's batcher, and when the batch is done writes the outputs into the room the
front end reserved and answers `Result`, logging the prediction for feedback under its
request id. `Cancel` drops a request that is still queued. Feedback reports are joined
here, where every front end's predictions are logged.
Every catalog change goes to every front end. A front end that goes away takes its
queued requests with it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Coroutine
from typing import Any

from google.rpc import status_pb2
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.inference.batcher import Arrays
from services.inference.core import (
    InferenceCore,
    report_feedback,
    submit_in_batches,
    version_statistics,
)
from services.inference.dataplane import frames
from services.inference.dataplane.connection import FrameConnection, socket_address
from services.inference.dataplane.slab import Slab
from services.inference.feedback import PredictionLog
from services.inference.model_manager import LoadedVersion, ModelManager, ServedModel
from services.inference.statistics import VersionStatistics
from services.inference.validation import validate_inputs
from shared.errors import Cancelled, Code, DeadlineExceeded, DomainError, NotFound, RemoteStatus
from tfmesh.inference.dataplane.v1 import dataplane_pb2 as dp

log = logging.getLogger(__name__)

# A connecting front end sends its Hello at once; one that does not is dropped.
HELLO_TIMEOUT_S = 5.0
PROPAGATOR = TraceContextTextMapPropagator()


def _internal(message: str) -> RemoteStatus:
    return RemoteStatus(status_pb2.Status(code=Code.INTERNAL, message=message))


class ModelOwner:
    def __init__(self, core: InferenceCore) -> None:
        self._core = core
        self._sessions: set[_Session] = set()
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._broadcast_pending = False
        core.manager.on_change(self._catalog_changed)

    async def start(self, address: str) -> None:
        """Listen on `address`: a path, or `@name` for an abstract socket."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(socket_address(address))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._spawn(self._accept_forever())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        for session in list(self._sessions):
            session.connection.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _catalog_changed(self) -> None:
        if not self._broadcast_pending:
            self._broadcast_pending = True
            asyncio.get_running_loop().call_soon(self._broadcast)

    def _broadcast(self) -> None:
        self._broadcast_pending = False
        frame = frames.catalog_to_frame(self._core.catalog())
        for session in self._sessions:
            session.connection.send(frame)

    async def _accept_forever(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            self._spawn(self._welcome(conn))

    async def _welcome(self, conn: socket.socket) -> None:
        """Take the Hello and the slab, then serve the front end on the event loop."""
        fds: list[int] = []
        try:
            conn.setblocking(True)
            conn.settimeout(HELLO_TIMEOUT_S)
            data, fds, _, _ = await asyncio.to_thread(socket.recv_fds, conn, 65536, 1)
            (size,) = frames.LENGTH.unpack_from(data)
            end = frames.LENGTH.size + size
            hello = dp.Frame.FromString(data[frames.LENGTH.size : end])
            if len(data) < end or hello.WhichOneof("body") != "hello" or len(fds) != 1:
                raise ValueError("the first frame must be a whole Hello sent with the slab")
            slab = Slab.attach(fds.pop(), hello.hello.slab_bytes)
            conn.setblocking(False)
            session = _Session(self, hello.hello, slab)

            def connect() -> FrameConnection:
                session.connection = FrameConnection(session.on_frame, session.on_lost, data[end:])
                return session.connection

            await asyncio.get_running_loop().connect_accepted_socket(connect, conn)
        except Exception:  # noqa: BLE001 - one bad front end must not stop the others
            log.exception("a front end could not connect")
            for fd in fds:
                with contextlib.suppress(OSError):
                    socket.close(fd)
            conn.close()
            return
        self._sessions.add(session)
        session.connection.send(frames.catalog_to_frame(self._core.catalog()))
        log.info(
            "front end connected",
            extra={"frontend": hello.hello.frontend, "pid": hello.hello.pid},
        )

    def forget(self, session: _Session) -> None:
        self._sessions.discard(session)
        log.info("front end disconnected", extra={"frontend": session.hello.frontend})

    # --- requests -------------------------------------------------------------------------

    @property
    def manager(self) -> ModelManager:
        return self._core.manager

    def served(self, model: str) -> ServedModel:
        return self._core.manager.model(model)

    def statistics(self, model: str, version: int) -> list[VersionStatistics]:
        return version_statistics(self._core.manager, model, version)

    def target(self, submit: dp.Submit, served: ServedModel) -> tuple[LoadedVersion, bool]:
        """The version of `served` for a request, and whether it had to be routed again."""
        target = served.table.by_version.get(submit.version)
        if target is not None:
            return target, False
        if submit.version_pinned:
            raise NotFound("model version", f"{submit.model}/{submit.version}", "version")
        return self._core.route(submit.model, 0, submit.label), True


class _Session:
    """The owner's side of one front end's connection."""

    connection: FrameConnection

    def __init__(self, owner: ModelOwner, hello: dp.Hello, slab: Slab) -> None:
        self._owner = owner
        self.hello = hello
        self._slab = slab
        self._calls: dict[int, asyncio.Future[Arrays]] = {}

    def on_frame(self, frame: dp.Frame) -> None:
        kind = frame.WhichOneof("body")
        if kind == "submit":
            self._submit(frame.submit)
        elif kind == "cancel":
            future = self._calls.get(frame.cancel.call)
            if future is not None:
                future.cancel()
        elif kind == "statistics_query":
            self._statistics(frame.statistics_query)
        elif kind == "feedback_report":
            self._feedback(frame.feedback_report)
        else:
            log.warning("unexpected frame from a front end", extra={"kind": kind})

    def on_lost(self, exc: Exception | None) -> None:
        for future in self._calls.values():
            future.cancel()
        self._calls.clear()
        self._owner.forget(self)

    def _submit(self, submit: dp.Submit) -> None:
        started = time.perf_counter()
        try:
            served = self._owner.served(submit.model)
            target, rerouted = self._owner.target(submit, served)
            memory = self._slab.memory
            inputs = {ref.name: frames.read_tensor(memory, ref) for ref in submit.inputs}
            if rerouted:
                validate_inputs(
                    inputs, target.runtime.signature, target.batcher.options.max_queued_rows
                )
            target.drift.observe(inputs)
            link = None
            if submit.traceparent:
                context = PROPAGATOR.extract({"traceparent": submit.traceparent})
                link = trace.get_current_span(context).get_span_context()
            future = submit_in_batches(
                target.batcher, inputs, submit.rows, submit.deadline or None, link
            )
        except DomainError as error:
            self._answer_error(submit.call, error)
            return
        self._calls[submit.call] = future
        future.add_done_callback(
            functools.partial(self._finish, submit, target, served.feedback, started)
        )

    def _finish(
        self,
        submit: dp.Submit,
        target: LoadedVersion,
        predictions: PredictionLog,
        started: float,
        future: asyncio.Future[Arrays],
    ) -> None:
        self._calls.pop(submit.call, None)
        if future.cancelled():
            target.statistics.record_answer(False, time.perf_counter() - started)
            self._answer_error(submit.call, Cancelled("the request was cancelled"))
            return
        error = future.exception()
        if error is None:
            try:
                outputs = future.result()
                refs = [
                    frames.write_output(self._slab.memory, reserved, outputs[reserved.name])
                    for reserved in submit.outputs
                ]
            except KeyError as missing:
                error = _internal(f"version {target.version} returned no output {missing}")
        target.statistics.record_answer(error is None, time.perf_counter() - started)
        if error is not None:
            if isinstance(error, DeadlineExceeded):
                target.statistics.record_timeout(time.perf_counter() - started)
            if not isinstance(error, DomainError):
                log.error("a batch failed", exc_info=error)
                target.statistics.record_model_error()
                error = _internal(f"internal error: {type(error).__name__}")
            self._answer_error(submit.call, error)
            return
        predictions.record(submit.request_id, target.version, outputs)
        self.connection.send(
            dp.Frame(result=dp.Result(call=submit.call, version=target.version, outputs=refs))
        )

    def _answer_error(self, call: int, error: DomainError) -> None:
        self.connection.send(dp.Frame(result=dp.Result(call=call, error=frames.error_bytes(error))))

    def _feedback(self, report: dp.FeedbackReport) -> None:
        try:
            outcome = report_feedback(
                self._owner.manager, report.model, frames.feedback_items_from_frame(report)
            )
        except DomainError as error:
            reply = dp.Frame(
                feedback_reply=dp.FeedbackReply(query=report.query, error=frames.error_bytes(error))
            )
        else:
            reply = frames.feedback_reply_to_frame(report.query, outcome)
        self.connection.send(reply)

    def _statistics(self, query: dp.StatisticsQuery) -> None:
        try:
            found = self._owner.statistics(query.model, query.version)
        except DomainError as error:
            reply = dp.Frame(
                statistics=dp.Statistics(query=query.query, error=frames.error_bytes(error))
            )
        else:
            reply = frames.statistics_to_frame(query.query, found)
        self.connection.send(reply)
