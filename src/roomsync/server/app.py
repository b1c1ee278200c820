"""The roomsync server: builds a node (settings, store, bus, auth, rooms, blobs) and
serves it on one listening socket.

:class:`RoomsyncServer` is what ``roomsync serve`` runs and what integration tests start
on a free port. It only wires things together and owns the sockets' lifecycle; the
node's state (connections, admission, revocations, readiness, drain) is
:class:`~.node.Node`'s, request handling is :mod:`.ws` (WebSocket) and :mod:`.http`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..auth.keyfile import signing_keys
from ..auth.tokens import TokenService
from ..blobs.base import BlobStoreError as BlobError
from ..blobs.filesystem import FilesystemBlobStore
from ..blobs.signing import UrlSigner
from ..bus.base import Bus
from ..bus.memory import MemoryBus
from ..bus.redis import RedisBus
from ..config import Policy, Settings
from ..core.codes import ErrorCode
from ..storage.base import Store
from ..storage.factory import build_store
from ..storage.webhooks import WebhookOutbox
from . import http
from .blobs import BlobService, build_blob_store, url_secret
from .cluster import Cluster
from .control import ControlRoute
from .hooks import AppHooks, load_app
from .listener import Listener
from .logs import event
from .metrics import Metrics
from .node import Connection, Node
from .probes import Probes
from .rooms import RoomRegistry
from .webhooks import WebhookDispatcher, WebhookTiming
from .ws import Endpoint, too_big_error

log = logging.getLogger("roomsync.server")


def wall_ms() -> int:
    return int(time.time() * 1000)


def scheme_of(ctx: ssl.SSLContext | None) -> str:
    return "https" if ctx is not None else "http"


def build_bus(settings: Settings, node: str) -> Bus:
    """The bus ``[bus]`` names: in-process (one node) or Redis (several)."""
    b = settings.bus
    if b.backend == "redis":
        return RedisBus(b.redis_url, node=node, prefix=b.prefix, outbox_max=b.outbox_max)
    return MemoryBus()


class RoomsyncServer:
    """One node, built from ``settings`` (``store`` and ``bus`` may be given instead)."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        bus: Bus | None = None,
        now_ms: Callable[[], int] = wall_ms,
        app: object | None = None,
    ) -> None:
        self.settings = settings
        self.now_ms = now_ms
        self.metrics = Metrics()
        a = settings.app
        if app is None and a.object:
            app = load_app(a.object, a.options)
        #: The app's hooks (``docs/hooks.md``): ``app`` given here, else ``[app] object``.
        self.hooks = AppHooks(
            app,
            self.metrics,
            budget_ms=a.budget_ms,
            event_budget_ms=a.event_budget_ms,
            max_queued=a.max_queued_events,
        )
        self.store = store if store is not None else build_store(settings)
        keys = signing_keys(settings)
        self.tokens = TokenService(keys)
        signer = UrlSigner(url_secret(keys[self.tokens.active_kid]))
        self.blobs = BlobService(build_blob_store(settings, signer), settings, self.metrics, signer)
        self.node_name = settings.server.node_name()
        self.bus: Bus = bus if bus is not None else build_bus(settings, self.node_name)
        self.rooms = RoomRegistry(
            self.store,
            self.metrics,
            policy=settings.policy,
            idle_unload_ms=settings.server.room_idle_unload_ms,
            now_ms=now_ms,
            commit_window_ms=settings.storage.commit_window_ms,
            bus=self.bus,
            node=self.node_name,
            hooks=self.hooks,
        )
        w = settings.webhooks
        #: Signed event webhooks (``policy.webhooks``), through the store's outbox.
        self.webhooks = WebhookDispatcher(
            self.store if isinstance(self.store, WebhookOutbox) else None,
            self.metrics,
            node=self.node_name,
            global_policy=lambda: self.node.policy,
            room_policy=self._room_policy,
            timing=WebhookTiming(
                timeout_ms=w.timeout_ms,
                retry_for_ms=w.retry_for_ms,
                max_backoff_ms=w.max_backoff_ms,
                debounce_ms=w.debounce_ms,
                lease_ms=w.lease_ms,
            ),
            now_ms=now_ms,
        )
        self.rooms.webhooks = self.webhooks
        self.node = Node(
            settings,
            metrics=self.metrics,
            store=self.store,
            bus=self.bus,
            rooms=self.rooms,
            blobs=self.blobs,
            tokens=self.tokens,
            now_ms=now_ms,
            hooks=self.hooks,
            webhooks=self.webhooks,
        )
        #: The other nodes (``server/cluster.py``): with a shared bus only.
        self.cluster = None if isinstance(self.bus, MemoryBus) else Cluster(self.node, settings.bus)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.probes = Probes(self.node)  # event-loop lag and readiness, on a timer
        self.control = ControlRoute(self.node)  # POST /v1/control/..., GET /v1/openapi.json
        self._stopped = False
        self.port: int | None = None
        self.app = self._build_app()

    # -- the node's state, read through here by tests and tools ---------------------------

    @property
    def connections(self) -> set[Connection]:
        return self.node.connections

    @property
    def draining(self) -> bool:
        return self.node.draining

    @property
    def started_ms(self) -> int:
        return self.node.started_ms

    def reap(self) -> None:
        self.node.reap()

    async def readiness(self) -> dict[str, Any]:
        return await self.node.readiness()

    async def _room_policy(self, room: str) -> Policy:
        """A room's effective policy: the loaded room's, else from its stored record."""
        host = self.rooms.hosts.get(room)
        if host is not None:
            return host.policy
        record = await self.store.get_room(room)
        policy = self.node.policy
        return policy.patched(record.policy) if record is not None and record.policy else policy

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

        async def one_request_per_connection(
            request: web.Request, response: web.StreamResponse
        ) -> None:
            # The listener picks the plane (picows or aiohttp) from a connection's first
            # request only; a client that reuses a kept-alive HTTP connection for its
            # WebSocket upgrade (aiohttp's pooled sessions do, the SDK among them, after a
            # blob PUT) would reach aiohttp and get 426. Closing after each HTTP answer
            # makes every upgrade arrive on a fresh connection.
            response.force_close()
            response.headers["Connection"] = "close"  # so the client knows before reusing

        app.on_response_prepare.append(one_request_per_connection)
        app.router.add_get("/ws/{room_id}", ws_route)
        http.add_routes(app, self.node)
        self.control.add_to(app)
        self.blobs.add_routes(app, self.now_ms)
        return app

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        s = self.settings.server
        self.node.events.attach()  # from here on, the node's log records are kept
        await self.store.open()
        await self.node.load_revocations()
        await self.node.load_policy()
        await self.node.ticks.start()
        await self.bus.open()
        self.hooks.start()
        self.webhooks.start()
        try:
            await self.blobs.store.open()
            self.node.blobs_open = True
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
            Endpoint(self.node),
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
            blob_store.set_public_base_url(f"{scheme_of(ctx)}://{host or s.host}:{self.port}")
        if self.cluster is not None:  # in the registry before the first peer is served
            bound = host or s.host
            reach = socket.gethostname() if bound in ("0.0.0.0", "::", "") else bound
            self.cluster.url = f"{scheme_of(ctx)}://{reach}:{self.port}"
            await self.cluster.start()
        self._reaper = asyncio.get_running_loop().create_task(self.node.heartbeat_loop())
        self.probes.start()
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

    async def drain(self) -> None:
        """Stop admitting and close every peer with 1012; HTTP keeps being served."""
        await self.node.drain()

    async def stop(self) -> None:
        """Graceful shutdown: no new connections, drain (1012, bounded by
        ``shutdown_grace_ms``), then close the store, the bus and the blob backend."""
        if self._stopped:
            return
        self._stopped = True
        if self._listener is not None:
            self._listener.close()  # no new connections
        deadline = time.monotonic() + self.settings.server.shutdown_grace_ms / 1000
        await self.node.ticks.stop()  # before the drain: no tick is sent to closing peers
        await self.node.drain(deadline=deadline)
        if self.cluster is not None:  # the others see this node gone at once
            await self.cluster.stop()
        self.rooms.quiet.stop()
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        await self.probes.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # The listening socket was closed at the start; Server.wait_closed() is not
        # awaited: from Python 3.12 it also waits for every connection, a slow one included.
        self._listener = None
        await self.hooks.stop(self.settings.app.event_budget_ms / 1000)
        await self.webhooks.stop()
        await self.store.close()
        await self.bus.close()
        if self.node.blobs_open:
            await self.blobs.store.close()
        event(log, "server.stopped")
        self.node.events.detach()
