"""A bus between in-process nodes that loses, delays, reorders and duplicates messages
on purpose, for property tests of cross-node delivery (SPEC §8).

::

    hub = FaultHub(random.Random(seed), drop=0.3, max_delay_ms=40, duplicate=0.1)
    a = RoomsyncServer(settings_a, store=SharedStore(store), bus=hub.bus("node-0"))
    b = RoomsyncServer(settings_b, store=SharedStore(store), bus=hub.bus("node-1"))
    ...
    hub.heal()   # from now on every message arrives, at once and in order

Each :class:`FaultyBus` keeps the :class:`~roomsync.bus.base.Bus` contract for its own
node (its subscribers get its events synchronously, before ``publish`` returns) and
breaks every promise a network could break for the others: a message to another node is
dropped with probability ``drop``, else handed over after a random delay of up to
``max_delay_ms`` (so later messages overtake earlier ones), and with probability
``duplicate`` handed over twice. Signals suffer the same. A new subscription reports
itself through ``on_resync`` soon after, as a networked bus does when a subscription
becomes active. Nothing here decides what is delivered to peers: the nodes must.

:class:`SharedStore` lets several in-process nodes use one store object (one
:class:`~roomsync.storage.memory.MemoryStore` standing for the PostgreSQL they would
share): opening and closing it is left to the test.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from ..bus.base import Handler, RoomEvent, Signal, SignalHandler

__all__ = ["FaultHub", "FaultyBus", "SharedStore"]

log = logging.getLogger("roomsync.testing.faultbus")


class FaultHub:
    """Connects the :class:`FaultyBus` of every node and decides each message's fate
    with ``rng`` (seeded: a failing example replays the same faults)."""

    def __init__(
        self,
        rng: random.Random,
        *,
        drop: float = 0.0,
        max_delay_ms: float = 0.0,
        duplicate: float = 0.0,
    ) -> None:
        self.rng = rng
        self.drop = drop
        self.max_delay_ms = max_delay_ms
        self.duplicate = duplicate
        self.buses: list[FaultyBus] = []
        #: What happened to messages between nodes: dropped, delivered, duplicated.
        self.counts = {"dropped": 0, "delivered": 0, "duplicated": 0}

    def bus(self, node: str) -> FaultyBus:
        """The bus of node ``node``."""
        bus = FaultyBus(self, node)
        self.buses.append(bus)
        return bus

    def heal(self) -> None:
        """No more faults: every later message arrives at once, in order, once."""
        self.drop = self.max_delay_ms = self.duplicate = 0.0

    def forward(self, sender: FaultyBus, deliver: Callable[[FaultyBus], None]) -> None:
        loop = asyncio.get_running_loop()
        for bus in self.buses:
            if bus is sender or not bus.opened:
                continue
            if self.rng.random() < self.drop:
                self.counts["dropped"] += 1
                continue
            copies = 2 if self.rng.random() < self.duplicate else 1
            self.counts["duplicated"] += copies - 1
            for _ in range(copies):
                delay = self.rng.random() * self.max_delay_ms / 1000
                if delay:
                    loop.call_later(delay, self._hand_over, bus, deliver)
                else:
                    loop.call_soon(self._hand_over, bus, deliver)

    def _hand_over(self, bus: FaultyBus, deliver: Callable[[FaultyBus], None]) -> None:
        if bus.opened:
            self.counts["delivered"] += 1
            deliver(bus)


class _Subscription:
    __slots__ = ("bus", "handler", "room")

    def __init__(self, bus: FaultyBus, room: str, handler: Handler) -> None:
        self.bus = bus
        self.room = room
        self.handler = handler

    def close(self) -> None:
        subs = self.bus.subs.get(self.room)
        if subs is not None and self in subs:
            subs.remove(self)
            if not subs:
                del self.bus.subs[self.room]


class FaultyBus:
    """One node's end of a :class:`FaultHub` (a :class:`~roomsync.bus.base.Bus`)."""

    name = "faulty"

    def __init__(self, hub: FaultHub, node: str) -> None:
        self.hub = hub
        self.node = node
        self.subs: dict[str, list[_Subscription]] = {}
        self.opened = False
        self._signal: SignalHandler | None = None
        self._resync: Callable[[str], None] | None = None

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.opened = False
        self.subs.clear()

    async def check(self) -> None:
        return None

    def publish(self, event: RoomEvent) -> None:
        self._deliver(event)  # this node's subscribers: at once, before returning
        self.hub.forward(self, lambda bus: bus._deliver(event))

    def _deliver(self, event: RoomEvent) -> None:
        for sub in list(self.subs.get(event.room, ())):
            try:
                sub.handler(event)
            except Exception:
                log.exception("subscriber of room %s failed", event.room)

    def subscribe(self, room: str, handler: Handler) -> _Subscription:
        sub = _Subscription(self, room, handler)
        self.subs.setdefault(room, []).append(sub)
        asyncio.get_running_loop().call_soon(self._resynced, room)
        return sub

    def _resynced(self, room: str) -> None:
        if self._resync is not None and room in self.subs:
            self._resync(room)

    def signal(self, sig: Signal) -> None:
        self.hub.forward(self, lambda bus: bus._heard(sig))

    def _heard(self, sig: Signal) -> None:
        if self._signal is not None:
            self._signal(sig)

    def on_signal(self, handler: SignalHandler | None) -> None:
        self._signal = handler

    def on_resync(self, handler: Callable[[str], None] | None) -> None:
        self._resync = handler


class SharedStore:
    """One store object used by several in-process nodes: ``open`` and ``close`` do
    nothing (the test opens and closes the inner store once), everything else is the
    inner store's."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
