"""The SDK: an asyncio shell over :class:`~roomsync.core.replica.Replica` (SPEC §2).

:func:`connect` returns a :class:`RoomClient` once the server welcomed it. The client
keeps a local replica of the room: reads are local and synchronous, writes apply locally
at once and are sent in the background, one pack per event-loop turn (one pack in flight
at a time; writes made meanwhile join the next one). The protocol decisions (what the
cursor is, what to send, what a refusal rolls back) live in the replica; this module
moves frames and runs timers.

One connection at a time is a *link*: ``hello`` → ``welcome`` → catch-up (or an MST
resync) → broadcasts, acks and answers, until the socket closes. The connection loop then
decides from the close code (SPEC §2 table) whether to reconnect, after how long, with
which token and which kind of sync:

=========================  ======================================================
close                      what the client does
=========================  ======================================================
1011, 1012, 4008, network  reconnect after a jittered backoff (at least the
                           ``retry_after_ms`` of an ``overload`` error), resume
                           from ``cursor``
4001                       full resync: MST reconcile (``catchup: false``) when the
                           ``reconcile`` cap was granted and the whole room is
                           subscribed, else a full catch-up without cursor
4002                       ask ``token_provider`` for a new token, reconnect (stop
                           when there is no provider)
4003, 4004, 1002           stop: :class:`ConnectionClosed` to waiters and
                           ``on_close`` callbacks
=========================  ======================================================

Until the first ``welcome`` the same loop runs under ``connect_timeout_s``: when no
session opened in time, :meth:`RoomClient.start` stops the client and raises
:class:`ConnectError` naming the URL and the cause of the last failed attempt. Every
retry is logged (logger ``roomsync.client``: a warning before the first welcome, info
after) with its number, the cause and the delay.

Acks (SPEC §2): the replica settles each pack; a write that lost LWW is reported to
``on_superseded`` callbacks and counted in ``stats.superseded``, and when the replica
lacks the winner the client fetches it with ``request{paths}``.

Server messages are dispatched by type to methods named ``_on_<type>`` (``-`` becomes
``_``); types without a method are ignored.

Presence (SPEC §5): the last state given to :meth:`RoomClient.set_presence` is sent once
per event-loop turn and again after every ``welcome``; while one is set, the heartbeat
makes sure the server hears from the client at least every ``min(heartbeat_ms,
presence_ttl_ms / 3)``. :meth:`RoomClient.clear_presence` sends ``presence{state: null}``,
which receivers treat as "no presence". The others' presence
(:class:`~.presence.PresenceView`) is emptied when a link drops and refilled from the
next welcome's snapshot.

Blobs (SPEC §4): :meth:`RoomClient.put_blob` and :meth:`RoomClient.get_blob` run the
blob flows; their answers are matched to the calls by hash, and an ``error`` (which has
no hash) to the oldest call of the message type in its ``ref``: the server answers the
frames of one connection in order.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import secrets
import socket
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import jwt

from ..core import messages as m
from ..core.codec import (
    PROTOCOL_VERSION,
    b64decode,
    decode_json,
    pack_data,
    parse_server,
    unpack_data,
)
from ..core.codes import ErrorCode
from ..core.entries import Change
from ..core.errors import CodecError, RoomsyncError
from ..core.mst import EMPTY_ROOT_HEX
from ..core.presence_view import PresenceEvent, PresenceInfo, PresenceView
from ..core.reconcile import DEFAULT_MAX_HASHES, ReconcileResult
from ..core.reconcile import reconcile as reconcile_flow
from ..core.replica import (
    Answer,
    AnswerKind,
    RefusedChange,
    Replica,
    Settled,
    SupersededChange,
    SyncMode,
)
from ..core.types import actor_allowed, session_actor, validate_room_id
from .backoff import Backoff
from .blobs import (
    BlobInfo,
    blob_hash,
    check_blob_hash,
    http_get,
    http_put,
    inline_fits,
    verify_blob,
)
from .errors import (
    ABNORMAL_CLOSURE,
    BlobError,
    BlobFetchFailed,
    BlobNotFound,
    BlobRejected,
    ConnectError,
    ConnectionClosed,
    RequestRefused,
)
from .stats import ConnectionStats, RetryWait

log = logging.getLogger("roomsync.client")

TokenProvider = Callable[[], Awaitable[str]]
ChangeCallback = Callable[[Change], object]
RefusedCallback = Callable[[RefusedChange], object]
SupersededCallback = Callable[[SupersededChange], object]
CloseCallback = Callable[[ConnectionClosed], object]
PresenceCallback = Callable[[PresenceEvent], object]
BlobCallback = Callable[[BlobInfo], object]

#: Close codes after which the client stops (SPEC §2: the client must change something).
TERMINAL_CLOSE_CODES = frozenset({1002, 4003, 4004})

_HANDSHAKE_TIMEOUT_S = 15.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
_CLOSE_TIMEOUT_S = 2.0
_FRAME_OVERHEAD = 64  # bytes of the pack envelope around its base64 data, with margin
_PATHS_PER_REQUEST = 1000
_PATH_BYTES_PER_REQUEST = 256 * 1024
_MAX_RECONCILE_PASSES = 8
_RATE_LIMIT_PAUSE_S = (0.25, 5.0)  # first and largest pause after a rate-limited pack
_MIN_KEEPALIVE_S = 0.05  # the presence keepalive never pings more often than this
#: Which frames (by type) a blob answer (by type) can answer.
_BLOB_ANSWERS: dict[str, tuple[str, ...]] = {
    "upload-url": ("request-upload",),
    "upload-denied": ("request-upload",),
    "blob-uploaded": ("blob-upload", "blob-uploaded"),
    "upload-rejected": ("blob-upload", "blob-uploaded"),
    "blob": ("blob-request",),
}
_BLOB_REQUESTS = frozenset(t for sent in _BLOB_ANSWERS.values() for t in sent)


def ws_url(url: str, room: str) -> str:
    """The WebSocket URL of ``room`` on the server at ``url``.

    ``http(s)://host[:port][/base]`` becomes ``ws(s)://host[:port][/base]/ws/{room}``;
    a ``ws(s)://`` URL is used as is when it already ends in ``/ws/{room}``.
    """
    room = validate_room_id(room)
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"server URL must be http(s):// or ws(s)://host[:port], got {url!r}")
    path = parts.path.rstrip("/")
    if parts.scheme in ("ws", "wss") and path.rsplit("/", 2)[-2:] == ["ws", room]:
        return urlunsplit((scheme, parts.netloc, path, parts.query, ""))
    if path.endswith("/ws"):
        path = path[: -len("/ws")]
    return urlunsplit((scheme, parts.netloc, f"{path}/ws/{room}", parts.query, ""))


class _LinkDown(Exception):
    """The link a request was sent on went down before the answer came."""


class _Pulse:
    """Wakes every waiter whenever the client's state changed; they re-check their condition."""

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    def fire(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)


@dataclass(eq=False)
class _BlobCall:
    """A blob frame sent on a link, waiting for its answer."""

    sent: str  # the type of the frame sent
    hash: str
    future: asyncio.Future[m.Message]


