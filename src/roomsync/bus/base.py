"""The seam between applying a change and delivering it (SPEC §8: cross-node fan-out).

A room host commits a batch, then publishes one :class:`RoomEvent` for it; delivery to
peers consumes events from the bus, never from the host directly. With one node the
:class:`~.memory.MemoryBus` hands each event to this process's subscribers at once; a
networked bus (Redis, later) plugs in behind the same :class:`Bus` Protocol and passes
the same contract suite (:mod:`roomsync.testing.bus_contract`).

Invariants every bus keeps:

- an event is published only once its changes are durable (the host's rule, see
  ``server/rooms.py``), so nothing a subscriber receives can be missing from the store;
- per room, subscribers receive events in publish order, each once; seqs inside an
  event ascend and follow the previous event of the room with no gap (a networked bus
  that loses one must let the receiver detect the gap by seq and refetch from the store);
- :meth:`Bus.publish` delivers to this node's subscribers before it returns, so the
  publisher can acknowledge the writers afterwards: a writer's ack never overtakes the
  broadcast of its own changes on this node;
- a subscriber that raises does not stop delivery to the others (the bus logs it);
- :class:`Signal` messages (presence, revocations, policy and room changes, drain) reach
  the other nodes in publish order with the events, at most once; they carry no state
  the store does not hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.entries import Change
from ..core.errors import InternalError


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """The changes of one room made durable by one commit, in seq order.

    ``authors[i]`` is the peer id that wrote ``changes[i]`` (None for a change the
    server made itself, e.g. a promotion), so delivery can leave a peer's own changes
    out of its broadcast. ``node`` names the node that committed them.
    """

    room: str
    changes: tuple[Change, ...]
    authors: tuple[str | None, ...]
    node: str

    @property
    def first_seq(self) -> int:
        return self.changes[0].seq or 0 if self.changes else 0

    @property
    def last_seq(self) -> int:
        return self.changes[-1].seq or 0 if self.changes else 0


#: What a subscriber is called with, once per event of its room.
Handler = Callable[[RoomEvent], None]


@dataclass(frozen=True, slots=True)
class Signal:
    """A control message between nodes (not a change): ``kind`` says what, ``node`` who
    sent it, ``room`` which room it is about (None: the whole deployment), ``data`` the
    JSON-able details. Kinds (``server/cluster.py`` sends and handles them):

    ``presence``       {changed, left}: this node's presence diff of ``room``
    ``presence-sync``  {}: a node just loaded ``room``; the others send their members
    ``revoke``         {kind, value, expires_ms}: close the sessions of a revoked token
    ``policy``         {}: the global policy patch changed; read it from the store
    ``record``         {record}: ``room``'s record as just stored (lock, close, policy,
                       placement, ticks)
    ``evict``          {code, error, message, reason}: ``room``'s state was replaced or
                       deleted; close its peers so, and reload it from the store
    ``blob``           {hash, size}: a blob of ``room`` was uploaded (``blob-available``)
    ``drain``          {target}: node ``target`` drains (``topology drain`` elsewhere)
    ``heads``          {rooms}: room -> durable head, for the rooms whose head moved
                       lately (a lost last event shows no gap otherwise)

    Signals carry no durable state: the store holds it; a lost signal is repaired by
    the store (policy, records, revocations are read at load), presence by its TTL.
    """

    kind: str
    node: str
    room: str | None
    data: dict[str, Any]


#: What a bus calls with every signal from another node.
SignalHandler = Callable[[Signal], None]


class Subscription(Protocol):
    """A live subscription; :meth:`close` ends it (idempotent)."""

    def close(self) -> None: ...


class Bus(Protocol):
    """Carries room events from the node that commits them to every node's subscribers."""

    name: str

    async def open(self) -> None:
        """Connect (a networked bus); the memory bus has nothing to do."""

    async def close(self) -> None:
        """End every subscription and release connections. Idempotent."""

    async def check(self) -> None:
        """readyz probe: raise :class:`BusError` when events cannot be carried."""

    def publish(self, event: RoomEvent) -> None:
        """Deliver ``event`` to this node's subscribers of its room (before returning),
        and forward it to other nodes (a networked bus, in publish order)."""

    def subscribe(self, room: str, handler: Handler) -> Subscription:
        """Call ``handler`` with every event of ``room`` published from now on."""

    def signal(self, sig: Signal) -> None:
        """Send ``sig`` to every *other* node (in publish order with this node's events;
        this node acts on it itself). Nothing to do with one node."""

    def on_signal(self, handler: SignalHandler | None) -> None:
        """Call ``handler`` with every signal another node sends (None: stop)."""

    def on_resync(self, handler: Callable[[str], None] | None) -> None:
        """Call ``handler(room)`` when other nodes' events of ``room`` may have been
        missed (its subscription just became active, at first or after a reconnect)."""


class BusError(InternalError):
    """The bus cannot carry events (connection lost, misconfigured); the message says why."""
