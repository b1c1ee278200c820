"""This node among others (SPEC §8): the signals between nodes, the node registry, and
who owns a room's ticks and compaction.

Several nodes share one PostgreSQL store (the seq authority and the source of every
durable fact) and one Redis bus. Changes travel as bus events (``server/rooms.py``
delivers them in seq order); everything else a node must hear from another travels as a
:class:`~roomsync.bus.base.Signal`, sent after the change is stored:

==================  ==============================================================
``presence``        a room's presence diff on the sending node (its members only);
                    ``full``: its whole membership (a heartbeat's repair, round robin)
``presence-sync``   the sender just loaded the room: the others send their members
``revoke``          a token was revoked: close the sessions it opened (4003)
``policy``          the global policy patch changed: read it from the store
``record``          a room record was stored (lock, close, policy, tick, placement)
``evict``           a room's state was replaced or deleted: close its peers, reload
``blob``            a blob of the room was uploaded: ``blob-available`` to readers
``drain``           ``topology drain`` of another node: that node drains
``heads``           every heartbeat: the durable heads of the rooms whose head moved
                    here in the last :data:`HEADS_REPEAT` beats
==================  ==============================================================

``heads`` repairs the one loss no seq shows: the bus dropped a room's last events (a
publisher's outbox overflowed, a message died with a connection) and no later event
reveals the gap. A node behind a head it hears reads the store up to it
(:meth:`RoomHost.heard_head <roomsync.server.rooms.RoomHost.heard_head>`), so a lost
tail is delivered within about a heartbeat.

A lost signal loses nothing durable: a node reads policies, records and revocations
from the store when it loads them, presence entries of a node that stops beating leave.
Signals are only accepted from the bus, which must be private to the deployment (the
Redis of the nodes, not reachable by clients): a node trusts its peers.

Every ``bus.heartbeat_ms`` the node records its heartbeat in the store's node registry
(with its rooms, connections and whether it drains) and reads everyone's: nodes whose
heartbeat is older than ``bus.node_dead_ms`` are dead: their presence entries leave,
and every loaded room reads the store from its durable head, since a node killed
between a commit and its publish leaves a change no bus event announces. A room placed
on a dead node (``topology place``), or not placed at all, is owned by the live node
that rendezvous hashing picks for it, so exactly one live node runs each room's tick timer and the
choice moves only for the rooms of a node that came or went.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..bus.base import Signal
from ..config import BusSettings
from ..core.codes import CloseCode
from ..storage.base import NodeBeat, RoomRecord, StoreError
from .logs import event

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Cluster"]

log = logging.getLogger("roomsync.cluster")

#: Rooms a heartbeat lists at most (``topology get``); the count is always exact.
MAX_BEAT_ROOMS = 1000
#: Rooms whose whole presence membership a heartbeat re-announces (``presence`` with
#: ``full``), round robin over the loaded rooms: a lost presence signal is repaired
#: within (loaded rooms / PRESENCE_REPAIR) heartbeats.
PRESENCE_REPAIR = 100
#: A room whose head moved is in the ``heads`` signal of this many heartbeats (a signal
#: may be lost too); at most :data:`MAX_HEADS` rooms per signal, the most recent first.
HEADS_REPEAT = 3
MAX_HEADS = 5000


def _rank(node: str, room: str) -> bytes:
    return hashlib.blake2b(f"{node}\0{room}".encode(), digest_size=8).digest()


class Cluster:
    """The node's view of the others; :meth:`start` once the store and the bus are open."""

    def __init__(self, node: Node, settings: BusSettings, *, url: str = "") -> None:
        self.node = node
        self.settings = settings
        #: This node's base URL as clients reach it (``topology get``).
        self.url = url
        #: The registry as last read: every node, live or not, by name.
        self.beats: dict[str, NodeBeat] = {}
        #: The names of the live nodes (this one always among them).
        self.live: frozenset[str] = frozenset({node.name})
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Where the presence repair goes on, and the rooms it announced members of.
        self._repair_at = 0
        self._announced: set[str] = set()
        # The heads last seen per room, and the rooms that moved in the last beats.
        self._heads: dict[str, int] = {}
        self._moved: list[dict[str, int]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        node = self.node
        node.signal = self.send
        node.rooms.signal = self.send
        node.cluster = self
        node.bus.on_signal(self._heard)
        node.bus.on_resync(node.rooms.resync)
        node.ticks.owner_of = self.owner_of
        node.rooms.owns = self.owns
        for host in node.rooms.hosts.values():
            host.owns = self.owns
        await self.beat()  # in the registry before the first peer is served
        self._task = asyncio.get_running_loop().create_task(self._beat_loop())

    async def stop(self) -> None:
        """Stop beating and leave the registry (the others see this node gone at once)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for task in list(self._tasks):
            task.cancel()
        self.node.bus.on_signal(None)
        try:
            await self.node.store.forget_node(self.node.name)
        except (StoreError, OSError) as exc:  # it will simply stop beating
            event(log, "cluster.forget_failed", level=logging.WARNING, error=str(exc))

    # -- signals ---------------------------------------------------------------------------

    def send(self, kind: str, room: str | None, data: dict[str, Any]) -> None:
        """Tell the other nodes (see the module docstring for the kinds)."""
        self.node.bus.signal(Signal(kind, self.node.name, room, data))
        self.node.metrics.bus_signals.labels(kind, "sent").inc()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _heard(self, sig: Signal) -> None:
        """Act on another node's signal (the bus calls it on the event loop)."""
        self.node.metrics.bus_signals.labels(sig.kind, "received").inc()
        try:
            self._act(sig)
        except (KeyError, TypeError, ValueError) as exc:  # another version, or a bug there
            event(
                log,
                "cluster.bad_signal",
                level=logging.WARNING,
                kind=sig.kind,
                node=sig.node,
                error=repr(exc),
            )

    def _act(self, sig: Signal) -> None:
        node, data, kind = self.node, sig.data, sig.kind
        host = node.rooms.hosts.get(sig.room) if sig.room is not None else None
        if kind == "presence":
            if host is not None:
                host.remote_presence_diff(
                    sig.node,
                    list(data["changed"]),
                    list(data["left"]),
                    full=bool(data.get("full", False)),
                )
        elif kind == "presence-sync":
            if host is not None and len(host.presence):
                self.send("presence", host.room, {"changed": host.presence.snapshot(), "left": []})
        elif kind == "revoke":
            expires = data["expires_ms"]
            node.revocation_heard(
                data["kind"],
                str(data["value"]),
                expires_ms=None if expires is None else int(expires),
            )
        elif kind == "policy":
            self._spawn(self._reload_policy())
        elif kind == "record":
            node.rooms.record_heard(RoomRecord(**data["record"]))
        elif kind == "evict":
            if sig.room is not None:
                node.rooms.evict_heard(
                    sig.room,
                    CloseCode(int(data["code"])),
                    str(data["error"]),
                    str(data["message"]),
                    data.get("reason"),
                )
        elif kind == "blob":
            if host is not None:
                host.broadcast_message(
                    {"type": "blob-available", "hash": str(data["hash"]), "size": int(data["size"])}
                )
        elif kind == "heads":
            hosts = node.rooms.hosts
            for room, head in data["rooms"].items():
                target = hosts.get(room)
                if target is not None:
                    target.heard_head(int(head))
        elif kind == "drain":
            if data["target"] == node.name and not node.draining:
                event(log, "cluster.drain_asked", by=sig.node)
                self._spawn(node.drain())
        else:
            raise ValueError(f"unknown signal kind {kind!r}")

    async def _reload_policy(self) -> None:
        try:
            await self.node.load_policy()
        except (StoreError, OSError) as exc:
            event(log, "cluster.policy_reload_failed", level=logging.WARNING, error=str(exc))

    # -- registry and ownership -------------------------------------------------------------

    async def _beat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_ms / 1000)
            try:
                await self.beat()
            except (StoreError, OSError) as exc:  # the store is away: try next beat
                event(log, "cluster.beat_failed", level=logging.WARNING, error=str(exc))

    async def beat(self) -> None:
        """Record this node's heartbeat, read everyone's, and act on nodes that came or
        went (their presence entries leave; tick ownership moves)."""
        node = self.node
        rooms = sorted(node.rooms.hosts)
        info: dict[str, object] = {
            "url": self.url,
            "rooms": rooms[:MAX_BEAT_ROOMS],
            "rooms_loaded": len(rooms),
            "connections": len(node.connections),
            "draining": node.draining,
            "started_ms": node.started_ms,
        }
        now = node.now_ms()
        await node.store.beat(node.name, info, now_ms=now)
        self._send_heads()
        self._repair_presence()
        beats = {b.node: b for b in await node.store.list_nodes()}
        dead_ms = self.settings.node_dead_ms
        live = frozenset({n for n, b in beats.items() if now - b.beat_ms <= dead_ms} | {node.name})
        gone, came = self.live - live, live - self.live
        self.beats = beats
        node.metrics.nodes_live.set(len(live))
        if not gone and not came:
            return
        self.live = live
        for name in sorted(gone):
            event(log, "cluster.node_lost", level=logging.WARNING, node=name)
            for host in list(node.rooms.hosts.values()):
                host.drop_node_presence(name)
        if gone:
            # A node that died may have stored commits it never published (killed between
            # the commit and the bus): every loaded room reads the store from its head.
            for host in list(node.rooms.hosts.values()):
                host.resync()
        for name in sorted(came):
            if name != node.name:
                event(log, "cluster.node_joined", node=name)
        await node.ticks.reassess()

    def _send_heads(self) -> None:
        """The ``heads`` signal: durable heads of the rooms that moved lately."""
        seen = self._heads
        moved: dict[str, int] = {}
        for room, host in self.node.rooms.hosts.items():
            head = host.state.durable_head
            if seen.get(room) != head:
                seen[room] = moved[room] = head
        for room in [r for r in seen if r not in self.node.rooms.hosts]:
            del seen[room]
        self._moved = [moved, *self._moved[: HEADS_REPEAT - 1]]
        heads: dict[str, int] = {}
        for recent in reversed(self._moved):  # the newest value of a room wins
            heads.update(recent)
        if heads:
            if len(heads) > MAX_HEADS:
                heads = dict(list(heads.items())[-MAX_HEADS:])
            self.send("heads", None, {"rooms": heads})

    def _repair_presence(self) -> None:
        """Re-announce the whole membership of the next :data:`PRESENCE_REPAIR` rooms
        (those with members here, or that had some at their last announcement)."""
        hosts = self.node.rooms.hosts
        rooms = sorted(r for r, h in hosts.items() if len(h.presence) or r in self._announced)
        self._announced &= set(hosts)
        if not rooms:
            return
        start = self._repair_at % len(rooms)
        batch = (rooms[start:] + rooms[:start])[:PRESENCE_REPAIR]
        self._repair_at = start + len(batch)
        for room in batch:
            members = hosts[room].presence.snapshot()
            self.send("presence", room, {"changed": members, "left": [], "full": True})
            if members:
                self._announced.add(room)
            else:
                self._announced.discard(room)

    def alive(self, name: str) -> bool:
        return name in self.live

    def owns(self, record: RoomRecord) -> bool:
        """True when this node runs ``record``'s ticks and compaction."""
        return self.owner_of(record) == self.node.name

    def owner_of(self, record: RoomRecord) -> str:
        """The node that runs ``record``'s ticks and compaction: the one it is placed on
        while that node is live, else the live node rendezvous hashing picks."""
        if record.node is not None and record.node in self.live:
            return record.node
        return max(self.live, key=lambda n: _rank(n, record.room))

    def views(self) -> list[dict[str, Any]]:
        """Every node of the registry for ``topology get`` (this one from its own state)."""
        node = self.node
        now = node.now_ms()
        out: list[dict[str, Any]] = []
        for name in sorted(set(self.beats) | {node.name}):
            if name == node.name:
                out.append(
                    {
                        "node": name,
                        "rooms": sorted(node.rooms.hosts),
                        "connections": len(node.connections),
                        "draining": node.draining,
                        "alive": True,
                        "url": self.url,
                        "beat_age_ms": 0,
                    }
                )
                continue
            b = self.beats[name]
            info = b.info
            rooms = info.get("rooms")
            out.append(
                {
                    "node": name,
                    "rooms": list(rooms) if isinstance(rooms, list) else [],
                    "connections": int(info.get("connections", 0) or 0),  # type: ignore[call-overload]
                    "draining": bool(info.get("draining", False)),
                    "alive": name in self.live,
                    "url": str(info.get("url", "")),
                    "beat_age_ms": max(0, now - b.beat_ms),
                }
            )
        return out
