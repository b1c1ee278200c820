"""The one owner of a node's state: its connections, admission, revocations, liveness,
readiness and drain.

Everything that changes what this node admits goes through :class:`Node`: the handshake
(``ws.py``) asks it whether a connection may stay (:meth:`Node.admission_refusal`) and
whether a token is revoked; the control plane (issue 11) will revoke tokens and drain
through it; ``/healthz`` and ``/readyz`` read it. It knows connections only through the
small :class:`Connection` Protocol, so it imports neither the WebSocket shell nor the
HTTP app (no import cycles: ``app`` builds everything, ``ws`` and ``http`` depend on
``node``, never the other way round).

``drain()`` stops admitting, closes every peer with 1012 and waits (bounded by
``server.shutdown_grace_ms``) until their CLOSE frames are written; the node keeps
serving HTTP. ``RoomsyncServer.stop()`` drains and then closes the store and backends.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..auth.tokens import Claims, TokenService
from ..bus.base import Bus
from ..config import BusSettings, ConfigError, Policy, Settings
from ..config.policy import merge_patch
from ..core.codes import CloseCode, ErrorCode
from ..core.errors import Draining, Overload, RoomsyncError
from ..core.session import Session
from ..storage.base import NodeBeat, RevocationKind, RoomRecord, Store
from .blobs import BlobService
from .events import NodeEvents
from .hooks import AppHooks
from .logs import event
from .memory import release_free_memory
from .metrics import Metrics
from .outbox import Outbox
from .peer import Peer
from .rooms import RoomHost, RoomRegistry
from .ticks import TickScheduler
from .transport import PING_FRAME
from .webhooks import WebhookDispatcher

log = logging.getLogger("roomsync.node")

#: The store setting (:class:`~roomsync.storage.base.Settings`) holding the global
#: policy patch of ``policy set`` without a room.
POLICY_SETTING = "policy"


class ClusterView(Protocol):
    """What the control plane reads of the other nodes (``server/cluster.py`` is one)."""

    settings: BusSettings
    #: The node registry as last read, by node name.
    beats: dict[str, NodeBeat]

    def alive(self, name: str) -> bool: ...

    def send(self, kind: str, room: str | None, data: dict[str, Any]) -> None: ...

    def views(self) -> list[dict[str, Any]]: ...


class Connection(Protocol):
    """What the node needs of a connection (``ws._Connection`` is one)."""

    close_code: int | None
    out: Outbox
    peer: Peer | None
    session: Session

    def close(self, code: int, error: dict[str, Any] | None = None) -> None: ...

    def shed(self, exc: RoomsyncError) -> None: ...

    def drop(self, *, graceful: bool = True) -> None: ...

    def check_deadlines(self, now_ms: int) -> bool: ...


class Node:
    """This node: what it serves, who is connected, what it admits."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics,
        store: Store,
        bus: Bus,
        rooms: RoomRegistry,
        blobs: BlobService,
        tokens: TokenService,
        now_ms: Callable[[], int],
        hooks: AppHooks | None = None,
        webhooks: WebhookDispatcher | None = None,
    ) -> None:
        self.settings = settings
        #: The app's hooks (``docs/hooks.md``); without an app, every one is a no-op.
        self.hooks = hooks if hooks is not None else AppHooks(None, metrics)
        #: Signed event webhooks (``docs/hooks.md``); None: not delivered by this node.
        self.webhooks = webhooks
        self.name = settings.server.node_name()
        self.metrics = metrics
        self.store = store
        self.bus = bus
        self.rooms = rooms
        self.blobs = blobs
        self.tokens = tokens
        self.now_ms = now_ms
        self.started_ms = now_ms()
        self.connections: set[Connection] = set()
        # Connections still waiting for their hello, oldest first (dict keeps order):
        # the first to be shed when the node is at its connection cap.
        self._pre_hello: dict[Connection, None] = {}
        self.draining = False
        #: Sends a signal to the other nodes (kind, room, data): set by the cluster
        #: (``server/cluster.py``) when there are several; None with one node.
        self.signal: Callable[[str, str | None, dict[str, Any]], None] | None = None
        #: The other nodes, when there are several (``server/cluster.py``).
        self.cluster: ClusterView | None = None
        # The store's revocations (the source of truth), cached: kind -> value -> expires.
        self._revoked: dict[RevocationKind, dict[str, int | None]] = {"sub": {}, "jti": {}}
        self.blobs_open = False
        self._queued_bytes = 0  # all peers' outbound bytes, sampled each heartbeat
        #: Recent log records and ended sessions (``topology events``); attached at start.
        self.events = NodeEvents(settings.server.events_ring, now_ms, level=settings.log.level)
        #: The room tick timers and counters (SPEC §6 ``tick``); started with the server.
        self.ticks = TickScheduler(rooms, store, node=self.name, now_ms=now_ms)
        #: The stored global policy patch (``policy set`` without a room).
        self.policy_patch: dict[str, object] = {}
        self._policy_lock = asyncio.Lock()
        # Read at scrape time, so the write path pays nothing for it.
        metrics.outbound_bytes.set_function(self.outbound_queue_bytes)

    async def notify_room(
        self,
        room: str,
        event_type: str,
        data: dict[str, Any],
        *,
        record: RoomRecord | None = None,
    ) -> None:
        """Send webhook event ``event_type`` of ``room`` (a control-plane event) to the
        endpoints of the room's effective policy; ``record`` stands in for a room that
        is gone from the store (``room.deleted``)."""
        webhooks = self.webhooks
        if webhooks is None:
            return
        host = self.rooms.hosts.get(room)
        if host is not None:
            policy = host.policy
        else:
            if record is None:
                record = await self.store.get_room(room)
            policy = self.policy
            if record is not None and record.policy:
                policy = policy.patched(record.policy)
        if webhooks.wants(policy):
            webhooks.emit(event_type, room, data, policy)

    # -- connections and admission ---------------------------------------------------------

    def connection_opened(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.metrics.connections.set(len(self.connections))

    def connection_closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self._pre_hello.pop(conn, None)
        self.metrics.connections.set(len(self.connections))
        s = conn.session
        self.events.ended(
            room=s.room,
            peer=s.peer,
            session=s.session,
            actor=s.actor if conn.peer is not None else None,
            code=conn.close_code,
        )

    def awaiting_hello(self, conn: Connection) -> None:
        """``conn`` is admitted and has ``server.hello_timeout_ms`` to send its hello."""
        self._pre_hello[conn] = None

    def hello_done(self, conn: Connection) -> None:
        """``conn`` was welcomed or is gone: it no longer counts as waiting for a hello."""
        self._pre_hello.pop(conn, None)

    def retry_hint_ms(self) -> int:
        """A jittered retry hint so refused clients do not come back in lockstep."""
        return 500 + random.randint(0, 1000)

    def admission_refusal(self, newcomer: Connection) -> RoomsyncError | None:
        """Why ``newcomer`` may not stay (draining, connection cap, full queues), or None.

        At the connection cap the oldest connection that has not sent its hello is shed
        first, so connections that never speak cannot lock honest peers out.
        """
        s = self.settings.server
        if self.draining:
            return Draining("node is draining: reconnect, possibly to another node")
        if len(self.connections) > s.max_connections and not self._shed_pre_hello(newcomer):
            return Overload(
                f"server at its connection limit ({s.max_connections}): retry later",
                retry_after_ms=self.retry_hint_ms(),
            )
        if self._queued_bytes > s.max_queued_bytes:
            return Overload(
                "server outbound queues are full: retry later", retry_after_ms=self.retry_hint_ms()
            )
        return None

    def _shed_pre_hello(self, newcomer: Connection) -> bool:
        for conn in self._pre_hello:
            if conn is newcomer:
                continue
            del self._pre_hello[conn]
            self.metrics.shed.inc()
            conn.shed(
                Overload(
                    "connection shed: the node is at its connection limit and this one "
                    "sent no hello",
                    retry_after_ms=self.retry_hint_ms(),
                )
            )
            # It is gone from the cap now, whatever its socket still does.
            self.connections.discard(conn)
            return True
        return False

    # -- revocation ------------------------------------------------------------------------

    async def load_revocations(self) -> None:
        """Read every revocation from the store into the handshake's cache (at start)."""
        cursor: str | None = None
        while True:
            page, cursor = await self.store.list_revocations(limit=1000, cursor=cursor)
            for r in page:
                self._revoked[r.kind][r.value] = r.expires_ms
            if cursor is None:
                return

    def is_revoked(self, claims: Claims, now_ms: int) -> bool:
        """True when the token's ``sub`` or ``jti`` is revoked at ``now_ms``."""
        checks: tuple[tuple[RevocationKind, str | None], ...] = (
            ("sub", claims.sub),
            ("jti", claims.jti),
        )
        for kind, value in checks:
            if value is None:
                continue
            known = self._revoked[kind]
            if value in known:
                expires = known[value]
                if expires is None or now_ms < expires:
                    return True
        return False

    async def revoke(
        self, kind: RevocationKind, value: str, *, expires_ms: int | None = None
    ) -> tuple[bool, int]:
        """Revoke tokens by ``sub`` or ``jti`` (persisted first), refuse them at the
        handshake from now on, and close the live sessions they opened with 4003.
        Returns (whether it was not revoked before, sessions closed)."""
        now = self.now_ms()
        new = await self.store.add_revocation(kind, value, now_ms=now, expires_ms=expires_ms)
        closed = self.revocation_heard(kind, value, expires_ms=expires_ms, new=new)
        if self.signal is not None:  # the other nodes close their sessions of it too
            self.signal("revoke", None, {"kind": kind, "value": value, "expires_ms": expires_ms})
        return new, closed

    def revocation_heard(
        self, kind: RevocationKind, value: str, *, expires_ms: int | None, new: bool = False
    ) -> int:
        """A revocation was stored (here or, ``revoke`` signal, by another node): refuse
        its tokens at the handshake from now on and close the live sessions they opened
        with 4003. Returns the sessions closed."""
        known = self._revoked[kind]
        before = known.get(value, 0)
        # The store keeps the longer expiry of one that still applies (None: for good).
        if new or value not in known:
            known[value] = expires_ms
        elif before is not None:
            known[value] = None if expires_ms is None else max(before, expires_ms)
        closed = 0
        for conn in list(self.connections):
            peer = conn.peer
            if peer is None or conn.close_code is not None:
                continue
            if (kind == "sub" and peer.actor_bound == value) or (
                kind == "jti" and peer.token_jti == value
            ):
                conn.close(
                    int(CloseCode.FORBIDDEN),
                    {
                        "type": "error",
                        "code": str(ErrorCode.AUTH),
                        "message": "auth: token revoked",
                    },
                )
                closed += 1
        event(log, "node.revoked", kind=kind, value=value, closed=closed)
        return closed

    async def set_room(self, room: str, **changes: Any) -> RoomRecord:
        """Lock, unlock, close or reopen a room (``locked=``, ``closed=``): persisted,
        applied to the loaded room at once (see :meth:`RoomRegistry.update_record`)."""
        record = await self.rooms.update_record(room, **changes)
        event(log, "room.updated", room=room, **changes)
        return record

    def presence_snapshot(self, host: RoomHost) -> list[dict[str, Any]]:
        return host.presence_members()

    # -- liveness --------------------------------------------------------------------------

    async def heartbeat_loop(self) -> None:
        """Every heartbeat: ping and reap peers, free memory after unloads, sweep blob
        grants. Runs until cancelled."""
        interval = self.settings.server.heartbeat_ms / 1000
        unloads_seen = 0
        while True:
            await asyncio.sleep(interval)
            self.reap()
            unloads = self.rooms.unloads
            if unloads != unloads_seen:  # rooms were freed since the last beat
                unloads_seen = unloads
                release_free_memory()
            if self.blobs.grants:
                try:
                    await self.blobs.sweep(self.now_ms())
                except Exception as exc:  # a failing sweep must not stop the heartbeat
                    event(log, "blob.sweep_failed", level=logging.WARNING, error=str(exc))

    def outbound_queue_bytes(self) -> float:
        """Bytes queued to all peers now: socket buffers and frames held behind answers
        (``roomsync_outbound_queue_bytes``)."""
        return float(sum(c.out.queued_bytes() + c.out.held_bytes for c in self.connections))

    def reap(self) -> None:
        """Close the connections whose deadlines passed (liveness included: the core
        session decides, :meth:`~roomsync.core.session.Session.due`), ping the others and
        sample the bytes queued for them all (the ``max_queued_bytes`` admission check)."""
        now = self.now_ms()
        queued = 0
        for conn in list(self.connections):
            if not conn.check_deadlines(now):
                queued += max(0, conn.out.write(PING_FRAME))
        self._queued_bytes = queued

    # -- drain -----------------------------------------------------------------------------

    async def drain(self, *, deadline: float | None = None) -> None:
        """Admit no one from now on, close every peer with 1012 (``draining``) and wait,
        until ``deadline`` (``time.monotonic()``; default: now + shutdown grace), for
        their CLOSE frames to be written. Connections still open then are dropped."""
        self.draining = True
        if deadline is None:
            deadline = time.monotonic() + self.settings.server.shutdown_grace_ms / 1000
        event(log, "node.draining", node=self.name, connections=len(self.connections))
        for conn in list(self.connections):
            conn.close(
                int(CloseCode.RESTARTING),
                {
                    "type": "error",
                    "code": str(ErrorCode.DRAINING),
                    "message": "node is draining: reconnect, possibly to another node",
                },
            )
        # Everything is bounded by the deadline: a store that hangs delays the drain by
        # at most the grace (what it did not commit was not acknowledged either).
        try:
            await asyncio.wait_for(self.rooms.flush_all(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            event(log, "node.flush_timeout", level=logging.WARNING, node=self.name)
        # Peers answer our CLOSE as soon as they read it. Once every remaining connection
        # has its queue (the 1012 CLOSE last) written to the kernel, or after the grace,
        # the connections end; what was written still reaches the peer.
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if all(conn.out.queued_bytes() == 0 for conn in self.connections):
                break
        for conn in list(self.connections):
            conn.drop(graceful=conn.out.queued_bytes() == 0)

    # -- readiness -------------------------------------------------------------------------

    async def readiness(self) -> dict[str, Any]:
        """``/readyz``: each check's outcome; ``ok`` only when all pass and not draining."""
        checks: dict[str, Any] = {}
        ok = True
        backend = self.settings.storage.backend
        try:
            await self.store.check()
            checks["store"] = {"ok": True, "backend": backend}
        except Exception as exc:  # any failure makes us unready; the reason is reported
            ok = False
            checks["store"] = {"ok": False, "backend": backend, "error": str(exc)}
        try:
            if not self.blobs_open:  # it failed at start: try again, it may have recovered
                await self.blobs.store.open()
                self.blobs_open = True
            await self.blobs.store.check()
            checks["blobs"] = {"ok": True, "backend": self.blobs.store.name}
        except Exception as exc:  # reported, not raised: readyz says what is wrong
            ok = False
            checks["blobs"] = {
                "ok": False,
                "backend": self.blobs.store.name,
                "error": str(exc),
                "reason": getattr(exc, "reason", None),
            }
        try:
            await self.bus.check()
            checks["bus"] = {"ok": True, "backend": self.bus.name}
        except Exception as exc:  # reported, not raised: readyz says what is wrong
            ok = False
            checks["bus"] = {"ok": False, "backend": self.bus.name, "error": str(exc)}
        if self.draining:
            ok = False
            checks["draining"] = True
        self.metrics.ready.set(1 if ok else 0)
        return {"ok": ok, "checks": checks, "node": self.name}

    # -- policy (SPEC §6 ``policy``) -------------------------------------------------------

    @property
    def policy(self) -> Policy:
        """The global effective policy: the config file's ``[policy]`` with the stored
        global patch on top. New connections start from it, rooms add their overrides."""
        return self.rooms.policy

    async def load_policy(self) -> None:
        """Read the stored global patch and apply it (at start, before serving). A key
        the config's policy no longer accepts (an upgrade removed or narrowed it) is
        logged and left out, so a stored patch can never keep the node from starting."""
        stored = await self.store.get_setting(POLICY_SETTING) or {}
        base = self.settings.policy
        patch: dict[str, object] = {}
        for key, value in stored.items():
            try:
                base.patched({key: value})
            except ConfigError as exc:
                event(log, "policy.ignored", level=logging.WARNING, key=key, error=exc.message)
            else:
                patch[key] = value
        self.policy_patch = patch
        self.rooms.set_policy(base.patched(patch))

    async def set_global_policy(self, changes: dict[str, object]) -> Policy:
        """Merge ``changes`` into the global patch (a null value removes that key's
        override), validate it over the config's defaults (:class:`ConfigError` naming
        ``policy.<key>``; nothing stored), persist it, and apply it to every loaded room
        and live session at once. Returns the new global effective policy."""
        async with self._policy_lock:
            patch = merge_patch(self.policy_patch, changes)
            policy = self.settings.policy.patched(patch)
            await self.store.put_setting(POLICY_SETTING, patch)
            self.policy_patch = patch
            self.rooms.set_policy(policy)
        if self.signal is not None:  # the other nodes read it from the store
            self.signal("policy", None, {})
        event(log, "policy.updated", scope="global", keys=sorted(changes))
        return policy

    async def set_room_policy(self, room: str, changes: dict[str, object]) -> RoomRecord | None:
        """Merge ``changes`` into ``room``'s overrides (null removes one), validated over
        the global effective policy (:class:`ConfigError`; nothing stored), persisted in
        its record and applied to the loaded room at once. None when the room does not
        exist."""

        def change(current: RoomRecord) -> dict[str, Any]:
            patch = merge_patch(current.policy, changes)
            self.policy.patched(patch)
            return {"policy": patch}

        record = await self.rooms.change_record(room, change, create=False)
        if record is not None:
            event(log, "policy.updated", scope=room, keys=sorted(changes))
        return record
