"""The SDK's public client: :func:`connect` and :class:`RoomClient` (SPEC §1-5).

:class:`RoomClient` is a facade: each public member is one line that hands over to the
part of the SDK that owns the concept, and those parts are asyncio shells over the pure
core, where the rules live:

==============================  ==========================================================
part                            rules it drives (``roomsync.core``)
==============================  ==========================================================
:mod:`.connection` (lifecycle)  ``reconnect`` (close code -> action, backoff),
                                ``keepalive`` (ping, drop a silent link)
:mod:`.local_replica` (state)   ``replica`` (cursor, offline queue, refusals),
                                ``packing`` (pack sizes, rate-limit pause)
:mod:`.reconciler` (MST)        ``reconcile`` (the reconcile flow), ``packing`` (paths)
:mod:`.presence`                ``presence_view`` (who is present), ``keepalive``
:mod:`.blobs`                   ``blobflow`` (upload and fetch flows)
:mod:`.ticks`                   (the room's tick counter, SPEC §6 ``tick``)
==============================  ==========================================================
"""

from __future__ import annotations

import random
import secrets
import ssl as ssl_module
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jwt

from ..core import messages as m
from ..core.entries import Change
from ..core.presence_view import PresenceEvent, PresenceInfo
from ..core.reconcile import ReconcileResult
from ..core.reconnect import Backoff
from ..core.replica import RefusedChange, Replica, SupersededChange
from ..core.types import session_actor, validate_room_id
from .blobs import BlobInfo, BlobTransfers
from .connection import DEFAULT_CONNECT_TIMEOUT_S, Connection, TokenProvider, ws_url
from .errors import ConnectionClosed
from .events import ChangeStream, PresenceStream
from .local_replica import LocalReplica
from .presence import PresenceChannel
from .reconciler import Reconciler
from .stats import ConnectionStats
from .ticks import TickChannel, TickInfo

