"""Waking watch streams when the registry commits a change.

The core calls `notify` from whatever thread committed. A watch stream takes
`next_change()` before it reads the change table and then waits on it, so a change
committed while it was reading still wakes it; the poll interval bounds the wait, so
changes committed by another process sharing the database are seen too."""

from __future__ import annotations

import asyncio


class ChangeSignal:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Thread-safe: set the event every current waiter holds."""
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def next_change(self) -> asyncio.Event:
        """An event that is set at the next notification."""
        return self._event
