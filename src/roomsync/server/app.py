"""The roomsync server: wires settings, store, auth, rooms and routes into one aiohttp app.

:class:`RoomsyncServer` is what ``roomsync serve`` runs and what integration tests start
on a free port. It owns the shared state of a node: connections, loaded rooms, metrics,
the draining flag, the heartbeat reaper. Request handling lives in :mod:`.ws` and
:mod:`.http`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..auth.keyfile import signing_keys
from ..auth.tokens import Claims, TokenService
from ..blobs.base import BlobStoreError as BlobError
from ..blobs.filesystem import FilesystemBlobStore
from ..blobs.signing import UrlSigner
from ..bus.base import Bus
from ..bus.memory import MemoryBus
from ..config import Settings
from ..core.codes import CloseCode, ErrorCode
from ..core.errors import Overload
from ..storage.base import Store
from ..storage.factory import build_store
from . import http
from .blobs import BlobService, build_blob_store, url_secret
from .listener import Listener
from .logs import event
from .memory import release_free_memory
from .metrics import Metrics
from .rooms import RoomHost, RoomRegistry
from .transport import PING_FRAME
from .ws import Endpoint, too_big_error

if TYPE_CHECKING:
    from .ws import _Connection

log = logging.getLogger("roomsync.server")


def wall_ms() -> int:
    return int(time.time() * 1000)


class RoomsyncServer:
    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        bus: Bus | None = None,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.settings = settings
        self.now_ms = now_ms
        self.metrics = Metrics()
        self.store = store if store is not None else build_store(settings)
        keys = signing_keys(settings)
        self.tokens = TokenService(keys)
        signer = UrlSigner(url_secret(keys[self.tokens.active_kid]))
        self.blobs = BlobService(build_blob_store(settings, signer), settings, self.metrics, signer)
        self.node_name = settings.server.node_name()
        self.bus: Bus = bus if bus is not None else MemoryBus()
        self.rooms = RoomRegistry(
            self.store,
            self.metrics,
            policy=settings.policy,
            idle_unload_ms=settings.server.room_idle_unload_ms,
            now_ms=now_ms,
            commit_window_ms=settings.storage.commit_window_ms,
            bus=self.bus,
            node=self.node_name,
        )
        self.connections: set[_Connection] = set()
        # Connections still waiting for their hello, oldest first (dict keeps order):
        # the first to be shed when the node is at its connection cap.
        self._pre_hello: dict[_Connection, None] = {}
        self.draining = False
        self.revoked_subs: set[str] = set()
        self.revoked_jtis: set[str] = set()
        self.started_ms = now_ms()
        self._queued_bytes = 0  # all peers' outbound bytes, sampled each heartbeat
        self._blobs_open = False
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.port: int | None = None
        self.app = self._build_app()

    # -- app -------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.server.max_frame_bytes)

        async def ws_route(request: web.Request) -> web.StreamResponse:
            # Upgrades never get here (listener.py hands them to picows).
            return web.json_response(
                {
                    "type": "error",
                    "code": str(ErrorCode.MALFORMED_ENVELOPE),
                    "message": "this is a WebSocket endpoint: connect with Upgrade: websocket",
                },
                status=426,
                headers={"Upgrade": "websocket", "Connection": "Upgrade"},
            )

        app.router.add_get("/ws/{room_id}", ws_route)
        http.add_routes(app, self)
        self.blobs.add_routes(app, self.now_ms)
        return app

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        s = self.settings.server
        await self.store.open()
        await self.bus.open()
        try:
            await self.blobs.store.open()
            self._blobs_open = True
        except BlobError as exc:
            # Serve sync anyway; /readyz reports the blob backend until it recovers.
            self.metrics.blob_ops.labels("open", "error").inc()
            event(
                log,
                "blob.backend_unavailable",
                level=logging.ERROR,
                reason=exc.reason,
                error=str(exc),
            )
        ctx = self.ssl_context()
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        http_server = self._runner.server
        assert http_server is not None
        listener = Listener(
            http_server,
            Endpoint(self),
            max_frame_bytes=s.max_frame_bytes,
            too_big_frame=too_big_error(s.max_frame_bytes),
        )
        self._listener = await asyncio.get_running_loop().create_server(
            listener,
            host or s.host,
            port if port is not None else s.port,
            ssl=ctx,
            backlog=1024,
            reuse_address=True,
        )
        sockets = self._listener.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        blob_store = self.blobs.store
        if isinstance(blob_store, FilesystemBlobStore) and not self.settings.blobs.public_url:
            scheme = "https" if ctx is not None else "http"
            blob_store.set_public_base_url(f"{scheme}://{host or s.host}:{self.port}")
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())
        event(
            log,
            "server.started",
            host=host or s.host,
            port=self.port,
            node=self.node_name,
            tls=ctx is not None,
            storage=self.settings.storage.backend,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings.server
        if not s.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(s.tls_cert, s.tls_key)
        return ctx

    async def stop(self) -> None:
        """Graceful shutdown: refuse new sessions, close peers with 1012, flush, close store."""
        if self.draining and self._runner is None:
            return
        self.draining = True
        if self._listener is not None:
            self._listener.close()  # no new connections
        event(log, "server.draining", connections=len(self.connections))
        for conn in list(self.connections):
            conn.close(
                int(CloseCode.RESTARTING),
                {
                    "type": "error",
                    "code": "draining",
                    "message": "server is shutting down: reconnect, possibly to another node",
                },
            )
        # Everything below is bounded by the grace: a store that hangs delays the stop by
        # at most shutdown_grace_ms (what it did not commit was not acknowledged either).
        deadline = time.monotonic() + self.settings.server.shutdown_grace_ms / 1000
        try:
            await asyncio.wait_for(self.rooms.flush_all(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            event(log, "server.flush_timeout", level=logging.WARNING)
        self.rooms.quiet.stop()
        # Peers answer our CLOSE as soon as they read it. Once every remaining connection
        # has its queue (the 1012 CLOSE last) written to the kernel, or after the grace,
        # the connections end; what was written still reaches the peer.
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if all(conn.out.queued_bytes() == 0 for conn in self.connections):
                break
        for conn in list(self.connections):
            conn.drop(graceful=conn.out.queued_bytes() == 0)
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # The listening socket was closed at the start; Server.wait_closed() is not
        # awaited: from Python 3.12 it also waits for every connection, a slow one included.
        self._listener = None
        await self.store.close()
        await self.bus.close()
        if self._blobs_open:
            await self.blobs.store.close()
        event(log, "server.stopped")

    # -- connections ------------------------------------------------------------------------

    def connection_opened(self, conn: _Connection) -> None:
        self.connections.add(conn)
        self.metrics.connections.set(len(self.connections))

    def connection_closed(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        self._pre_hello.pop(conn, None)
        self.metrics.connections.set(len(self.connections))

    def awaiting_hello(self, conn: _Connection) -> None:
        """``conn`` is admitted and has ``server.hello_timeout_ms`` to send its hello."""
        self._pre_hello[conn] = None

    def hello_done(self, conn: _Connection) -> None:
        """``conn`` was welcomed or is gone: it no longer counts as waiting for a hello."""
        self._pre_hello.pop(conn, None)

    def _shed_pre_hello(self, newcomer: _Connection) -> bool:
        """At the connection cap, close the oldest connection that has not sent its hello
        (never ``newcomer``); True when one was shed. Connections that never speak cannot
        lock honest peers out."""
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

    def retry_hint_ms(self) -> int:
        """A jittered retry hint so refused clients do not come back in lockstep."""
        return 500 + random.randint(0, 1000)

    def admission_refusal(self, newcomer: _Connection) -> Overload | None:
        s = self.settings.server
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

    async def _reap_loop(self) -> None:
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
                    await self.blobs.sweep(self.now_ms(), await self.store.blob_refs())
                except Exception as exc:  # a failing sweep must not stop the heartbeat
                    event(log, "blob.sweep_failed", level=logging.WARNING, error=str(exc))

    def reap(self) -> None:
        """Ping every peer; close those silent for three heartbeat intervals."""
        now = self.now_ms()
        limit = 3 * self.settings.server.heartbeat_ms
        queued = 0
        for conn in list(self.connections):
            if conn.close_code is not None:
                continue
            if now - conn.last_seen_ms > limit:
                conn.close(
                    int(CloseCode.INTERNAL),
                    {
                        "type": "error",
                        "code": "timeout",
                        "message": f"no frame from the peer for {limit} ms: closing",
                    },
                )
                continue
            queued += max(0, conn.out.write(PING_FRAME))
        self._queued_bytes = queued
        self.metrics.outbound_bytes.set(queued)

    # -- hooks used by ws ------------------------------------------------------------------

    def is_revoked(self, claims: Claims) -> bool:
        return (claims.sub is not None and claims.sub in self.revoked_subs) or (
            claims.jti is not None and claims.jti in self.revoked_jtis
        )

    def presence_snapshot(self, host: RoomHost) -> list[dict[str, Any]]:
        return host.presence.snapshot()

    # -- checks ------------------------------------------------------------------------------

    async def readiness(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        ok = True
        try:
            await self.store.check()
            checks["store"] = {"ok": True, "backend": self.settings.storage.backend}
        except Exception as exc:  # any failure makes us unready; the reason is reported
            ok = False
            checks["store"] = {
                "ok": False,
                "backend": self.settings.storage.backend,
                "error": str(exc),
            }
        try:
            if not self._blobs_open:  # it failed at start: try again, it may have recovered
                await self.blobs.store.open()
                self._blobs_open = True
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
        return {"ok": ok, "checks": checks, "node": self.node_name}