@dataclass(eq=False)
class _Link:
    """One WebSocket connection: its socket, what it is waiting for, its tasks."""

    ws: aiohttp.ClientWebSocketResponse
    mode: SyncMode
    welcome: m.Welcome | None = None
    synced: bool = False
    closing: bool = False
    last_error: dict[str, Any] | None = None
    outbox: deque[str] = field(default_factory=deque)
    outbox_ready: asyncio.Event = field(default_factory=asyncio.Event)
    answers: dict[Answer, asyncio.Future[None]] = field(default_factory=dict)
    roots: deque[asyncio.Future[m.MstRoot]] = field(default_factory=deque)
    nodes: deque[asyncio.Future[m.MstNodes]] = field(default_factory=deque)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    blob_calls: list[_BlobCall] = field(default_factory=list)
    #: Set when the keepalive interval may have shrunk (a presence state was set).
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: The server holds a (non-null) presence state of ours for this session.
    presence_sent: bool = False
    last_sent: float = 0.0
    last_recv: float = 0.0
    catchup_changes: int = 0
    max_bytes: int = 1 << 20
    max_changes: int = 10_000
    pause_until: float = 0.0
    rate_limited: int = 0

    def futures(self) -> list[asyncio.Future[Any]]:
        return [
            *self.answers.values(),
            *self.roots,
            *self.nodes,
            *(call.future for call in self.blob_calls),
        ]

    def abort(self) -> None:
        """Drop the connection without a closing handshake, as a network failure would."""
        self.closing = True
        sock = self.ws.get_extra_info("socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.outbox_ready.set()


@dataclass(eq=False)
class _End:
    error: ConnectionClosed | None


_T = TypeVar("_T")


class _EventStream(Generic[_T]):
    """An async iterator over one kind of client event, buffered from its creation."""

    def __init__(self, client: RoomClient, queues: list[asyncio.Queue[Any]]) -> None:
        self._queues = queues
        self._queue: asyncio.Queue[_T | _End] = asyncio.Queue()
        self._open = True
        queues.append(self._queue)
        if client._terminal is not None:
            self._queue.put_nowait(_End(None if client._closed_by_app else client._terminal))

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> _T:
        if not self._open:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, _End):
            self._detach()
            if item.error is not None:
                raise _copy(item.error)
            raise StopAsyncIteration
        return item

    def _detach(self) -> None:
        if self._open:
            self._open = False
            if self._queue in self._queues:
                self._queues.remove(self._queue)

    async def aclose(self) -> None:
        self._detach()


class ChangeStream(_EventStream[Change]):
    """``async for change in client.changes()``: buffers from its creation, so nothing is missed.

    Ends after :meth:`RoomClient.close`; raises :class:`ConnectionClosed` when the server
    stopped the client. ``await stream.aclose()`` stops buffering.
    """

    def __init__(self, client: RoomClient) -> None:
        super().__init__(client, client._streams)


class PresenceStream(_EventStream[PresenceEvent]):
    """``async for event in client.presence_events()``: the :class:`PresenceEvent` s that
    ``on_presence`` callbacks get, buffered from its creation. Ends like :class:`ChangeStream`.
    """

    def __init__(self, client: RoomClient) -> None:
        super().__init__(client, client._presence_streams)


def _copy(exc: ConnectionClosed) -> ConnectionClosed:
    """A fresh instance to raise (each raise site gets its own traceback)."""
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
class _Ended:
    close_code: int
    error: dict[str, Any] | None
    welcomed: bool
    cause: str


