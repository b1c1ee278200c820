"""The bus between nodes: Redis pub/sub through redis-py asyncio (SPEC §8).

Why pub/sub and not streams: the store is the seq authority and holds every accepted
change (an event is published only after its commit, see :mod:`.base`), so the bus needs
to be fast, not durable. A receiver detects a lost or late message by seq (every event
carries its room, its changes *with their seqs*, their authors and the committing node)
and fetches the missing seqs from the store; a durable bus would only duplicate what the
store already has, at the cost of trimming streams whose growth must be bounded (the
y-redis failure mode). Pub/sub keeps nothing in Redis (no keys, nothing to clean up), a
node receives only the rooms it subscribes to (one channel per room), and Redis delivers
the messages of one publishing connection in the order it sent them, so a node's events of
a room reach every other node in publish order.

Connections and tasks (one bus per node)::

    publish() ─▶ local subscribers (synchronously, before it returns)
              └▶ outbox ─▶ sender task ─▶ PUBLISH (pipelined, publish order)
    reader task ◀─ SUBSCRIBE connection ◀─ other nodes' events ─▶ local subscribers

Guarantees and their limits:

- local subscribers get every event inside :meth:`RedisBus.publish`, as with
  :class:`~.memory.MemoryBus`; the copy Redis sends back to this bus is dropped (each
  message names the bus instance that sent it);
- remote subscribers get a node's events of a room in publish order, each usually once:
  when the publishing connection fails in the middle of a pipeline, the sender sends the
  unconfirmed part again (a receiver drops events whose seqs it has, see below);
- while Redis is unreachable, events wait in a bounded outbox (``outbox_max`` events; the
  oldest are dropped beyond it, counted in ``dropped``) and are sent in order once it is
  back, so the newest event of every room always arrives and shows any gap behind it;
- events of other nodes published while this bus was not subscribed (before a
  subscription became active, or while the connection was down) are lost to it: each time
  a room's subscription becomes active the bus calls ``on_resync(room)``, where the host
  reads the room from the store from its delivered head on;
- :meth:`RedisBus.check` raises :class:`~.base.BusError` while either connection is down
  (the node reports not ready and keeps serving its own peers through local delivery).

Receivers (the room hosts) must therefore deliver by seq, not by arrival: an event whose
``last_seq`` is at or below the delivered head is a duplicate; one whose ``first_seq`` is
above ``head + 1`` follows a gap, and the host fetches ``changes_since(head)`` from the
store before delivering it. Events of different nodes for one room interleave in no
defined order (each node's own are ordered); seqs put them in order.

Messages are msgpack (msgspec) envelopes around a postcard pack of the changes (the
wire format of :mod:`roomsync.core.postcard`, seqs included); no pickle.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import msgspec
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..core.entries import Change
from ..core.postcard import decode_pack, encode_pack
from ..redaction import redact_dsn
from .base import BusError, Handler, RoomEvent, Signal, SignalHandler

__all__ = ["RedisBus"]

log = logging.getLogger("roomsync.bus")

_VERSION: Final = 1
_ERRORS: Final = (RedisError, OSError, TimeoutError)


class _Wire(msgspec.Struct, array_like=True, frozen=True, tag="e"):
    """One event on the wire."""

    v: int
    origin: str  # the bus instance that published it
    room: str
    node: str
    authors: list[str | None]
    pack: bytes  # postcard Pack of the changes, with their seqs


class _SignalWire(msgspec.Struct, array_like=True, frozen=True, tag="s"):
    """One signal on the wire (:class:`~.base.Signal`); ``data`` is its JSON."""

    v: int
    origin: str
    kind: str
    node: str
    room: str | None
    data: bytes


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Wire | _SignalWire)


class _RedisSubscription:
    __slots__ = ("_bus", "handler", "room")

    def __init__(self, bus: RedisBus, room: str, handler: Handler) -> None:
        self._bus = bus
        self.room = room
        self.handler = handler

    def close(self) -> None:
        self._bus._drop(self)


class RedisBus:
    """A :class:`~.base.Bus` over Redis pub/sub (see the module docstring).

    ``url`` is a ``redis://`` (or ``rediss://``) URL; ``prefix`` starts every channel
    name (one per room: ``<prefix>room:<room>``), so deployments or test runs sharing a
    Redis never hear each other; ``node`` names this node in its bus id.
    ``on_resync(room)`` is called when the remote events of ``room`` may have been missed
    (its subscription just became active, at first or after a reconnect).

    Counters: ``published`` (events published here), ``sent`` (handed to Redis),
    ``received`` (remote events delivered here), ``dropped`` (outbox overflow),
    ``malformed`` (messages that did not decode), ``reconnects``.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        node: str = "node",
        prefix: str = "roomsync:",
        on_resync: Callable[[str], None] | None = None,
        outbox_max: int = 10_000,
        ping_interval_s: float = 5.0,
        retry_max_s: float = 2.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if outbox_max < 1:
            raise ValueError("outbox_max must be at least 1")
        self.url = url
        self.prefix = prefix
        self._on_resync = on_resync
        self._on_signal: SignalHandler | None = None
        self.outbox_max = outbox_max
        self.ping_interval_s = ping_interval_s
        self.retry_max_s = retry_max_s
        self.connect_timeout_s = connect_timeout_s
        #: This bus instance on the wire (its own messages come back and are dropped).
        self.origin = f"{node}/{secrets.token_hex(6)}"
        self.published = self.sent = self.received = 0
        self.dropped = self.malformed = self.reconnects = 0
        self.signals_sent = self.signals_received = 0
        self._subs: dict[str, list[_RedisSubscription]] = {}
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._inflight = 0
        self._pub: aioredis.Redis | None = None
        self._sub: aioredis.Redis | None = None
        self._pubsub: aioredis.client.PubSub | None = None
        self._requested: set[str] = set()  # channels SUBSCRIBEd on the current connection
        self._active: set[str] = set()  # channels Redis confirmed
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_sender = asyncio.Event()
        self._wake_control = asyncio.Event()
        self._progress = asyncio.Event()
        self._closing = False
        self._open = False
        self._sub_up = False
        self._pub_up = False
        self._last_error = ""

    def __repr__(self) -> str:
        return f"RedisBus({redact_dsn(self.url)!r}, prefix={self.prefix!r})"

    def channel(self, room: str) -> str:
        """The channel of ``room``'s events."""
        return f"{self.prefix}room:{room}"

    @property
    def _control_channel(self) -> str:
        # Always subscribed: a connection with no room still reads (pongs, liveness).
        return f"{self.prefix}bus"

    # -- lifecycle ----------------------------------------------------------------------

    def _client(self) -> aioredis.Redis:
        # No retries inside redis-py: this bus reconnects itself and resubscribes knowing
        # what it missed (on_resync).
        return aioredis.Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self.connect_timeout_s,
            socket_keepalive=True,
        )

    async def open(self) -> None:
        """Connect both connections; :class:`BusError` when Redis cannot be reached (a
        misconfigured URL fails the node's start). Idempotent."""
        if self._open:
            return
        self._closing = False
        self._pub, self._sub = self._client(), self._client()
        try:
            await asyncio.wait_for(self._pub.ping(), self.connect_timeout_s)
        except _ERRORS as exc:
            await self._release()
            raise BusError(f"redis bus {redact_dsn(self.url)}: cannot connect: {exc}") from exc
        self._pub_up = True
        self._open = True
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read_loop(), name="roomsync-bus-reader"),
            loop.create_task(self._send_loop(), name="roomsync-bus-sender"),
            loop.create_task(self._control_loop(), name="roomsync-bus-control"),
        ]
        try:
            await self._until(lambda: self._sub_up, self.connect_timeout_s)
        except BusError:
            await self.close()
            raise

    async def close(self) -> None:
        """Send what the outbox holds (briefly), end every subscription, disconnect."""
        if not self._open:
            return
        if self._pub_up:
            try:
                await self._until(lambda: not self._outbox and not self._inflight, 1.0)
            except BusError:
                pass  # Redis is gone: what is left is lost (receivers resync by seq)
        self._closing = True
        self._open = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        self._subs.clear()
        self._outbox.clear()
        await self._release()

    async def _release(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            except _ERRORS:
                pass
        for client in (self._pub, self._sub):
            if client is not None:
                try:
                    await client.aclose()
                except _ERRORS:
                    pass
        self._pub = self._sub = None
        self._sub_up = self._pub_up = False
        self._requested, self._active = set(), set()

    async def check(self) -> None:
        """:class:`BusError` unless both connections are up and Redis answers a PING."""
        if not self._open or self._pub is None:
            raise BusError("redis bus is not open")
        if not self._sub_up:
            raise BusError(f"redis bus: subscription connection down: {self._last_error}")
        for attempt in (1, 2):
            try:
                await asyncio.wait_for(self._pub.ping(), self.connect_timeout_s)
                break
            except _ERRORS as exc:
                # The first failure may be a pooled connection that went stale while
                # Redis was away; the second try connects afresh.
                if attempt == 2:
                    raise BusError(f"redis bus {redact_dsn(self.url)}: {exc}") from exc
        if not self._pub_up:
            raise BusError(f"redis bus: publishing connection down: {self._last_error}")

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until every event published so far was handed to Redis and every
        subscription made so far is active (tests, and a host that must know a room's
        remote events now reach it); :class:`BusError` after ``timeout`` seconds."""
        await self._until(
            lambda: (
                self._sub_up
                and not self._outbox
                and not self._inflight
                and {self.channel(r) for r in self._subs} <= self._active
            ),
            timeout,
        )

    async def _until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise BusError(f"redis bus: not settled after {timeout} s ({self._last_error})")
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), min(left, 0.25))
            except TimeoutError:
                pass

    # -- publishing ---------------------------------------------------------------------

    def publish(self, event: RoomEvent) -> None:
        self.published += 1
        subs = self._subs.get(event.room)
        if subs:
            for sub in list(subs) if len(subs) > 1 else subs:
                try:
                    sub.handler(event)
                except Exception:
                    log.exception("bus subscriber of room %s failed", event.room)
        if not self._open:
            return
        wire = _Wire(
            _VERSION,
            self.origin,
            event.room,
            event.node,
            list(event.authors),
            encode_pack(event.changes),
        )
        self._outbox.append((self.channel(event.room), _encoder.encode(wire)))
        while len(self._outbox) > self.outbox_max:
            self._outbox.popleft()
            self.dropped += 1
        self._wake_sender.set()

    def signal(self, sig: Signal) -> None:
        """Queue ``sig`` for the other nodes, on the deployment's control channel (every
        node hears it), behind the events published before it."""
        if not self._open:
            return
        wire = _SignalWire(
            _VERSION, self.origin, sig.kind, sig.node, sig.room, msgspec.json.encode(sig.data)
        )
        self._outbox.append((self._control_channel, _encoder.encode(wire)))
        self.signals_sent += 1
        while len(self._outbox) > self.outbox_max:
            self._outbox.popleft()
            self.dropped += 1
        self._wake_sender.set()

    def on_signal(self, handler: SignalHandler | None) -> None:
        self._on_signal = handler

    def on_resync(self, handler: Callable[[str], None] | None) -> None:
        self._on_resync = handler

    async def _send_loop(self) -> None:
        backoff = 0.05
        while True:
            if not self._outbox:
                self._wake_sender.clear()
                await self._wake_sender.wait()
                continue
            batch = list(self._outbox)
            self._outbox.clear()
            self._inflight = len(batch)
            try:
                assert self._pub is not None
                pipe = self._pub.pipeline(transaction=False)
                for channel, data in batch:
                    pipe.publish(channel, data)
                await pipe.execute()
            except _ERRORS as exc:
                # Unconfirmed: send again, before what was published since (publish order).
                self._outbox.extendleft(reversed(batch))
                while len(self._outbox) > self.outbox_max:
                    self._outbox.popleft()
                    self.dropped += 1
                self._inflight = 0
                if self._pub_up:
                    log.warning("redis bus: publishing failed: %s", exc)
                self._pub_up = False
                self._last_error = str(exc)
                self._progress.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            backoff = 0.05
            self._inflight = 0
            self.sent += len(batch)
            self._pub_up = True
            self._progress.set()

    # -- subscribing --------------------------------------------------------------------

    def subscribe(self, room: str, handler: Handler) -> _RedisSubscription:
        sub = _RedisSubscription(self, room, handler)
        self._subs.setdefault(room, []).append(sub)
        self._wake_control.set()
        return sub

    def _drop(self, sub: _RedisSubscription) -> None:
        subs = self._subs.get(sub.room)
        if subs is not None and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[sub.room]
                self._wake_control.set()

    async def _control_loop(self) -> None:
        """Brings the connection's subscriptions to the rooms subscribed here."""
        while True:
            self._wake_control.clear()
            pubsub = self._pubsub
            if pubsub is not None and self._sub_up:
                wanted = {self.channel(r) for r in self._subs} | {self._control_channel}
                new, old = wanted - self._requested, self._requested - wanted
                try:
                    if new:
                        self._requested |= new
                        await pubsub.subscribe(*sorted(new))
                    if old:
                        self._requested -= old
                        await pubsub.unsubscribe(*sorted(old))
                except _ERRORS as exc:
                    self._last_error = str(exc)  # the reader notices and reconnects
            await self._wake_control.wait()

    async def _read_loop(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._read_connection()
            except _ERRORS as exc:
                self._last_error = str(exc) or type(exc).__name__
            if self._sub_up:
                log.warning("redis bus: subscription connection lost: %s", self._last_error)
            self._sub_up = False
            self._requested, self._active = set(), set()
            pubsub, self._pubsub = self._pubsub, None
            if pubsub is not None:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                except _ERRORS:
                    pass
            self._progress.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.retry_max_s)
            self.reconnects += 1

    async def _read_connection(self) -> None:
        """One subscription connection, from SUBSCRIBE until it fails."""
        assert self._sub is not None
        pubsub = self._sub.pubsub()
        self._pubsub = pubsub
        wanted = {self.channel(r) for r in self._subs} | {self._control_channel}
        self._requested = set(wanted)
        await asyncio.wait_for(pubsub.subscribe(*sorted(wanted)), self.connect_timeout_s)
        last_heard = last_ping = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=min(1.0, self.ping_interval_s))
            now = time.monotonic()
            if message is None:
                if now - last_heard > 3 * self.ping_interval_s:
                    raise ConnectionError("no answer from Redis to pings")
                if now - last_ping >= self.ping_interval_s:
                    await pubsub.ping()
                    last_ping = now
                continue
            last_heard = now
            kind = message["type"]
            if kind == "message":
                self._deliver(message["data"])
            elif kind == "subscribe":
                channel = _text(message["channel"])
                self._active.add(channel)
                if channel == self._control_channel:
                    self._sub_up = True
                    self._wake_control.set()  # subscriptions made while it was down
                elif self._on_resync is not None:
                    self._resync(channel)
                self._progress.set()
            elif kind == "unsubscribe":
                self._active.discard(_text(message["channel"]))
                self._progress.set()

    def _resync(self, channel: str) -> None:
        room = channel.removeprefix(f"{self.prefix}room:")
        assert self._on_resync is not None
        try:
            self._on_resync(room)
        except Exception:
            log.exception("redis bus: on_resync of room %s failed", room)

    def _deliver(self, data: bytes) -> None:
        try:
            wire = _decoder.decode(data)
            if wire.v != _VERSION:
                raise ValueError(f"bus message version {wire.v}")
            if isinstance(wire, _SignalWire):
                sig = Signal(wire.kind, wire.node, wire.room, msgspec.json.decode(wire.data))
                if not isinstance(sig.data, dict):
                    raise ValueError("signal data is not an object")
                changes: tuple[Change, ...] = ()
            else:
                changes = tuple(decode_pack(wire.pack))
                if len(wire.authors) != len(changes):
                    raise ValueError("authors do not match changes")
        except Exception as exc:  # another version or garbage: never the reader's end
            self.malformed += 1
            log.warning("redis bus: dropped a malformed message: %s", exc)
            return
        if wire.origin == self.origin:
            return  # delivered locally inside publish() / acted on by this node
        if isinstance(wire, _SignalWire):
            if self._on_signal is not None:
                self.signals_received += 1
                try:
                    self._on_signal(sig)
                except Exception:
                    log.exception("redis bus: the %s signal handler failed", sig.kind)
            return
        subs = self._subs.get(wire.room)
        if not subs:
            return
        event = RoomEvent(wire.room, changes, tuple(wire.authors), wire.node)
        self.received += 1
        for sub in list(subs) if len(subs) > 1 else subs:
            try:
                sub.handler(event)
            except Exception:
                log.exception("bus subscriber of room %s failed", event.room)


def _text(value: object) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
