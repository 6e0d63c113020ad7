"""The model owner's side of the data plane: front ends connect, their requests go onto the
batchers of the one copy of each loaded version.

The owner listens on a Unix socket. A front end connects and sends `Hello` with its
slab's file descriptor; the owner maps the slab, sends the catalog, and from then on
takes `Submit` frames: it reads the inputs in place, starts the request on the executor
(services.inference.execution: the version, its batcher, its statistics and prediction
log), and when the batch is done writes the outputs into the room the front end
reserved and answers `Result`. `Cancel` drops a request that is still queued. A
`Control` frame calls one of the owner's `Controls` (statistics, feedback: joined here,
where every front end's predictions are logged) and is answered with its result.
Every catalog change goes to every front end. A front end that goes away takes its
queued requests with it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Coroutine
from typing import Any

from google.rpc import status_pb2
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.inference.batcher import Arrays
from services.inference.controls import Controls
from services.inference.dataplane import frames
from services.inference.dataplane.connection import FrameConnection, socket_address
from services.inference.dataplane.slab import Slab
from services.inference.execution import Executor
from services.inference.model_manager import ModelManager
from services.inference.pipeline import Submission
from services.inference.routing import Router
from shared.errors import Cancelled, Code, DomainError, RemoteStatus
from tfmesh.inference.dataplane.v1 import dataplane_pb2 as dp

log = logging.getLogger(__name__)

# A connecting front end sends its Hello at once; one that does not is dropped.
HELLO_TIMEOUT_S = 5.0
PROPAGATOR = TraceContextTextMapPropagator()


def _internal(message: str) -> RemoteStatus:
    return RemoteStatus(status_pb2.Status(code=Code.INTERNAL, message=message))


class ModelOwner:
    def __init__(self, manager: ModelManager, router: Router) -> None:
        self._manager = manager
        self._executor = Executor(manager, router)
        self._controls = Controls(manager)
        self._sessions: set[_Session] = set()
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._broadcast_pending = False
        manager.on_change(self._catalog_changed)

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
        frame = frames.catalog_to_frame(self._manager.catalog())
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
        session.connection.send(frames.catalog_to_frame(self._manager.catalog()))
        log.info(
            "front end connected",
            extra={"frontend": hello.hello.frontend, "pid": hello.hello.pid},
        )

    def forget(self, session: _Session) -> None:
        self._sessions.discard(session)
        log.info("front end disconnected", extra={"frontend": session.hello.frontend})

    # --- requests -------------------------------------------------------------------------

    @property
    def executor(self) -> Executor:
        return self._executor

    @property
    def controls(self) -> Controls:
        return self._controls


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
        elif kind == "control":
            self._control(frame.control)
        else:
            log.warning("unexpected frame from a front end", extra={"kind": kind})

    def on_lost(self, exc: Exception | None) -> None:
        for future in self._calls.values():
            future.cancel()
        self._calls.clear()
        self._owner.forget(self)

    def _submit(self, submit: dp.Submit) -> None:
        try:
            memory = self._slab.memory
            inputs = {ref.name: frames.read_tensor(memory, ref) for ref in submit.inputs}
            link = None
            if submit.traceparent:
                context = PROPAGATOR.extract({"traceparent": submit.traceparent})
                link = trace.get_current_span(context).get_span_context()
            execution = self._owner.executor.start(
                Submission(
                    submit.model,
                    submit.version,
                    submit.version_pinned,
                    submit.label,
                    submit.rows,
                    inputs,
                    submit.deadline or None,
                    submit.request_id,
                    link=link,
                )
            )
        except DomainError as error:
            self._answer_error(submit.call, error)
            return
        self._calls[submit.call] = execution.outputs
        execution.outputs.add_done_callback(
            functools.partial(self._finish, submit, execution.target.version)
        )

    def _finish(self, submit: dp.Submit, version: int, future: asyncio.Future[Arrays]) -> None:
        """Answer a finished request (its version's statistics already have it)."""
        self._calls.pop(submit.call, None)
        if future.cancelled():
            self._answer_error(submit.call, Cancelled("the request was cancelled"))
            return
        error = future.exception()
        if error is None:
            outputs = future.result()
            try:
                refs = [
                    frames.write_output(self._slab.memory, reserved, outputs[reserved.name])
                    for reserved in submit.outputs
                ]
            except KeyError as missing:
                error = _internal(f"version {version} returned no output {missing}")
        if error is not None:
            if not isinstance(error, DomainError):
                log.error("a batch failed", exc_info=error)
                error = _internal(f"internal error: {type(error).__name__}")
            self._answer_error(submit.call, error)
            return
        self.connection.send(
            dp.Frame(result=dp.Result(call=submit.call, version=version, outputs=refs))
        )

    def _answer_error(self, call: int, error: DomainError) -> None:
        self.connection.send(dp.Frame(result=dp.Result(call=call, error=frames.error_bytes(error))))

    def _control(self, control: dp.Control) -> None:
        try:
            method, arguments = frames.control_from_frame(control)
        except ValueError as error:
            self.connection.send(frames.control_error_to_frame(control.call, _internal(str(error))))
            return
        try:
            result = method(self._owner.controls, **arguments)
            reply = frames.control_answer_to_frame(control.call, control.method, result)
        except DomainError as error:
            reply = frames.control_error_to_frame(control.call, error)
        except Exception as error:  # noqa: BLE001 - a failed call must not drop the front end
            log.exception("a control call failed", extra={"method": control.method})
            internal = _internal(f"internal error: {type(error).__name__}")
            reply = frames.control_error_to_frame(control.call, internal)
        self.connection.send(reply)
