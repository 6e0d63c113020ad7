"""One end of a front end's Unix socket to the model owner, as an asyncio protocol.

Incoming bytes are cut into frames and handed to `on_frame` in order, without a task or
a coroutine per frame. An outgoing frame is written at once (the transport sends it
straight away when nothing waits before it): holding frames back to send several in one
system call was measured to cost more in latency, under light load, than it saves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from services.inference.dataplane.frames import FrameDecoder, encode
from tfmesh.inference.dataplane.v1 import dataplane_pb2 as dp

log = logging.getLogger(__name__)


def socket_address(name: str) -> str:
    """A Unix socket address: a path, or `@name` for a Linux abstract socket (no file)."""
    return "\0" + name[1:] if name.startswith("@") else name


class FrameConnection(asyncio.Protocol):
    def __init__(
        self,
        on_frame: Callable[[dp.Frame], None],
        on_lost: Callable[[Exception | None], None],
        initial: bytes = b"",
    ) -> None:
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._decoder = FrameDecoder()
        self._initial = initial
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._initial:
            self.data_received(self._initial)

    def data_received(self, data: bytes) -> None:
        try:
            for frame in self._decoder.feed(data):
                self._on_frame(frame)
        except Exception:  # noqa: BLE001 - a peer that breaks the format loses its connection
            log.exception("dropping a data-plane connection that sent a bad frame")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(exc)

    def send(self, frame: dp.Frame) -> None:
        if self.closed or self._transport is None:
            return
        self._transport.write(encode(frame))

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.close()