class RoomClient:
    """A live, local replica of one room. Create it with :func:`connect`.

    Reads (:meth:`get`, :meth:`items`, :attr:`root`) are local. Writes (:meth:`set`,
    :meth:`delete`) apply locally at once, are reported to change listeners, and are sent
    in the background; :meth:`flush` waits until the server settled all of them. Writes
    made while disconnected wait in the offline queue and are sent after reconnecting.
    Use it from one event loop; it is not thread-safe.
    """

    def __init__(
        self,
        url: str,
        room: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        actor: str | None = None,
        subscribe: Sequence[str] = ("/",),
        caps: Sequence[str] | None = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        ssl: ssl_module.SSLContext | None = None,
        connect_timeout_s: float | None = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        if connect_timeout_s is not None and not connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s must be > 0 or None, got {connect_timeout_s!r}")
        self.room = validate_room_id(room)
        self.url = ws_url(url, room)
        self._rng = rng if rng is not None else random.Random()
        # With a token, the server accepts writes only as its ``sub`` or ``sub#<suffix>``.
        self.actor = session_actor(_token_sub(token), actor, _new_actor(rng))
        self._replica = Replica(self.actor, subscribe=subscribe)
        self._token = token
        self._token_provider = token_provider
        self._caps = tuple(caps) if caps is not None else None
        self._reconnect = reconnect
        self._backoff = backoff if backoff is not None else Backoff()
        self._ssl = ssl
        self._connect_timeout_s = connect_timeout_s
        #: How the last failed connection attempt ended (for :class:`ConnectError`).
        self._last_failure: _Ended | None = None
        #: What the current attempt is waiting for: "token", "connect" or "welcome".
        self._phase = "token"
        #: Set while a session is open (welcomed); cleared while disconnected.
        self.connected = asyncio.Event()
        #: The last ``welcome`` received (session id, peer, caps, head, limits, ...).
        self.session_info: m.Welcome | None = None
        self.stats = ConnectionStats()
        #: Every write the server (or the client, before sending) refused, in order.
        self.refused: list[RefusedChange] = []
        self._pulse = _Pulse()
        self._terminal: ConnectionClosed | None = None
        self._closed_by_app = False
        self._closing = False
        self._link: _Link | None = None
        self._http: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._last_caps: tuple[str, ...] = ()
        self._flush_scheduled = False
        self._subscribe_failure: RequestRefused | None = None
        self._streams: list[asyncio.Queue[Any]] = []
        self._change_callbacks: list[ChangeCallback] = []
        self._refused_callbacks: list[RefusedCallback] = []
        self._superseded_callbacks: list[SupersededCallback] = []
        self._close_callbacks: list[CloseCallback] = []
        self._presence = PresenceView()
        self._presence_state: Any = None  # our state (a private copy); None: no presence
        self._presence_dirty = False
        self._presence_scheduled = False
        self._presence_streams: list[asyncio.Queue[Any]] = []
        self._presence_callbacks: list[PresenceCallback] = []
        self._blob_callbacks: list[BlobCallback] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection loop and wait for the first ``welcome``.

        Retries (logged, with backoff) until ``connect_timeout_s`` has passed, then stops
        the client and raises :class:`ConnectError` naming the URL and the cause of the
        last failure; with ``reconnect=False`` it raises that at the first failure.
        Raises :class:`ConnectionClosed` when the server refuses for good (4003, 4004,
        1002). :func:`connect` calls it.
        """
        if self._runner is not None:
            raise RuntimeError("RoomClient.start() was already called")
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._runner = asyncio.get_running_loop().create_task(self._run())
        try:
            await asyncio.wait_for(
                self._wait_for(lambda: self.stats.welcomes > 0), self._connect_timeout_s
            )
        except TimeoutError:
            failure = self._last_failure
            error = ConnectError(
                self.url,
                self._timeout_cause(),
                attempts=max(1, self.stats.attempts),
                close_code=ABNORMAL_CLOSURE if failure is None else failure.close_code,
                error=None if failure is None else failure.error,
            )
            self._stop(error)
            await self.close()
            raise _copy(error) from None
        except BaseException:
            await self.close()
            raise

    def _timeout_cause(self) -> str:
        if self._last_failure is not None:
            return self._last_failure.cause
        limit = f"{self._connect_timeout_s:g} s"
        if self._phase == "token":
            return f"token_provider returned no token within {limit}"
        if self._phase == "welcome":
            return f"the server accepted the WebSocket but sent no welcome within {limit}"
        return f"no answer within {limit}"

    async def close(self) -> None:
        """Close the connection (1000) and stop. Unsent writes stay unsent: :meth:`flush` first."""
        if self._closing:
            return
        self._closing = True
        link = self._link
        if link is not None:
            link.closing = True
            try:
                await asyncio.wait_for(link.ws.close(), _CLOSE_TIMEOUT_S)
            except (TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError):
                link.abort()
        runner = self._runner
        if runner is not None and not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        self._stop(ConnectionClosed(1000, None, "closed by the application"), by_app=True)
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> RoomClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def disconnect(self) -> None:
        """Drop the current connection abruptly, as a network failure would.

        For network-change handlers and tests: the client reconnects (when
        ``reconnect`` is on) after its backoff and resumes from its cursor.
        """
        link = self._link
        if link is not None:
            link.abort()

    # -- state ---------------------------------------------------------------------------------

    @property
    def root(self) -> str:
        """The canonical hash (SPEC §1) of the local replica's live entries."""
        return self._replica.root_hex

    @property
    def cursor(self) -> int:
        """The seq up to which this replica has every change of its subscription."""
        return self._replica.cursor

    @property
    def caps(self) -> tuple[str, ...]:
        """Capabilities granted by the last ``welcome``."""
        return self._last_caps

    @property
    def pending(self) -> int:
        """Local writes not yet settled by the server (queued or in flight)."""
        return len(self._replica.unsent) + sum(len(p) for p in self._replica.inflight)

    def get(self, path: str) -> bytes | None:
        """The value at ``path``, or None when it is absent or deleted."""
        change = self._replica.get(path)
        return None if change is None else change.value

    def get_json(self, path: str, default: Any = None) -> Any:
        """The value at ``path`` decoded as JSON, or ``default`` when absent."""
        value = self.get(path)
        return default if value is None else json.loads(value)

    def items(self, prefix: str = "/") -> Iterator[tuple[str, bytes]]:
        """``(path, value)`` of the live entries at or below ``prefix``, sorted by path."""
        for change in self._replica.items(prefix):
            assert change.value is not None
            yield change.path, change.value

    def entry(self, path: str) -> Change | None:
        """The full entry at ``path`` (clock, actor, seq; tombstones included), or None."""
        return self._replica.entries.get(path)

    # -- writes --------------------------------------------------------------------------------

    def set(self, path: str, value: bytes) -> Change:
        """Write ``value`` at ``path`` (applied locally now, sent with this turn's pack)."""
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"value must be bytes, not {type(value).__name__}: use set_json")
        return self._write(path, bytes(value))

    def set_json(self, path: str, obj: Any) -> Change:
        """Write ``obj`` encoded as compact UTF-8 JSON."""
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return self._write(path, data)

    def delete(self, path: str) -> Change:
        """Delete ``path`` (a tombstone that wins LWW like any write)."""
        return self._write(path, None)

    def _write(self, path: str, value: bytes | None) -> Change:
        if self._terminal is not None:
            raise _copy(self._terminal)
        change = self._replica.write(path, value, int(time.time() * 1000))
        self._emit([change])
        self._schedule_flush()
        return change

    # -- waiting -------------------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every local write so far is settled (acknowledged or refused).

        Raises TimeoutError after ``timeout`` seconds, :class:`ConnectionClosed` if the
        client stops first. Refusals do not raise: see :meth:`on_refused`.
        """
        await asyncio.wait_for(self._wait_for(lambda: self._replica.idle), timeout)

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait until the current session finished its catch-up (or resync)."""
        await asyncio.wait_for(self._wait_for(self._is_synced), timeout)

    def _is_synced(self) -> bool:
        link = self._link
        return link is not None and link.synced and not link.closing

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        while True:
            if predicate():
                return
            if self._terminal is not None:
                raise _copy(self._terminal)
            await self._pulse.wait()

    async def _ready_link(self) -> _Link:
        await self._wait_for(self._is_synced)
        link = self._link
        assert link is not None
        return link

    # -- events --------------------------------------------------------------------------------

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(change)`` for every change that became visible, local or remote.

        A deleted path arrives as a tombstone (``change.value is None``); a refused write
        rolled back arrives as the entry it restored (or a tombstone when there was none).
        Returns a function that removes the callback.
        """
        self._change_callbacks.append(callback)
        return lambda: _discard(self._change_callbacks, callback)

    def on_refused(self, callback: RefusedCallback) -> Callable[[], None]:
        """Call ``callback(refused)`` for every refused write (it was rolled back locally)."""
        self._refused_callbacks.append(callback)
        return lambda: _discard(self._refused_callbacks, callback)

    def on_superseded(self, callback: SupersededCallback) -> Callable[[], None]:
        """Call ``callback(superseded)`` for every acknowledged write that lost LWW.

        The server kept a newer entry (a :class:`~roomsync.core.replica.SupersededChange`
        carries the write and the winner's ``seq``); the write was rolled back locally
        and the replica holds, or fetches, the server's entry. Returns a function that
        removes the callback.
        """
        self._superseded_callbacks.append(callback)
        return lambda: _discard(self._superseded_callbacks, callback)

    def on_close(self, callback: CloseCallback) -> Callable[[], None]:
        """Call ``callback(error)`` once when the client stops for good (also after close())."""
        self._close_callbacks.append(callback)
        return lambda: _discard(self._close_callbacks, callback)

    def changes(self) -> ChangeStream:
        """``async for change in client.changes()``: the same changes as :meth:`on_change`.

        Ends after :meth:`close`; raises :class:`ConnectionClosed` when the server stopped
        the client. Changes are buffered from the call on.
        """
        return ChangeStream(self)

    def _emit(self, changes: Sequence[Change]) -> None:
        for change in changes:
            for callback in list(self._change_callbacks):
                _call(callback, change)
            for queue in self._streams:
                queue.put_nowait(change)

    def _settled(self, settled: Settled) -> None:
        for refusal in settled.refused:
            log.warning(
                "write refused: %s %s: %s", refusal.change.path, refusal.code, refusal.message
            )
            self.refused.append(refusal)
            for callback in list(self._refused_callbacks):
                _call(callback, refusal)
        for lost in settled.superseded:
            log.info(
                "write superseded: %s lost LWW to the entry at seq %d (a newer write)",
                lost.change.path,
                lost.seq,
            )
            self.stats.superseded += 1
            for on_lost in list(self._superseded_callbacks):
                _call(on_lost, lost)
        self._emit(settled.reverted)

    # -- requests ------------------------------------------------------------------------------

    async def subscribe(self, paths: Sequence[str]) -> None:
        """Replace the subscription prefixes; returns once the server sent what they add.

        Local entries outside the new prefixes stay as they are but are no longer updated.
        """
        self._replica.set_prefixes(paths)
        target = self._replica.prefixes
        failure = self._subscribe_failure
        link = self._link
        if link is not None and link.synced and not link.closing:
            self._maybe_subscribe(link)

        def done() -> bool:
            if self._subscribe_failure is not failure and self._subscribe_failure is not None:
                raise self._subscribe_failure
            return self._replica.synced_prefixes == target or self._replica.prefixes != target

        await self._wait_for(done)

    async def server_root(self) -> str:
        """The server's canonical hash of the room (``mst-root``; needs cap ``reconcile``)."""
        while True:
            link = await self._ready_link()
            try:
                root = (await self._mst_root(link)).root
            except _LinkDown:
                continue
            if root is None:
                raise RequestRefused({"code": "internal", "message": "mst-root without root"})
            return root

    async def reconcile(self) -> ReconcileResult:
        """Compare the local MST with the server's and fetch what differs (SPEC §1).

        ``mst-root``/``mst-get`` rounds find the differing paths, ``request{paths}`` fetches
        the server's entries for them (tombstones included); the server is the authority
        for entries it confirmed and unacknowledged local writes are sent as usual. Needs
        cap ``reconcile``; retried on a new connection if the current one drops.
        """
        while True:
            link = await self._ready_link()
            try:
                return await self._reconcile(link)
            except _LinkDown:
                continue

    def _send(self, link: _Link, obj: dict[str, Any]) -> None:
        """Queue a frame on ``link``; frames leave in the order they were queued."""
        if link.closing:
            raise _LinkDown()
        link.outbox.append(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
        link.outbox_ready.set()

    async def _mst_root(self, link: _Link) -> m.MstRoot:
        future: asyncio.Future[m.MstRoot] = asyncio.get_running_loop().create_future()
        self._send(link, m.MstRoot().to_wire())
        link.roots.append(future)
        return await future

    async def _mst_get(self, link: _Link, hashes: Sequence[bytes]) -> m.MstNodes:
        future: asyncio.Future[m.MstNodes] = asyncio.get_running_loop().create_future()
        self._send(link, m.MstGet(hashes=tuple(h.hex() for h in hashes)).to_wire())
        link.nodes.append(future)
        return await future

    async def _request_paths(self, link: _Link, paths: Sequence[str]) -> None:
        """``request{paths}`` in chunks; returns when every answer's ``done`` arrived."""
        futures: list[asyncio.Future[None]] = []
        for chunk in _path_chunks(paths):
            self._send(link, m.Request(paths=tuple(chunk)).to_wire())
            answer = self._replica.expect_paths(chunk)
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            link.answers[answer] = future
            futures.append(future)
        for future in futures:
            await future

    async def _reconcile(self, link: _Link) -> ReconcileResult:
        self.stats.reconciles += 1
        result: ReconcileResult | None = None
        for _ in range(_MAX_RECONCILE_PASSES):
            root = await self._mst_root(link)
            if root.root is None:
                raise CodecError("bad postcard: mst-root without root")
            remote = None if root.root == EMPTY_ROOT_HEX else _hex(root.root)
            flow = reconcile_flow(self._replica.tree, remote, max_hashes=DEFAULT_MAX_HASHES)
            try:
                fetch = next(flow)
                while True:
                    answer = await self._mst_get(link, fetch.hashes)
                    fetch = flow.send(
                        {
                            _hex(node["hash"]): b64decode(node["data"], "mst node")
                            for node in answer.nodes
                        }
                    )
            except StopIteration as stop:
                result = stop.value
            assert result is not None
            paths = sorted(set(result.pull) | set(result.push))
            if paths:
                await self._request_paths(link, paths)
            if result.complete:
                break
        assert result is not None
        return result

    def _maybe_subscribe(self, link: _Link) -> None:
        if link.closing:
            return
        answer = self._replica.expect_subscribe()
        if answer is None:
            return
        link.answers[answer] = asyncio.get_running_loop().create_future()
        link.answers[answer].add_done_callback(_ignore_result)
        self._send(link, m.Subscribe(paths=answer.scope_in).to_wire())

    # -- presence (SPEC §5) ----------------------------------------------------------------------

    @property
    def presence(self) -> dict[str, PresenceInfo]:
        """The other peers' presence, ``peer id -> PresenceInfo(peer, actor, state)``.

        The welcome's snapshot plus every update since; empty while disconnected. Our own
        peer is never in it. A copy: changing it changes nothing.
        """
        return dict(self._presence.peers)

    @property
    def local_presence(self) -> Any:
        """Our presence state as last given to :meth:`set_presence` (None: no presence)."""
        return self._presence_state

    def set_presence(self, state: Any) -> None:
        """Publish ``state`` (anything JSON-able) as this client's presence.

        Sent after this event-loop turn (several calls in one turn send only the last
        state), re-sent after every reconnect, and kept alive by the heartbeat until
        :meth:`clear_presence`. ``set_presence(None)`` is :meth:`clear_presence`. Raises
        TypeError/ValueError for a state that is not JSON, ValueError for one larger than
        the welcome's ``limits.presence_max_bytes``, and :class:`RequestRefused`
        (``forbidden``) when the session was not granted the ``presence`` capability.
        """
        if self._terminal is not None:
            raise _copy(self._terminal)
        if state is None:
            self.clear_presence()
            return
        text = json.dumps(state, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        info = self.session_info
        if info is not None:
            limit = _limit(info.limits, "presence_max_bytes", 0)
            size = len(text.encode("utf-8"))
            if limit and size > limit:
                raise ValueError(
                    f"presence state of {size} bytes exceeds presence_max_bytes {limit}"
                )
            if "presence" not in self._last_caps:
                raise RequestRefused(
                    {
                        "code": str(ErrorCode.FORBIDDEN),
                        "message": "this session has no 'presence' capability",
                    }
                )
        self._presence_state = json.loads(text)
        self._mark_presence()

    def clear_presence(self) -> None:
        """Stop publishing a presence state: the others see this peer leave.

        The protocol has no client leave message: the client sends ``presence{state:
        null}``, which every SDK treats as "no presence", stops the presence heartbeat
        and does not re-send anything after reconnecting.
        """
        self._presence_state = None
        self._mark_presence()

    def on_presence(self, callback: PresenceCallback) -> Callable[[], None]:
        """Call ``callback(event)`` with each :class:`PresenceEvent` (changed peers, left peers).

        After a disconnect every known peer is reported as left; the next welcome's
        snapshot reports them again as changed. Returns a function that removes it.
        """
        self._presence_callbacks.append(callback)
        return lambda: _discard(self._presence_callbacks, callback)

    def presence_events(self) -> PresenceStream:
        """``async for event in client.presence_events()``: the events of :meth:`on_presence`."""
        return PresenceStream(self)

    def _mark_presence(self) -> None:
        self._presence_dirty = True
        if not self._presence_scheduled:
            self._presence_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_presence)

    def _flush_presence(self) -> None:
        """Send our presence state (or its clearing) on the current link, once per turn."""
        self._presence_scheduled = False
        link = self._link
        if link is not None and self._presence_dirty:
            self._send_presence(link)

    def _send_presence(self, link: _Link) -> None:
        if link.welcome is None or link.closing:
            return  # the next welcome sends it
        self._presence_dirty = False
        state = self._presence_state
        if state is None and not link.presence_sent:
            return
        if "presence" not in link.welcome.caps:
            log.warning("presence not sent: this session has no 'presence' capability")
            return
        self._send(link, {"type": "presence", "state": state})
        link.presence_sent = state is not None
        link.wake.set()

    def _presence_changed(self, event: PresenceEvent) -> None:
        if not event:
            return
        for callback in list(self._presence_callbacks):
            _call(callback, event)
        for queue in self._presence_streams:
            queue.put_nowait(event)

    def _keepalive_s(self, link: _Link, heartbeat_s: float) -> float:
        """How long the link may stay silent: shorter than the presence TTL while we have one."""
        welcome = link.welcome
        if not link.presence_sent or welcome is None:
            return heartbeat_s
        ttl_ms = _limit(welcome.limits, "presence_ttl_ms", 0)
        if not ttl_ms:
            return heartbeat_s
        return max(_MIN_KEEPALIVE_S, min(heartbeat_s, ttl_ms / 3000))

    # -- blobs (SPEC §4) -------------------------------------------------------------------------

    async def put_blob(
        self, data: bytes | bytearray | memoryview, *, timeout: float | None = None
    ) -> str:
        """Store ``data`` as a blob of the room; returns its hash ``sha256:<hex>``.

        With cap ``blob-direct``: ``request-upload``, PUT to the granted URL, then
        ``blob-uploaded`` and the server's verification. Without it, when the server
        answers ``upload-denied``, or when the PUT fails: an inline ``blob-upload``
        (when it fits a ``limits.max_frame_bytes`` frame). Returns once the server stored
        and verified the blob (``blob-available`` goes to the room); raises
        :class:`BlobRejected` when it refused it (``too-large``, ``verify-failed``...),
        TimeoutError after ``timeout`` seconds. Retried from the start on a new connection
        when the current one drops.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        blob = bytes(data)
        hash = blob_hash(blob)
        await asyncio.wait_for(self._put_blob(hash, blob), timeout)
        return hash

    async def get_blob(self, hash: str, *, timeout: float | None = None) -> bytes:
        """The bytes of blob ``hash`` (``sha256:<hex>``), checked against the hash.

        ``blob-request``, answered with the data inline or (with cap ``blob-direct``) a
        download URL the client GETs. Raises :class:`BlobNotFound` when the room has no
        such blob, :class:`BlobFetchFailed` when the download fails or the bytes do not
        match, ValueError for a malformed hash, TimeoutError after ``timeout`` seconds.
        """
        hash = check_blob_hash(hash)
        return await asyncio.wait_for(self._get_blob(hash), timeout)

    def on_blob_available(self, callback: BlobCallback) -> Callable[[], None]:
        """Call ``callback(BlobInfo(hash, size))`` for every ``blob-available`` of the room
        (our own uploads included). Returns a function that removes the callback."""
        self._blob_callbacks.append(callback)
        return lambda: _discard(self._blob_callbacks, callback)

    async def _put_blob(self, hash: str, data: bytes) -> None:
        while True:
            link = await self._welcomed_link()
            try:
                await self._put_on(link, hash, data)
                return
            except _LinkDown:
                continue

    async def _put_on(self, link: _Link, hash: str, data: bytes) -> None:
        welcome = link.welcome
        assert welcome is not None and self._http is not None
        if "blob" not in welcome.caps:
            raise BlobRejected(hash, "forbidden: this session has no 'blob' capability")
        why_inline = "cap blob-direct was not negotiated"
        if "blob-direct" in welcome.caps:
            grant = await self._blob_call(
                link, "request-upload", hash, {"hash": hash, "size": len(data)}
            )
            if isinstance(grant, m.UploadUrl):
                failure = await http_put(
                    self._http,
                    grant.url,
                    grant.method or "PUT",
                    grant.headers or {},
                    data,
                    self._ssl_for(grant.url),
                )
                if failure is None:
                    _uploaded(
                        hash, await self._blob_call(link, "blob-uploaded", hash, {"hash": hash})
                    )
                    return
                why_inline = f"the direct upload failed ({failure})"
                log.warning("blob %s: %s; uploading inline", hash, why_inline)
            else:
                assert isinstance(grant, m.UploadDenied)
                if grant.reason.startswith("too-large"):
                    raise BlobRejected(hash, grant.reason)
                why_inline = f"upload-denied: {grant.reason}"
        limit = _limit(welcome.limits, "blob_max_bytes", 0)
        if limit and len(data) > limit:
            raise BlobRejected(hash, f"too-large: {len(data)} > blob_max_bytes {limit}")
        max_frame = _limit(welcome.limits, "max_frame_bytes", 1 << 20)
        if not inline_fits(len(data), max_frame):
            raise BlobRejected(
                hash,
                f"too-large for an inline upload: {len(data)} bytes do not fit a "
                f"{max_frame}-byte frame, and {why_inline}",
            )
        frame = {"hash": hash, "size": len(data), "data": base64.b64encode(data).decode("ascii")}
        _uploaded(hash, await self._blob_call(link, "blob-upload", hash, frame))

    async def _get_blob(self, hash: str) -> bytes:
        while True:
            link = await self._welcomed_link()
            assert link.welcome is not None and self._http is not None
            if "blob" not in link.welcome.caps:
                raise BlobFetchFailed(hash, "forbidden: this session has no 'blob' capability")
            try:
                answer = await self._blob_call(link, "blob-request", hash, {"hash": hash})
            except _LinkDown:
                continue
            break
        assert isinstance(answer, m.Blob)
        if answer.data is not None:
            try:
                data = b64decode(answer.data, "blob")
            except CodecError:
                raise BlobFetchFailed(hash, "bad-base64: the inline data is not base64") from None
        elif answer.url is not None:
            data = await http_get(
                self._http, hash, answer.url, answer.size, self._ssl_for(answer.url)
            )
        else:
            raise BlobFetchFailed(hash, "the blob answer has neither data nor url")
        return verify_blob(hash, data, answer.size)

    async def _blob_call(
        self, link: _Link, sent: str, hash: str, fields: dict[str, Any]
    ) -> m.Message:
        """Send a blob frame of type ``sent``; its answer (see ``_BLOB_ANSWERS``)."""
        future: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()
        self._send(link, {"type": sent, **fields})
        link.blob_calls.append(_BlobCall(sent, hash, future))
        return await future

    def _blob_answer(self, link: _Link, msg: m.Message, hash: str) -> None:
        sent = _BLOB_ANSWERS[msg.type]
        for call in link.blob_calls:
            if call.sent in sent and call.hash == hash:
                link.blob_calls.remove(call)
                _resolve(call.future, msg)
                return
        log.debug("unexpected %s for blob %s", msg.type, hash)

    def _blob_refused(self, link: _Link, ref: str, error: m.Error) -> None:
        call = next((c for c in link.blob_calls if c.sent == ref), None)
        if call is None:
            return
        link.blob_calls.remove(call)
        reason = f"{error.code}: {error.message}"
        exc: BlobError
        if ref != "blob-request":
            exc = BlobRejected(call.hash, reason)
        elif error.code == str(ErrorCode.NOT_FOUND):
            exc = BlobNotFound(call.hash, reason)
        else:
            exc = BlobFetchFailed(call.hash, reason)
        _reject(call.future, exc)

    async def _welcomed_link(self) -> _Link:
        def welcomed() -> bool:
            link = self._link
            return link is not None and link.welcome is not None and not link.closing

        await self._wait_for(welcomed)
        link = self._link
        assert link is not None
        return link

    def _ssl_for(self, url: str) -> ssl_module.SSLContext | bool:
        """The app's SSL context for URLs of the roomsync server itself, defaults elsewhere."""
        if self._ssl is not None and urlsplit(url).netloc == urlsplit(self.url).netloc:
            return self._ssl
        return True

    # -- the connection loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                ended = await self._attempt()
                if self._closing:
                    return
                code, error = ended.close_code, ended.error
                error_code = _str(error, "code")
                self.stats.closes.append((code, error_code))
                if ended.welcomed:
                    attempt = 0
                stop = self._stop_reason(ended)
                if stop is not None:
                    self._stop(stop)
                    return
                if code == 4001:
                    self._replica.resync_required()
                hint = _int(error, "retry_after_ms") if error_code == "overload" else None
                if code in (4001, 4002) and attempt == 0:
                    delay = 0.0
                else:
                    delay = self._backoff.delay(attempt, self._rng)
                if hint is not None:
                    delay = max(delay, hint / 1000)
                attempt += 1
                self.stats.waits.append(RetryWait(delay, code, error_code, hint))
                if self.stats.welcomes == 0:
                    log.warning(
                        "cannot connect to %s: %s; retry %d in %.3f s",
                        self.url,
                        ended.cause,
                        attempt,
                        delay,
                    )
                else:
                    log.info(
                        "connection to %s ended: %s; reconnect attempt %d in %.3f s",
                        self.url,
                        ended.cause,
                        attempt,
                        delay,
                    )
                if delay > 0:
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unexpected library error: stop loudly
            log.exception("roomsync client loop failed")
            self._stop(ConnectionClosed(ABNORMAL_CLOSURE, None, f"client failure: {exc!r}"))
        finally:
            if self._terminal is not None and self._http is not None and not self._closing:
                await self._http.close()

    def _stop_reason(self, ended: _Ended) -> ConnectionClosed | None:
        code, error = ended.close_code, ended.error
        if code in TERMINAL_CLOSE_CODES:
            return ConnectionClosed(code, error)
        if code == 4002 and self._token_provider is None:
            return ConnectionClosed(
                code,
                error,
                "token expired and no token_provider to "
                "refresh it: pass token_provider to connect()",
            )
        if not self._reconnect:
            if self.stats.welcomes == 0:
                return ConnectError(
                    self.url,
                    ended.cause,
                    attempts=self.stats.attempts,
                    close_code=code,
                    error=error,
                )
            return ConnectionClosed(code, error)
        return None

    def _stop(self, error: ConnectionClosed, *, by_app: bool = False) -> None:
        if self._terminal is not None:
            return
        self._terminal = error
        self._closed_by_app = by_app
        self.connected.clear()
        for queue in [*self._streams, *self._presence_streams]:
            queue.put_nowait(_End(None if by_app else error))
        for callback in list(self._close_callbacks):
            _call(callback, error)
        self._pulse.fire()

    async def _attempt(self) -> _Ended:
        ended = await self._attempt_once()
        if not ended.welcomed:
            self._last_failure = ended
        return ended

    async def _attempt_once(self) -> _Ended:
        self.stats.attempts += 1
        self._phase = "token"
        try:
            token = await self._next_token()
        except Exception as exc:  # the app's provider failed: back off and ask again
            log.warning("token_provider failed: %r", exc)
            return _Ended(
                ABNORMAL_CLOSURE,
                {"code": "auth", "message": f"auth: token_provider failed: {exc}"},
                False,
                f"token_provider failed: {exc!r}",
            )
        assert self._http is not None
        self._phase = "connect"
        try:
            ws = await asyncio.wait_for(
                self._http.ws_connect(
                    self.url,
                    ssl=self._ssl if self._ssl is not None else True,
                    autoping=True,
                    heartbeat=None,
                    max_msg_size=0,
                    compress=0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=_CLOSE_TIMEOUT_S),
                ),
                _HANDSHAKE_TIMEOUT_S,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("cannot connect to %s: %r", self.url, exc)
            return _Ended(ABNORMAL_CLOSURE, None, False, _failure_cause(exc))
        self._phase = "welcome"
        if self._replica.needs_resync:
            self.stats.resyncs += 1
        plan = self._replica.start_session(can_reconcile="reconcile" in self._last_caps)
        link = _Link(ws, plan.mode)
        self._link = link
        loop = asyncio.get_running_loop()
        link.last_recv = link.last_sent = loop.time()
        hello = m.Hello(
            v=PROTOCOL_VERSION,
            token=token,
            actor=self.actor,
            caps=self._caps,
            subscribe=plan.subscribe,
            cursor=plan.cursor,
            catchup=None if plan.catchup else False,
        )
        self._send(link, hello.to_wire())
        link.tasks.append(loop.create_task(self._sender(link)))
        try:
            async for msg in ws:
                link.last_recv = loop.time()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._on_text(link, msg.data)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    break
        except (aiohttp.ClientError, ConnectionError) as exc:
            log.info("connection to %s failed: %r", self.url, exc)
        finally:
            await self._end_link(link)
        code = int(ws.close_code or ABNORMAL_CLOSURE)
        welcomed = link.welcome is not None
        return _Ended(
            code, link.last_error, welcomed, _close_cause(code, link.last_error, welcomed)
        )

    async def _next_token(self) -> str | None:
        provider = self._token_provider
        if provider is not None and (self.stats.attempts > 1 or self._token is None):
            self._token = await provider()
            self.stats.token_refreshes += 1
        return self._token

    async def _end_link(self, link: _Link) -> None:
        link.closing = True
        for task in link.tasks:
            task.cancel()
        await asyncio.gather(*link.tasks, return_exceptions=True)
        for future in link.futures():
            if not future.done():
                future.set_exception(_LinkDown())
                future.exception()  # retrieved: the awaiting side re-raises it
        link.answers.clear()
        link.roots.clear()
        link.nodes.clear()
        link.blob_calls.clear()
        if not link.ws.closed:
            try:
                await asyncio.wait_for(link.ws.close(), _CLOSE_TIMEOUT_S)
            except (TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError):
                pass
        self._replica.requeue_inflight()
        if self._link is link:
            self._link = None
            self._presence_changed(self._presence.clear())
        self.connected.clear()
        self._pulse.fire()

    async def _sender(self, link: _Link) -> None:
        """Write queued frames in order; a failed write drops the link."""
        loop = asyncio.get_running_loop()
        try:
            while not link.closing:
                await link.outbox_ready.wait()
                link.outbox_ready.clear()
                while link.outbox and not link.closing:
                    text = link.outbox.popleft()
                    link.last_sent = loop.time()
                    await link.ws.send_str(text)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.info("sending to %s failed: %r", self.url, exc)
            link.abort()

    async def _heartbeat(self, link: _Link, interval_ms: int) -> None:
        """``ping`` when idle for ``heartbeat_ms``; drop a link silent for three of them.

        While the server holds a presence state of ours, idle means ``presence_ttl_ms / 3``
        when that is shorter: every frame refreshes the presence (SPEC §5).
        """
        interval = max(interval_ms, 100) / 1000
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(link.wake.wait(), self._keepalive_s(link, interval) / 2)
            except TimeoutError:
                pass
            link.wake.clear()
            if link.closing:
                return
            now = loop.time()
            if now - link.last_recv > 3 * interval:
                log.info(
                    "no frame from %s for %.1f s: reconnecting", self.url, now - link.last_recv
                )
                link.abort()
                return
            if now - link.last_sent >= self._keepalive_s(link, interval) and not link.outbox:
                self._send(link, m.Ping().to_wire())

    async def _resync(self, link: _Link) -> None:
        """MST resync after 4001 (``catchup: false``): reconcile, then publish the cursor."""
        try:
            await self._reconcile(link)
        except _LinkDown:
            return
        except (RoomsyncError, ValueError) as exc:
            log.warning("MST resync failed (%r): falling back to a full catch-up", exc)
            self._last_caps = tuple(c for c in self._last_caps if c != "reconcile")
            link.abort()
            return
        self._replica.finish_resync()
        self._synced(link)

    def _synced(self, link: _Link) -> None:
        link.synced = True
        self.stats.last_catchup_changes = link.catchup_changes
        self._maybe_subscribe(link)
        self._fetch_winners(link)
        self._schedule_flush()
        self._pulse.fire()

    def _fetch_winners(self, link: _Link) -> None:
        """``request{paths}`` the entries that beat superseded writes, when the replica
        lacks them (``Replica.fetch_paths``); the answers go through the replica."""
        if link.closing or not link.synced:
            return
        paths = self._replica.fetch_paths()
        for chunk in _path_chunks(paths):
            self._send(link, m.Request(paths=tuple(chunk)).to_wire())
            answer = self._replica.expect_paths(chunk)
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_ignore_result)
            link.answers[answer] = future

    # -- outgoing packs ------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        """Send after this turn, so all writes of one event-loop turn share a pack."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_outgoing)

    def _flush_outgoing(self) -> None:
        self._flush_scheduled = False
        link = self._link
        if link is None or link.welcome is None or link.closing:
            return
        if asyncio.get_running_loop().time() < link.pause_until:
            return
        if "write" not in link.welcome.caps:
            self._settled(
                self._replica.refuse_unsent(
                    str(ErrorCode.FORBIDDEN), "this session has no 'write' capability"
                )
            )
            self._pulse.fire()
            return
        oversize = self._replica.refuse_oversize(link.max_bytes)
        if oversize.refused:
            self._settled(oversize)
            self._pulse.fire()
        pack = self._replica.take_outgoing(link.max_changes, link.max_bytes)
        if pack is not None:
            self._send(link, m.PackMsg(data=pack_data(pack)).to_wire())

    # -- incoming frames -----------------------------------------------------------------------

    def _on_text(self, link: _Link, text: str) -> None:
        try:
            msg = parse_server(decode_json(text))
        except RoomsyncError as exc:
            log.warning("ignoring a server frame: %s", exc.message)
            return
        handler = getattr(self, "_on_" + msg.type.replace("-", "_"), None)
        if handler is None:
            log.debug("no handler for server message %r", msg.type)
            return
        handler(link, msg)
        self._pulse.fire()

    def _on_welcome(self, link: _Link, msg: m.Welcome) -> None:
        link.welcome = msg
        if msg.actor and msg.actor != self.actor and not actor_allowed(msg.actor, self.actor):
            log.warning(
                "the server binds this session to actor %r but this replica writes as %r: "
                "its packs will be refused (forbidden); pass actor=%r (or %r#<suffix>) "
                "to connect()",
                msg.actor,
                self.actor,
                msg.actor,
                msg.actor,
            )
        self.session_info = msg
        self._last_caps = tuple(msg.caps)
        self.stats.welcomes += 1
        limits = msg.limits
        max_frame = _limit(limits, "max_frame_bytes", 1 << 20)
        link.max_bytes = max(
            1,
            min(_limit(limits, "max_pack_bytes", 1 << 20), (max_frame - _FRAME_OVERHEAD) * 3 // 4),
        )
        link.max_changes = max(1, _limit(limits, "max_changes_per_pack", 10_000))
        self._replica.on_welcome(msg.head, can_read="read" in msg.caps)
        loop = asyncio.get_running_loop()
        link.tasks.append(loop.create_task(self._heartbeat(link, msg.heartbeat_ms)))
        if link.mode is SyncMode.RECONCILE and "read" in msg.caps:
            if "reconcile" not in msg.caps:
                # Not granted any more: reconnect for a full catch-up instead.
                link.abort()
                return
            link.tasks.append(loop.create_task(self._resync(link)))
        elif self._replica.synced:
            self._synced(link)
        self._presence_changed(self._presence.reset(msg.peer, msg.presence))
        if self._presence_state is not None:
            self._send_presence(link)  # restore it: this is a new session (SPEC §5)
        self.connected.set()
        self._schedule_flush()

    def _on_pack(self, link: _Link, msg: m.PackMsg) -> None:
        try:
            changes = unpack_data(msg.data)
        except CodecError as exc:
            log.error("server sent an undecodable pack (%s): reconnecting", exc.message)
            link.abort()
            return
        if not link.synced:
            link.catchup_changes += len(changes)
        received = self._replica.receive(changes, head=msg.head, done=bool(msg.done))
        self._emit(received.changed)
        finished = received.finished
        if finished is None:
            return
        future = link.answers.pop(finished, None)
        if future is not None and not future.done():
            future.set_result(None)
        if finished.kind in (AnswerKind.CATCHUP, AnswerKind.FULL):
            self._synced(link)
        elif finished.kind is AnswerKind.SUBSCRIBE:
            self._maybe_subscribe(link)

    def _on_ack(self, link: _Link, msg: m.Ack) -> None:
        settled = self._replica.on_ack(msg.seqs, msg.refused or (), msg.superseded or ())
        self._settled(settled)
        if settled.superseded:
            self._fetch_winners(link)
        if settled.retry:
            # The whole pack was rate-limited: it is queued again; pause, then resend.
            low, high = _RATE_LIMIT_PAUSE_S
            pause = min(high, low * 2 ** min(link.rate_limited, 16))
            link.rate_limited += 1
            loop = asyncio.get_running_loop()
            link.pause_until = loop.time() + pause
            loop.call_later(pause, self._schedule_flush)
            return
        link.rate_limited = 0
        self._flush_outgoing()

    def _on_mst_root(self, link: _Link, msg: m.MstRoot) -> None:
        if link.roots:
            _resolve(link.roots.popleft(), msg)

    def _on_mst_nodes(self, link: _Link, msg: m.MstNodes) -> None:
        if link.nodes:
            _resolve(link.nodes.popleft(), msg)

    def _on_presence(self, link: _Link, msg: m.Presence) -> None:
        self._presence_changed(self._presence.update(msg.peers or ()))

    def _on_presence_leave(self, link: _Link, msg: m.PresenceLeave) -> None:
        self._presence_changed(self._presence.leave(msg.peer))

    def _on_upload_url(self, link: _Link, msg: m.UploadUrl) -> None:
        self._blob_answer(link, msg, msg.hash)

    def _on_upload_denied(self, link: _Link, msg: m.UploadDenied) -> None:
        self._blob_answer(link, msg, msg.hash)

    def _on_blob_uploaded(self, link: _Link, msg: m.BlobUploaded) -> None:
        self._blob_answer(link, msg, msg.hash)

    def _on_upload_rejected(self, link: _Link, msg: m.UploadRejected) -> None:
        self._blob_answer(link, msg, msg.hash)

    def _on_blob(self, link: _Link, msg: m.Blob) -> None:
        self._blob_answer(link, msg, msg.hash)

    def _on_blob_available(self, link: _Link, msg: m.BlobAvailable) -> None:
        info = BlobInfo(msg.hash, msg.size)
        for callback in list(self._blob_callbacks):
            _call(callback, info)

    def _on_ping(self, link: _Link, msg: m.Ping) -> None:
        if not link.closing:
            self._send(link, m.Pong().to_wire())

    def _on_pong(self, link: _Link, msg: m.Pong) -> None:
        """Nothing to do: receiving it already refreshed the link's liveness."""

    def _on_error(self, link: _Link, msg: m.Error) -> None:
        error = msg.to_wire()
        link.last_error = error
        ref = error.get("ref")
        log.info("server error %s (ref %s): %s", msg.code, ref, msg.message)
        refused = RequestRefused(error)
        if ref == "pack":
            return  # the pack's own ack (refused[index -1]) settles it, in order
        elif ref == "request":
            self._fail_answer(link, AnswerKind.PATHS, refused)
        elif ref == "subscribe":
            self._subscribe_failure = refused
            self._fail_answer(link, AnswerKind.SUBSCRIBE, refused)
        elif ref == "mst-root" and link.roots:
            _reject(link.roots.popleft(), refused)
        elif ref == "mst-get" and link.nodes:
            _reject(link.nodes.popleft(), refused)
        elif ref in _BLOB_REQUESTS:
            self._blob_refused(link, ref, msg)
        elif ref == "presence":
            log.warning("presence refused by the server: %s: %s", msg.code, msg.message)

    def _fail_answer(self, link: _Link, kind: AnswerKind, error: RequestRefused) -> None:
        answer = self._replica.answer_failed(kind)
        if answer is not None:
            future = link.answers.pop(answer, None)
            if future is not None:
                _reject(future, error)


async def connect(
    url: str,
    room: str,
    *,
    token: str | None = None,
    token_provider: TokenProvider | None = None,
    actor: str | None = None,
    subscribe: Sequence[str] = ("/",),
    caps: Sequence[str] | None = None,
    reconnect: bool = True,
    backoff: Backoff | None = None,
    rng: random.Random | None = None,
    ssl: ssl_module.SSLContext | None = None,
    connect_timeout_s: float | None = DEFAULT_CONNECT_TIMEOUT_S,
) -> RoomClient:
    """Connect to ``room`` on the server at ``url`` and return once it is welcomed.

    ``url`` is the server's base URL (``http://host:port``, ``https://...``; a
    ``ws(s)://host/ws/room`` URL is accepted too). ``token`` authenticates;
    ``token_provider`` is awaited for a fresh token before every reconnect and after a
    4002 (and first, when ``token`` is None). ``actor`` names this replica's writes
    (default: a random id; give each replica its own). ``subscribe``: path prefixes to
    replicate. ``caps``: capabilities to request (default: all the token grants).
    ``reconnect=False`` stops at the first close. ``backoff`` and ``rng`` shape the
    reconnect delays; ``ssl`` is the context for ``wss://``. ``connect_timeout_s``
    (default 10, None: no limit) bounds the wait for the first ``welcome``; once a
    session was welcomed, reconnecting is automatic and unbounded.

    The catch-up continues in the background: ``await client.wait_synced()`` waits for it.
    Raises :class:`ConnectError` when no session opened within ``connect_timeout_s`` (or
    at the first failure with ``reconnect=False``), :class:`ConnectionClosed` when the
    server refuses the client for good.
    """
    client = RoomClient(
        url,
        room,
        token=token,
        token_provider=token_provider,
        actor=actor,
        subscribe=subscribe,
        caps=caps,
        reconnect=reconnect,
        backoff=backoff,
        rng=rng,
        ssl=ssl,
        connect_timeout_s=connect_timeout_s,
    )
    await client.start()
    return client


# -- helpers -----------------------------------------------------------------------------------


def _token_sub(token: str | None) -> str | None:
    """The ``sub`` claim of a JWT, read without verifying it (the server verifies; the
    client only needs to know which actor it will be held to)."""
    if not token:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) and sub else None


def _new_actor(rng: random.Random | None) -> str:
    bits = rng.getrandbits(64) if rng is not None else secrets.randbits(64)
    return f"c-{bits:016x}"


def _path_chunks(paths: Sequence[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for path in paths:
        n = len(path.encode("utf-8")) + 4
        if chunk and (len(chunk) >= _PATHS_PER_REQUEST or size + n > _PATH_BYTES_PER_REQUEST):
            yield chunk
            chunk, size = [], 0
        chunk.append(path)
        size += n
    if chunk:
        yield chunk


def _failure_cause(exc: BaseException) -> str:
    """Why a WebSocket handshake failed, in words (for logs and :class:`ConnectError`)."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"HTTP {exc.status} on the WebSocket upgrade (is this a roomsync server's URL?)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate rejected: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake failed: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve host {exc.host!r}: {exc.os_error.strerror or exc.os_error}"
    os_error: BaseException = exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(os_error, TimeoutError):
        return f"no answer within {_HANDSHAKE_TIMEOUT_S:g} s"
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror.lower()
    return str(exc) or type(exc).__name__


def _close_cause(code: int, error: dict[str, Any] | None, welcomed: bool) -> str:
    """How a connection ended, in words: its close code and the server's error."""
    what = "closed with code" if welcomed else "closed before welcome with code"
    if code == ABNORMAL_CLOSURE and error is None:
        return "the connection dropped" if welcomed else "the connection dropped before welcome"
    detail = f" ({error.get('code')}: {error.get('message')})" if error else ""
    return f"{what} {code}{detail}"


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CodecError(f"bad postcard: {text[:80]!r} is not a hex hash") from None


def _limit(limits: dict[str, Any], name: str, default: int) -> int:
    value = limits.get(name)
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
    )


def _str(obj: dict[str, Any] | None, name: str) -> str | None:
    value = (obj or {}).get(name)
    return value if isinstance(value, str) else None


def _int(obj: dict[str, Any] | None, name: str) -> int | None:
    value = (obj or {}).get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _call(callback: Callable[[Any], object], arg: object) -> None:
    try:
        callback(arg)
    except Exception:  # an app callback must not break the connection
        log.exception("roomsync client callback %r failed", callback)


def _discard(callbacks: list[Any], callback: object) -> None:
    if callback in callbacks:
        callbacks.remove(callback)


def _resolve(future: asyncio.Future[Any], value: object) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _uploaded(hash: str, answer: m.Message) -> None:
    """The end of an upload: ``blob-uploaded`` returns, ``upload-rejected`` raises."""
    if isinstance(answer, m.UploadRejected):
        raise BlobRejected(hash, answer.reason)
    if not isinstance(answer, m.BlobUploaded):
        raise BlobRejected(hash, f"unexpected answer {answer.type!r} to the upload")


def _ignore_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
