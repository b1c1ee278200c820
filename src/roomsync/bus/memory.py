"""The in-process bus: one node, events handed to subscribers synchronously."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .base import Handler, RoomEvent, Signal, SignalHandler

log = logging.getLogger("roomsync.bus")


class _MemorySubscription:
    __slots__ = ("_bus", "handler", "room")

    def __init__(self, bus: MemoryBus, room: str, handler: Handler) -> None:
        self._bus = bus
        self.room = room
        self.handler = handler

    def close(self) -> None:
        self._bus._drop(self)


class MemoryBus:
    """Delivers each event to the subscribers of its room, in subscription order.

    ``published`` counts events, for metrics and tests. A handler that raises is logged
    and the others still get the event.
    """

    name = "memory"

    def __init__(self) -> None:
        self._subs: dict[str, list[_MemorySubscription]] = {}
        self.published = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._subs.clear()

    async def check(self) -> None:
        return None

    def publish(self, event: RoomEvent) -> None:
        self.published += 1
        subs = self._subs.get(event.room)
        if not subs:
            return
        for sub in list(subs) if len(subs) > 1 else subs:
            try:
                sub.handler(event)
            except Exception:
                log.exception("bus subscriber of room %s failed", event.room)

    def subscribe(self, room: str, handler: Handler) -> _MemorySubscription:
        sub = _MemorySubscription(self, room, handler)
        self._subs.setdefault(room, []).append(sub)
        return sub

    def signal(self, sig: Signal) -> None:
        return None  # one node: there is no other to tell

    def on_signal(self, handler: SignalHandler | None) -> None:
        return None

    def on_resync(self, handler: Callable[[str], None] | None) -> None:
        return None  # nothing is ever missed in-process

    def _drop(self, sub: _MemorySubscription) -> None:
        subs = self._subs.get(sub.room)
        if subs is not None and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[sub.room]
