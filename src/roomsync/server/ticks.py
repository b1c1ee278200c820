"""Room tick counters and their timers (SPEC §6 ``tick``, SPEC §2 ``tick{n, at}``).

A room's tick state lives in its record (:class:`~roomsync.storage.base.RoomRecord`):
``tick_n`` (the counter), ``tick_interval_ms`` (0: no timer) and ``tick_at_ms`` (the
node's wall clock when ``n`` last changed, 0: never). Every change of ``n``, by the
control plane (``tick set``/``advance``) or by a timer, goes through
:meth:`RoomRegistry.change_record <roomsync.server.rooms.RoomRegistry.change_record>`
(persisted first, serialized with every other change of the record), then goes out as
``tick{n, at}`` to the room's reading peers when the room is loaded on this node.

Timers are eager: :class:`TickScheduler` keeps one task per ticking room, loaded or not,
so a room nobody is connected to still counts, one advance per interval, each persisted.
Only the node that owns a room's ticks runs its timer: alone, the record's ``node``
(``topology place``) when set, else this node; among several nodes (:attr:`owner_of`,
set by :class:`~roomsync.server.cluster.Cluster`), the placed node while it is live,
else the live node rendezvous hashing picks, re-read at every change of the live set
(:meth:`TickScheduler.reassess`). Each advance re-reads the record under the room's
record lock and checks ownership again, so two nodes that briefly both believe they own
a room write at most one advance each per interval. Intervals are not caught
up: while no node runs a room's timer (a restart, a slow store) its ``n`` stands still,
and after a restart the timer resumes one interval after the last advance (at once when
that is past). So ``n`` counts the advances that were made, never more than one per
interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..storage.base import RoomCatalog, RoomRecord, StoreError
from .logs import event
from .rooms import RoomRegistry

__all__ = ["MAX_INTERVAL_MS", "MAX_N", "MIN_INTERVAL_MS", "TickScheduler"]

log = logging.getLogger("roomsync.ticks")

#: The shortest timer interval (each advance is a store write) and the longest (a day).
MIN_INTERVAL_MS = 10
MAX_INTERVAL_MS = 86_400_000
#: The largest counter: the largest integer every JSON reader holds exactly (2^53 - 1).
MAX_N = 2**53 - 1


class _Timer:
    """One room's timer task; ``sleeping`` while it may be cancelled without cutting a
    write short."""

    __slots__ = ("interval_ms", "sleeping", "stopped", "task")

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self.sleeping = False
        self.stopped = False
        self.task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        self.stopped = True
        if self.sleeping and self.task is not None:
            self.task.cancel()


class TickScheduler:
    """This node's tick timers, and the one way tick counters change.

    Call :meth:`start` once the store is open (it resumes the timers the store lists)
    and :meth:`stop` before closing it (it waits for an advance being written).
    """

    def __init__(
        self,
        rooms: RoomRegistry,
        store: RoomCatalog,
        *,
        node: str,
        now_ms: Callable[[], int],
    ) -> None:
        self.rooms = rooms
        self.store = store
        self.node = node
        self.now_ms = now_ms
        #: Who owns a record's ticks when several nodes share the store (the cluster
        #: sets it); None: a single node.
        self.owner_of: Callable[[RoomRecord], str] | None = None
        self._timers: dict[str, _Timer] = {}
        self._started = False
        rooms.record_watchers.append(self._record_changed)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume the timer of every ticking room this node owns."""
        self._started = True
        for record in await self.store.ticking_rooms():
            self._sync(record, resume=True)
        if self._timers:
            event(log, "ticks.resumed", rooms=len(self._timers))

    async def stop(self) -> None:
        """Stop every timer; returns once none is writing any more."""
        self._started = False
        timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.stop()
        tasks = [t.task for t in timers if t.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reassess(self) -> None:
        """The live nodes changed: re-read the ticking rooms and start or stop timers as
        ownership now says (a node that left hands its rooms to the others)."""
        if not self._started:
            return
        records = await self.store.ticking_rooms()
        listed = {r.room for r in records}
        for record in records:
            self._sync(record, resume=True)
        for room in [r for r in self._timers if r not in listed]:
            self._timers.pop(room).stop()

    def owns(self, record: RoomRecord) -> bool:
        """True when this node runs ``record``'s timer: alone, when it is not placed or
        placed here; among several nodes, when :attr:`owner_of` names this node."""
        if self.owner_of is not None:
            return self.owner_of(record) == self.node
        return record.node is None or record.node == self.node

    def running(self, room: str) -> bool:
        """True when this node runs a timer for ``room``."""
        return room in self._timers

    # -- changes (the control plane's tick set / advance) ------------------------------------

    async def advance(self, room: str, by: int = 1) -> RoomRecord | None:
        """Add ``by`` (>= 1) to ``room``'s counter: persisted, then broadcast. None, and
        nothing changed, when the room does not exist or the counter would pass
        :data:`MAX_N`."""

        def changes(current: RoomRecord) -> Mapping[str, Any] | None:
            if current.tick_n + by > MAX_N:
                return None
            return {"tick_n": current.tick_n + by, "tick_at_ms": self.now_ms()}

        return self._broadcast(await self.rooms.change_record(room, changes, create=False))

    async def set(
        self, room: str, *, n: int | None = None, interval_ms: int | None = None
    ) -> RoomRecord | None:
        """Set ``room``'s counter to ``n`` (persisted, then broadcast, also when it was
        already ``n``) and/or its timer interval (0 stops it; a new interval starts its
        timer afresh, its first advance one interval from now). None when the room does
        not exist."""
        fields: dict[str, Any] = {}
        if n is not None:
            fields["tick_n"] = n
        if interval_ms is not None:
            fields["tick_interval_ms"] = interval_ms

        def changes(current: RoomRecord) -> Mapping[str, Any]:
            if n is not None:
                return {**fields, "tick_at_ms": self.now_ms()}
            return fields

        record = await self.rooms.change_record(room, changes, create=False)
        return self._broadcast(record) if n is not None else record

    def _broadcast(self, record: RoomRecord | None) -> RoomRecord | None:
        # Called right after the change returns, with no await in between: broadcasts go
        # out in the order the changes were stored.
        if record is not None:
            host = self.rooms.hosts.get(record.room)
            if host is not None:
                host.send_tick(record.tick_n, record.tick_at_ms)
        return record

    # -- timers ------------------------------------------------------------------------------

    def _record_changed(self, record: RoomRecord) -> None:
        if self._started:
            self._sync(record, resume=False)

    def _sync(self, record: RoomRecord, *, resume: bool) -> None:
        """Start, restart or stop ``record``'s timer as its interval and placement say."""
        room, interval = record.room, record.tick_interval_ms
        wanted = interval > 0 and self.owns(record)
        timer = self._timers.get(room)
        if timer is not None and (not wanted or timer.interval_ms != interval):
            timer.stop()
            del self._timers[room]
            timer = None
        if not wanted or timer is not None:
            return
        now = self.now_ms()
        # Resuming (at start): one interval after the last advance, at once when past.
        if resume and record.tick_at_ms:
            due = max(now, record.tick_at_ms + interval)
        else:
            due = now + interval
        timer = self._timers[room] = _Timer(interval)
        timer.task = asyncio.get_running_loop().create_task(self._run(room, timer, due))

    async def _run(self, room: str, timer: _Timer, due: int) -> None:
        interval = timer.interval_ms
        while not timer.stopped:
            timer.sleeping = True
            try:
                await asyncio.sleep(max(0, due - self.now_ms()) / 1000)
            except asyncio.CancelledError:
                return  # stopped while sleeping: nothing was being written
            finally:
                timer.sleeping = False
            if timer.stopped:
                return
            try:
                record = await self._tick(room, interval)
            except (StoreError, OSError) as exc:
                # The store failed: this advance is lost, the timer goes on.
                event(log, "ticks.store_failed", level=logging.WARNING, room=room, error=str(exc))
            else:
                if record is None:  # the room is gone, or its timer changed meanwhile
                    if self._timers.get(room) is timer:
                        del self._timers[room]
                    return
            now = self.now_ms()
            due += interval
            if due < now:  # behind by more than an interval: skip, never burst
                due = now + interval

    async def _tick(self, room: str, interval: int) -> RoomRecord | None:
        """One timer advance, if the record still asks this node for it."""

        def changes(current: RoomRecord) -> Mapping[str, Any] | None:
            if current.tick_interval_ms != interval or not self.owns(current):
                return None
            return {"tick_n": min(MAX_N, current.tick_n + 1), "tick_at_ms": self.now_ms()}

        return self._broadcast(await self.rooms.change_record(room, changes, create=False))