ChangeCallback = Callable[[Change], object]
RefusedCallback = Callable[[RefusedChange], object]
SupersededCallback = Callable[[SupersededChange], object]
CloseCallback = Callable[[ConnectionClosed], object]
PresenceCallback = Callable[[PresenceEvent], object]
BlobCallback = Callable[[BlobInfo], object]
TickCallback = Callable[[TickInfo], object]


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
        url: str | Sequence[str],
        room: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        actor: str | None = None,
        subscribe: Sequence[str] = ("/",),
        caps: Sequence[str] | None = None,
        binary: bool = True,
        hello_fields: Mapping[str, Any] | None = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        ssl: ssl_module.SSLContext | None = None,
        connect_timeout_s: float | None = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        if connect_timeout_s is not None and not connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s must be > 0 or None, got {connect_timeout_s!r}")
        self.room = validate_room_id(room)
        urls = [ws_url(u, room) for u in ([url] if isinstance(url, str) else url)]
        if not urls:
            raise ValueError("at least one server URL is needed")
        self.url = urls[0]
        # With a token, the server accepts writes only as its ``sub`` or ``sub#<suffix>``.
        self.actor = session_actor(_token_sub(token), actor, _new_actor(rng))
        replica = Replica(self.actor, subscribe=subscribe)
        self._connection = Connection(
            urls,
            replica,
            token=token,
            token_provider=token_provider,
            caps=caps,
            binary=binary,
            hello_fields=hello_fields,
            reconnect=reconnect,
            backoff=backoff,
            rng=rng if rng is not None else random.Random(),
            ssl=ssl,
            connect_timeout_s=connect_timeout_s,
        )
        # Registration order is dispatch order at every welcome: state first, presence next.
        self._reconciler = Reconciler(self._connection, replica)
        self._replica = LocalReplica(self._connection, replica, self._reconciler)
        self._presence = PresenceChannel(self._connection)
        self._blobs = BlobTransfers(self._connection)
        self._ticks = TickChannel(self._connection)
        #: Set while a session is open (welcomed); cleared while disconnected.
        self.connected = self._connection.connected
        self.stats: ConnectionStats = self._connection.stats
        #: Every write the server (or the client, before sending) refused, in order.
        self.refused: list[RefusedChange] = self._replica.refused

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection loop and wait for the first ``welcome``.

        Retries (logged, with backoff) until ``connect_timeout_s`` has passed, then stops
        the client and raises :class:`ConnectError` naming the URL and the cause of the
        last failure; with ``reconnect=False`` it raises that at the first failure.
        Raises :class:`ConnectionClosed` when the server refuses for good (4003, 4004,
        1002). :func:`connect` calls it.
        """
        await self._connection.start()

    async def close(self) -> None:
        """Close the connection (1000) and stop. Unsent writes stay unsent: :meth:`flush` first."""
        await self._connection.close()

    async def __aenter__(self) -> RoomClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def disconnect(self) -> None:
        """Drop the current connection abruptly, as a network failure would.

        For network-change handlers and tests: the client reconnects (when
        ``reconnect`` is on) after its backoff and resumes from its cursor.
        """
        self._connection.disconnect()

    @property
    def session_info(self) -> m.Welcome | None:
        """The last ``welcome`` received (session id, peer, caps, head, limits, ...)."""
        return self._connection.session_info

    @property
    def caps(self) -> tuple[str, ...]:
        """Capabilities granted by the last ``welcome``."""
        return self._connection.caps

    # -- state ---------------------------------------------------------------------------------

    @property
    def root(self) -> str:
        """The canonical hash (SPEC §1) of the local replica's live entries."""
        return self._replica.root

    @property
    def cursor(self) -> int:
        """The seq up to which this replica has every change of its subscription."""
        return self._replica.cursor

    @property
    def pending(self) -> int:
        """Local writes not yet settled by the server (queued or in flight)."""
        return self._replica.pending

    def get(self, path: str) -> bytes | None:
        """The value at ``path``, or None when it is absent or deleted."""
        return self._replica.get(path)

    def get_json(self, path: str, default: Any = None) -> Any:
        """The value at ``path`` decoded as JSON, or ``default`` when absent."""
        return self._replica.get_json(path, default)

    def items(self, prefix: str = "/") -> Iterator[tuple[str, bytes]]:
        """``(path, value)`` of the live entries at or below ``prefix``, sorted by path."""
        return self._replica.items(prefix)

    def entry(self, path: str) -> Change | None:
        """The full entry at ``path`` (clock, actor, seq; tombstones included), or None."""
        return self._replica.entry(path)

    # -- writes --------------------------------------------------------------------------------

    def set(self, path: str, value: bytes) -> Change:
        """Write ``value`` at ``path`` (applied locally now, sent with this turn's pack)."""
        return self._replica.set(path, value)

    def set_json(self, path: str, obj: Any) -> Change:
        """Write ``obj`` encoded as compact UTF-8 JSON."""
        return self._replica.set_json(path, obj)

    def delete(self, path: str) -> Change:
        """Delete ``path`` (a tombstone that wins LWW like any write)."""
        return self._replica.delete(path)

    # -- waiting -------------------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every local write so far is settled (acknowledged or refused).

        Raises TimeoutError after ``timeout`` seconds, :class:`ConnectionClosed` if the
        client stops first. Refusals do not raise: see :meth:`on_refused`.
        """
        await self._replica.flush(timeout)

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait until the current session finished its catch-up (or resync)."""
        await self._replica.wait_synced(timeout)

    # -- events --------------------------------------------------------------------------------

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(change)`` for every change that became visible, local or remote.

        A deleted path arrives as a tombstone (``change.value is None``); a refused write
        rolled back arrives as the entry it restored (or a tombstone when there was none).
        Returns a function that removes the callback.
        """
        return self._replica.changed.add(callback)

    def on_refused(self, callback: RefusedCallback) -> Callable[[], None]:
        """Call ``callback(refused)`` for every refused write (it was rolled back locally)."""
        return self._replica.refusals.add(callback)

    def on_superseded(self, callback: SupersededCallback) -> Callable[[], None]:
        """Call ``callback(superseded)`` for every acknowledged write that lost LWW.

        The server kept a newer entry (a :class:`~roomsync.core.replica.SupersededChange`
        carries the write and the winner's ``seq``); the write was rolled back locally
        and the replica holds, or fetches, the server's entry. Returns a function that
        removes the callback.
        """
        return self._replica.superseded.add(callback)

    def on_close(self, callback: CloseCallback) -> Callable[[], None]:
        """Call ``callback(error)`` once when the client stops for good (also after close())."""
        return self._connection.closed.add(callback)

    def changes(self) -> ChangeStream:
        """``async for change in client.changes()``: the same changes as :meth:`on_change`.

        Ends after :meth:`close`; raises :class:`ConnectionClosed` when the server stopped
        the client. Changes are buffered from the call on.
        """
        return self._replica.changes()

    # -- requests ------------------------------------------------------------------------------

    async def subscribe(self, paths: Sequence[str]) -> None:
        """Replace the subscription prefixes; returns once the server sent what they add.

        Local entries outside the new prefixes stay as they are but are no longer updated.
        """
        await self._replica.subscribe(paths)

    async def server_root(self) -> str:
        """The server's canonical hash of the room (``mst-root``; needs cap ``reconcile``)."""
        return await self._reconciler.server_root()

    async def reconcile(self) -> ReconcileResult:
        """Compare the local MST with the server's and fetch what differs (SPEC §1).

        ``mst-root``/``mst-get`` rounds find the differing paths, ``request{paths}`` fetches
        the server's entries for them (tombstones included); the server is the authority
        for entries it confirmed and unacknowledged local writes are sent as usual. Needs
        cap ``reconcile``; retried on a new connection if the current one drops.
        """
        return await self._reconciler.reconcile()

    # -- presence (SPEC §5) ----------------------------------------------------------------------

    @property
    def presence(self) -> dict[str, PresenceInfo]:
        """The other peers' presence, ``peer id -> PresenceInfo(peer, actor, state)``.

        The welcome's snapshot plus every update since; empty while disconnected. Our own
        peer is never in it. A copy: changing it changes nothing.
        """
        return self._presence.peers

    @property
    def local_presence(self) -> Any:
        """Our presence state as last given to :meth:`set_presence` (None: no presence)."""
        return self._presence.local_state

    def set_presence(self, state: Any) -> None:
        """Publish ``state`` (anything JSON-able) as this client's presence.

        Sent after this event-loop turn (several calls in one turn send only the last
        state), re-sent after every reconnect, and kept alive by the heartbeat until
        :meth:`clear_presence`. ``set_presence(None)`` is :meth:`clear_presence`. Raises
        TypeError/ValueError for a state that is not JSON, ValueError for one larger than
        the welcome's ``limits.presence_max_bytes``, and :class:`RequestRefused`
        (``forbidden``) when the session was not granted the ``presence`` capability.
        """
        self._presence.set_presence(state)

    def clear_presence(self) -> None:
        """Stop publishing a presence state: the others see this peer leave.

        The protocol has no client leave message: the client sends ``presence{state:
        null}``, which every SDK treats as "no presence", stops the presence heartbeat
        and does not re-send anything after reconnecting.
        """
        self._presence.clear_presence()

    def on_presence(self, callback: PresenceCallback) -> Callable[[], None]:
        """Call ``callback(event)`` with each :class:`PresenceEvent` (changed peers, left peers).

        After a disconnect every known peer is reported as left; the next welcome's
        snapshot reports them again as changed. Returns a function that removes it.
        """
        return self._presence.events.add(callback)

    def presence_events(self) -> PresenceStream:
        """``async for event in client.presence_events()``: the events of :meth:`on_presence`."""
        return self._presence.stream()

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
        return await self._blobs.put_blob(data, timeout)

    async def get_blob(self, hash: str, *, timeout: float | None = None) -> bytes:
        """The bytes of blob ``hash`` (``sha256:<hex>``), checked against the hash.

        ``blob-request``, answered with the data inline or (with cap ``blob-direct``) a
        download URL the client GETs. Raises :class:`BlobNotFound` when the room has no
        such blob, :class:`BlobFetchFailed` when the download fails or the bytes do not
        match, ValueError for a malformed hash, TimeoutError after ``timeout`` seconds.
        """
        return await self._blobs.get_blob(hash, timeout)

    def on_blob_available(self, callback: BlobCallback) -> Callable[[], None]:
        """Call ``callback(BlobInfo(hash, size))`` for every ``blob-available`` of the room
        (our own uploads included). Returns a function that removes the callback."""
        return self._blobs.available.add(callback)

    # -- ticks (SPEC §6 tick) --------------------------------------------------------------------

    @property
    def last_tick(self) -> TickInfo | None:
        """The last ``tick{n, at}`` received (None: none yet). Ticks are not caught up
        after a reconnect: this is the last one seen, the next change brings the current."""
        return self._ticks.last

    def on_tick(self, callback: TickCallback) -> Callable[[], None]:
        """Call ``callback(TickInfo(n, at))`` for every ``tick`` of the room: its logical
        counter changed (the server's timer, or an operator's ``tick set``/``advance``).
        Returns a function that removes the callback."""
        return self._ticks.events.add(callback)


async def connect(
    url: str | Sequence[str],
    room: str,
    *,
    token: str | None = None,
    token_provider: TokenProvider | None = None,
    actor: str | None = None,
    subscribe: Sequence[str] = ("/",),
    caps: Sequence[str] | None = None,
    binary: bool = True,
    hello_fields: Mapping[str, Any] | None = None,
    reconnect: bool = True,
    backoff: Backoff | None = None,
    rng: random.Random | None = None,
    ssl: ssl_module.SSLContext | None = None,
    connect_timeout_s: float | None = DEFAULT_CONNECT_TIMEOUT_S,
) -> RoomClient:
    """Connect to ``room`` on the server at ``url`` and return once it is welcomed.

    ``url`` is the server's base URL (``http://host:port``, ``https://...``; a
    ``ws(s)://host/ws/room`` URL is accepted too), or a list of them: the nodes of one
    deployment, tried in turn on each reconnect (a load balancer's URL works as well).
    ``token`` authenticates; ``token_provider`` is awaited for a fresh token before every
    reconnect and after a 4002 (and first, when ``token`` is None). ``actor`` names this
    replica's writes (default: a random id; give each replica its own). ``subscribe``:
    path prefixes to replicate. ``caps``: capabilities to request (default: all the token grants).
    ``binary`` (default True) also asks for the ``binary`` cap, so that packs travel as
    binary frames both ways when the server grants it (JSON otherwise). ``hello_fields``
    are extra fields of every ``hello`` (an app's ``authorize`` hook reads them,
    ``docs/hooks.md``); they may not replace the protocol's own.
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
        binary=binary,
        hello_fields=hello_fields,
        reconnect=reconnect,
        backoff=backoff,
        rng=rng,
        ssl=ssl,
        connect_timeout_s=connect_timeout_s,
    )
    await client.start()
    return client


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
