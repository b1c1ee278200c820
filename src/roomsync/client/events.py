"""What the SDK reports to the app: callbacks and buffered async streams of client events.

Each kind of event (changes, refusals, superseded writes, presence, blobs, the final
close) has one :class:`Listeners`: ``on_<event>(callback)`` adds a callback, and the
``changes()``/``presence_events()`` streams buffer from their creation. A callback that
raises is logged and does not affect the connection. When the client stops, every
stream ends: cleanly after ``close()``, with the :class:`ConnectionClosed` otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

from ..core.entries import Change
from ..core.presence_view import PresenceEvent
from .errors import ConnectError, ConnectionClosed

log = logging.getLogger("roomsync.client")

_T = TypeVar("_T")


def call_safely(callback: Callable[[Any], object], arg: object) -> None:
    """Call an app callback; an exception is logged, never raised into the client."""
    try:
        callback(arg)
    except Exception:  # an app callback must not break the connection
        log.exception("roomsync client callback %r failed", callback)


def fresh(exc: ConnectionClosed) -> ConnectionClosed:
    """A fresh instance of ``exc`` to raise (each raise site gets its own traceback)."""
    if isinstance(exc, ConnectError):
        return ConnectError(
            exc.url,
            exc.cause,
            attempts=exc.attempts,
            close_code=exc.close_code,
            error=exc.error,
        )
    return ConnectionClosed(exc.close_code, exc.error, exc.message)


@dataclass(frozen=True, slots=True)
class _End:
    error: ConnectionClosed | None


class Listeners(Generic[_T]):
    """The callbacks and open streams of one kind of event."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[_T], object]] = []
        self._queues: list[asyncio.Queue[_T | _End]] = []
        self._end: _End | None = None

    def add(self, callback: Callable[[_T], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns a function that removes it."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def active(self) -> bool:
        """True when a callback or an open stream listens (else :meth:`emit` does nothing)."""
        return bool(self._callbacks or self._queues)

    def emit(self, event: _T) -> None:
        """Report ``event`` to every callback, then to every open stream."""
        for callback in list(self._callbacks):
            call_safely(callback, event)
        for queue in self._queues:
            queue.put_nowait(event)

    def end(self, error: ConnectionClosed | None) -> None:
        """The client stopped: end every stream, with ``error`` (None: ``close()``)."""
        self._end = _End(error)
        for queue in self._queues:
            queue.put_nowait(self._end)

    def _attach(self) -> asyncio.Queue[_T | _End]:
        queue: asyncio.Queue[_T | _End] = asyncio.Queue()
        self._queues.append(queue)
        if self._end is not None:
            queue.put_nowait(self._end)
        return queue

    def _detach(self, queue: asyncio.Queue[_T | _End]) -> None:
        if queue in self._queues:
            self._queues.remove(queue)


class _EventStream(Generic[_T]):
    """An async iterator over one kind of client event, buffered from its creation."""

    def __init__(self, listeners: Listeners[_T]) -> None:
        self._listeners = listeners
        self._queue = listeners._attach()
        self._open = True

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> _T:
        if not self._open:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, _End):
            self._detach()
            if item.error is not None:
                raise fresh(item.error)
            raise StopAsyncIteration
        return item

    def _detach(self) -> None:
        if self._open:
            self._open = False
            self._listeners._detach(self._queue)

    async def aclose(self) -> None:
        """Stop buffering; the iteration ends."""
        self._detach()


class ChangeStream(_EventStream[Change]):
    """``async for change in client.changes()``: buffers from its creation, so nothing is missed.

    Ends after :meth:`RoomClient.close`; raises :class:`ConnectionClosed` when the server
    stopped the client. ``await stream.aclose()`` stops buffering.
    """


class PresenceStream(_EventStream[PresenceEvent]):
    """``async for event in client.presence_events()``: the :class:`PresenceEvent` s that
    ``on_presence`` callbacks get, buffered from its creation. Ends like :class:`ChangeStream`.
    """
