"""``WS /ws/{room_id}``: one peer's connection, frame by frame (SPEC §2).

picows calls :class:`_Connection` once per frame (see ``listener.py``). A frame is decoded
(msgspec), checked by the core session, and dispatched to the room at once; the two kinds
of message that wait on I/O (``hello`` loads the room, blob messages touch the blob
backend) run as a task, and frames arriving meanwhile wait in order in an inbox (reading
pauses when it grows). Errors from the core carry their SPEC code and close code;
anything unexpected is logged and answered with ``internal`` + 1011, never a traceback.

Closing: the error frame (if any), then our CLOSE frame; the connection is dropped when
the peer's CLOSE arrives or after ``CLOSE_TIMEOUT_S``. Reading on until then means the
kernel never resets a connection with unread data, which could lose the error frame.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import struct
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest

from ..auth.tokens import Claims, check_room
from ..core import handshake
from ..core import messages as m
from ..core.codes import AuthReason, CloseCode, ErrorCode
from ..core.errors import (
    AuthError,
    MalformedEnvelope,
    Overload,
    RateLimited,
    RoomsyncError,
)
from ..core.ratelimit import RateLimiter, Verdict
from ..core.session import Phase, Session, hello_prefixes
from ..core.types import validate_room_id
from ..hooks import Allow, HelloContext, Refuse
from ..storage.base import StoreError
from .listener import socket_transport
from .logs import event
from .node import Node
from .outbox import Outbox, text_frame
from .peer import Peer
from .transport import encode_frame

if TYPE_CHECKING:
    from .capture import Direction
    from .rooms import RoomHost

log = logging.getLogger("roomsync.ws")
_BLOB_TYPES = frozenset({"blob-upload", "request-upload", "blob-uploaded", "blob-request"})
_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode
_OP_CLOSE = 0x8
_OP_PONG = 0xA
# What a control frame costs on the wire besides its payload (RFC 6455 §5.2, masked).
_CONTROL_OVERHEAD = 6
CLOSE_TIMEOUT_S = 5.0
# Frames waiting behind a hello or blob message before reading pauses.
_INBOX_PAUSE = 32


#: Our CLOSE frame on the wire: a 2-byte header and the 2-byte code (unmasked).
_CLOSE_FRAME_BYTES = 4


class _Binary:
    """A binary frame's payload waiting in the inbox (text payloads wait as bytes)."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


#: Frames that carry (part of) a message.
_MESSAGE_FRAMES = frozenset({WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION})


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def close_frame(code: int) -> bytes:
    return encode_frame(struct.pack("!H", code), _OP_CLOSE)


@functools.lru_cache(maxsize=4)
def too_big_error(max_frame_bytes: int) -> bytes:
    """The ``too-large`` error frame, shared by every connection."""
    return text_frame(
        {
            "type": "error",
            "code": "too-large",
            "message": f"frame larger than max_frame_bytes {max_frame_bytes}: split the pack",
        }
    )


class Endpoint:
    """picows's listener factory for ``/ws/{room_id}``: one :class:`_Connection` each."""

    def __init__(self, server: Node) -> None:
        self.server = server

    def __call__(self, request: WSUpgradeRequest) -> _Connection | None:
        path = request.path.split(b"?", 1)[0]
        segment = path[4:]  # the router only sends paths under /ws/
        if not segment or b"/" in segment:
            return None  # 404, as for any other unknown path
        return _Connection(self.server, unquote(segment.decode("utf-8", "replace")))


class _Connection(WSListener):
    """One WebSocket connection from upgrade to disconnect."""

    __slots__ = (
        "_busy",
        "_cleaned",
        "_closer",
        "_deadline",
        "_disconnected",
        "_fragments",
        "_fragments_binary",
        "_fragments_size",
        "_headers",
        "_inbox",
        "_paused",
        "close_code",
        "host",
        "out",
        "peer",
        "room_arg",
        "server",
        "session",
        "ws",
    )

    def __init__(self, server: Node, room_arg: str) -> None:
        self.server = server
        self.room_arg = room_arg
        self.ws: WSTransport | None = None
        # Until the hello names a room, the global effective policy applies (policy set).
        self.out = Outbox(server.policy.stream_budget_bytes, server.metrics, self._overflow)
        self.peer: Peer | None = None
        self.host: RoomHost | None = None
        self.close_code: int | None = None
        self._busy: asyncio.Task[None] | None = None
        self._inbox: deque[bytes | _Binary] | None = None
        self._paused = False
        self._fragments: list[bytes] | None = None
        self._fragments_size = 0
        self._fragments_binary = False
        self._deadline: asyncio.TimerHandle | None = None
        self._closer: asyncio.TimerHandle | None = None
        self._disconnected = False
        self._cleaned = False
        #: The upgrade request's headers, kept until the hello only for an app's
        #: ``authorize`` hook (cookies, say); None otherwise.
        self._headers: dict[str, str] | None = None
        policy = server.policy
        now = server.now_ms()
        timing = server.settings.server
        self.session = Session(
            session=_new_id("s"),
            peer=_new_id("p"),
            room="",
            limiter=RateLimiter.from_policy(policy, now_ms=now),
            now_ms=now,
            hello_timeout_ms=timing.hello_timeout_ms,
            heartbeat_ms=timing.heartbeat_ms,
        )

    # -- picows callbacks ------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.ws = transport
        self.out.transport = socket_transport(transport.underlying_transport)
        # picows keeps the upgrade request and response for the connection's lifetime;
        # their header maps are ~1 KB per connection that nothing reads after the upgrade
        # (but an app's authorize hook, which gets a copy until the hello).
        request = transport.request
        if self.server.hooks.authorizes and request is not None and request.headers:
            self._headers = {str(k).lower(): str(v) for k, v in request.headers.items()}
        for message in (transport.request, transport.response):
            if message is not None:
                message.headers = None  # type: ignore[assignment]  # read by nobody after this
        server = self.server
        server.connection_opened(self)
        try:
            refusal = server.admission_refusal(self)
            if refusal is not None:
                self.fail(refusal)
                return
            self.session.room = validate_room_id(self.room_arg)
        except RoomsyncError as exc:
            self.fail(exc)
            return
        except Exception:
            self._internal_error()
            return
        server.awaiting_hello(self)
        self._arm()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        try:
            self._on_ws_frame(frame)
        except Exception:
            self._internal_error()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._disconnected = True
        if self.close_code is None:
            handshake = transport.close_handshake
            sent = handshake.sent if handshake is not None else None
            if sent is not None and sent.code.value == int(CloseCode.TOO_BIG):
                # picows refused a frame over max_frame_bytes (our error frame went first).
                self._closed(int(CloseCode.TOO_BIG), "too-large")
            else:
                # no CLOSE frame: the connection just dropped
                self._closed(1006, None, dir="in", size=0)
        if self._busy is None:
            self._cleanup()
        # else: the running hello/blob task cleans up when it ends

    # -- frames --------------------------------------------------------------------------

    def _on_ws_frame(self, frame: WSFrame) -> None:
        now = self.server.now_ms()
        self.session.seen(now)
        kind = frame.msg_type
        if self.close_code is not None:  # closing: wait for the peer's CLOSE, drop the rest
            if kind is WSMsgType.CLOSE:
                self.drop()
            return
        if kind is WSMsgType.TEXT and frame.fin and self._fragments is None:
            self._received(frame.get_payload_as_bytes(), now)  # the usual, whole message
        elif kind is WSMsgType.BINARY and frame.fin and self._fragments is None:
            self._received(_Binary(frame.get_payload_as_bytes()), now)  # a binary pack
        elif kind in _MESSAGE_FRAMES:
            self._fragment(frame, now)
        elif kind is WSMsgType.PING:
            self._control(frame.get_payload_as_bytes(), now, answer=True)
        elif kind is WSMsgType.PONG:
            self._control(b"", now, answer=False)
        elif kind is WSMsgType.CLOSE:
            code = int(frame.get_close_code().value) or int(CloseCode.NORMAL)
            self._closed(code, None, dir="in", size=len(frame.get_payload_as_bytes()))
            self._log("session.closed_by_peer", code=code)
            echo = code if 1000 <= code < 5000 and code not in (1005, 1006) else 1000
            self.out.write(close_frame(echo))
            self.drop()

    def _control(self, payload: bytes, now: int, *, answer: bool) -> None:
        """A PING (answered with a PONG) or PONG from the peer, counted like data.

        Control frames take from the same token bucket as messages (refused: no PONG;
        held past the grace: 4008), and the PONG they cause counts against the stream
        budget (4001), so a peer that pings and never reads cannot take memory from others.
        """
        metrics = self.server.metrics
        verdict = self.session.limiter.check(len(payload) + _CONTROL_OVERHEAD, now)
        if verdict is Verdict.CLOSE:
            metrics.rate_limited.inc()
            self.fail(RateLimited("rate limit exceeded (control frames) past the grace period"))
            return
        if verdict is Verdict.REFUSE:
            metrics.rate_limited.inc()
            return
        if not answer:
            return
        self.out.control(encode_frame(payload, _OP_PONG))

    def _overflow(self, message: str) -> None:
        """The outbox passed the stream budget, or the peer stalled during an answer."""
        self.close(
            int(CloseCode.RESYNC_REQUIRED),
            {
                "type": "error",
                "code": str(ErrorCode.RESYNC_REQUIRED),
                "message": message,
                "reason": "stream-budget",
            },
        )

    def _fragment(self, frame: WSFrame, now: int) -> None:
        """A message split over several frames (RFC 6455 §5.4), bounded like one frame."""
        kind = frame.msg_type
        if self._fragments is None:
            if kind is WSMsgType.CONTINUATION:
                self.fail(MalformedEnvelope("continuation frame without a first frame"))
                return
            self._fragments, self._fragments_size = [], 0
            self._fragments_binary = kind is WSMsgType.BINARY
        elif kind is not WSMsgType.CONTINUATION:
            self.fail(MalformedEnvelope("a new message started inside a fragmented one"))
            return
        payload = frame.get_payload_as_bytes()
        self._fragments.append(payload)
        self._fragments_size += len(payload)
        limit = self.server.settings.server.max_frame_bytes
        if self._fragments_size > limit:
            self._fragments = None
            error = too_big_error(limit)
            self.out.write(error)
            if self.out.capture is not None:
                self.out.capture.record_frame(
                    self.peer_id, "error", len(error), "code", "too-large"
                )
            self.server.metrics.errors.labels("too-large").inc()
            self.close(int(CloseCode.TOO_BIG))
            return
        if frame.fin:
            parts, self._fragments = self._fragments, None
            whole = b"".join(parts)
            self._received(_Binary(whole) if self._fragments_binary else whole, now)

    def _received(self, payload: bytes | _Binary, now: int) -> None:
        if self._busy is not None:  # a hello or blob message is still running: wait
            inbox = self._inbox
            if inbox is None:
                inbox = self._inbox = deque()
            inbox.append(payload)
            if len(inbox) >= _INBOX_PAUSE and not self._paused:
                self._paused = True
                self.out.pause_reading()
            return
        self._process(payload, now)

    def _process(self, payload: bytes | _Binary, now: int) -> None:
        metrics = self.server.metrics
        if self.host is not None and self.peer is not None:
            self.host.touch(self.peer, now)  # an application heartbeat (SPEC §5)
        if isinstance(payload, _Binary):
            self._on_binary(payload.payload, now)
            return
        size = len(payload)
        try:
            obj = _decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            # msgspec raises RecursionError for JSON nested past its depth limit.
            metrics.msg_in("invalid")
            self.fail(self.session.undecodable(str(exc)))
            return
        del payload
        try:
            pending = self._on_frame(obj, size, now)
        except RoomsyncError as exc:
            self.fail(exc)
            return
        if pending is not None:
            msg, work = pending
            self._busy = asyncio.get_running_loop().create_task(self._await(msg, work))

    async def _await(self, msg: m.Message, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except StoreError as exc:
            # A backend failure is the operator's to read (it may name files), the peer's
            # to retry: logged in full, answered as a retryable overload.
            self.server.metrics.store_errors.inc()
            self._log("store.failed", level=logging.ERROR, ref=msg.type, error=str(exc))
            self._message_failed(
                msg, Overload("the store failed; retry", retry_after_ms=self.server.retry_hint_ms())
            )
        except RoomsyncError as exc:
            self._message_failed(msg, exc)
        except Exception:
            self._internal_error()
        finally:
            self._busy = None
        if self._disconnected:
            self._cleanup()
            return
        inbox = self._inbox
        while inbox and self._busy is None and self.close_code is None:
            try:
                self._process(inbox.popleft(), self.server.now_ms())
            except Exception:
                self._internal_error()
        if self._paused and (not inbox or len(inbox) < _INBOX_PAUSE // 2):
            self._paused = False
            self.out.resume_reading()

    def _arm(self) -> None:
        """Sleep until the hello deadline or the token's expiry
        (:meth:`Session.timer_deadline`); liveness is checked at every heartbeat by
        :meth:`check_deadlines`, so an idle welcomed peer holds no timer."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        at = self.session.timer_deadline()
        if at is not None and self.close_code is None:
            delay = max(0.0, (at - self.server.now_ms()) / 1000)
            self._deadline = asyncio.get_running_loop().call_later(delay, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline = None
        if not self.check_deadlines(self.server.now_ms()):
            self._arm()

    def check_deadlines(self, now_ms: int) -> bool:
        """Close the connection if one of the session's deadlines has passed (as the core
        says: :meth:`Session.due`); True when it was closed."""
        if self.close_code is not None:
            return True
        due = self.session.due(now_ms)
        if due is None:
            return False
        if self.session.phase is Phase.AWAIT_HELLO:
            self.shed(due)
        else:
            self.fail(due)
        return True

    def shed(self, exc: RoomsyncError) -> None:
        """Close a connection that never sent ``hello``: the error and CLOSE are written,
        then the connection ends at once (no wait for the peer's CLOSE), so it gives its
        slot back right away."""
        self.fail(exc)
        self.drop(graceful=False)

    # -- closing -------------------------------------------------------------------------

    def close(self, code: int, error: dict[str, Any] | None = None) -> None:
        """Send ``error`` (if any), then close with ``code``; safe to call more than once."""
        if self.close_code is not None:
            return
        if error is not None:
            self.server.metrics.errors.labels(str(error.get("code"))).inc()
            frame = text_frame(error)
            self.out.write(frame)
            if self.out.capture is not None:
                self.out.capture.record_out(self.peer_id, error, len(frame))
        self._closed(code, error)
        self._log(
            "session.close",
            code=code,
            error=(error or {}).get("code"),
            message=(error or {}).get("message"),
        )
        self.out.write(close_frame(code))
        self._closer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self._close_timeout)

    def _closed(
        self,
        code: int,
        error: dict[str, Any] | str | None,
        *,
        dir: Direction = "out",
        size: int = _CLOSE_FRAME_BYTES,
    ) -> None:
        """Record the close code once, with its metrics and in the room's capture
        (``dir`` ``in``: the peer closed or the connection dropped)."""
        self.close_code = code
        self.out.closing = True  # nothing but the error and CLOSE is written from now on
        metrics = self.server.metrics
        metrics.closed(code)
        if isinstance(error, str):
            metrics.errors.labels(error).inc()
        elif error is not None and error.get("code") == "resync-required":
            metrics.resyncs.labels(str(error.get("reason", "retention"))).inc()
        capture = self.out.capture
        if capture is not None:
            error_code = error if isinstance(error, str) or error is None else error.get("code")
            capture.record_close(
                dir, self.peer_id, code, error_code if isinstance(error_code, str) else None, size
            )

    def drop(self, *, graceful: bool = True) -> None:
        """End the TCP connection: after what is queued is written, or (``graceful``
        False) at once, for a peer that will not read what is queued."""
        if self.ws is not None:
            self.ws.disconnect(graceful)

    def _close_timeout(self) -> None:
        """The peer did not answer our CLOSE in time: end the connection, dropping
        whatever it never read."""
        self._closer = None
        self.drop(graceful=self.out.queued_bytes() == 0)

    def _internal_error(self) -> None:
        self._log("session.internal_error", level=logging.ERROR)
        log.exception("unexpected error in session %s", self.session.session)
        self.close(
            int(CloseCode.INTERNAL),
            {"type": "error", "code": "internal", "message": "internal server error"},
        )

    @property
    def peer_id(self) -> str:
        """The peer id (assigned at connect, announced in ``welcome``)."""
        return self.session.peer

    def _log(self, name: str, *, level: int = logging.INFO, **fields: Any) -> None:
        """A structured log event about this session (room, peer, session filled in)."""
        session = self.session
        event(
            log,
            name,
            level=level,
            room=session.room,
            peer=session.peer,
            session=session.session,
            **fields,
        )

    def _peer_closed(self, peer: Peer, code: CloseCode, error: dict[str, Any] | None) -> None:
        self.close(int(code), error)

    def fail(self, exc: RoomsyncError, ref: str | None = None, hash: str | None = None) -> None:
        fields: dict[str, Any] = {"type": "error", **exc.to_error_fields()}
        if ref is not None:
            fields["ref"] = ref
        if hash is not None:
            fields["hash"] = hash  # errors about a blob name it, so clients can match them
        if exc.close is None:
            self.server.metrics.errors.labels(str(exc.code)).inc()
            self.send(fields)
        else:
            self.close(int(exc.close), fields)

    def send(self, obj: dict[str, Any]) -> None:
        self.out.send(obj)
        self.server.metrics.msg_out(str(obj.get("type")))

    # -- messages ------------------------------------------------------------------------

    def _on_frame(
        self, obj: Any, nbytes: int, now: int
    ) -> tuple[m.Message, Coroutine[Any, Any, None]] | None:
        """Handle one decoded frame now; a message that waits on I/O comes back as
        (message, coroutine) for :meth:`_await`."""
        metrics = self.server.metrics
        type_ = obj.get("type") if isinstance(obj, dict) else None
        metrics.msg_in(type_ if isinstance(type_, str) and len(type_) < 32 else "invalid")
        capture = self.out.capture
        if capture is not None and type_ is not None:
            # Before the session checks it: a refused message shows, then its error.
            capture.record_in(self.peer_id, obj, nbytes)
        try:
            msg = self.session.receive(obj, nbytes, now)
        except RoomsyncError as exc:
            if exc.code is ErrorCode.RATE_LIMITED:
                metrics.rate_limited.inc()
            if type_ == "pack":
                self._refuse_pack(exc)
            self.fail(exc, ref=type_ if isinstance(type_, str) else None)
            return None
        if isinstance(msg, m.Hello):
            return msg, self._on_hello(msg, now, obj, nbytes)
        if msg.type in _BLOB_TYPES:
            assert self.host is not None and self.peer is not None
            return msg, self.server.blobs.handle(self.host, self.peer, msg, now)
        try:
            self._dispatch(msg)
        except RoomsyncError as exc:
            self._message_failed(msg, exc)
        return None

    def _on_binary(self, payload: bytes, now: int) -> None:
        """A binary frame: a ``pack`` when the session negotiated ``binary``
        (:mod:`roomsync.core.binpack`), refused as a text ``pack`` would be otherwise."""
        metrics = self.server.metrics
        # A binary pack counts as a pack; any other binary frame as "binary".
        is_pack = payload[:1] == b"\x01" and "binary" in self.session.caps
        metrics.msg_in("pack" if is_pack else "binary")
        capture = self.out.capture
        if capture is not None:
            capture.record_in(
                self.peer_id, {"type": "pack", "data": payload[1:11], "binary": True}, len(payload)
            )
        try:
            msg = self.session.receive_binary(payload, now)
        except RoomsyncError as exc:
            if exc.code is ErrorCode.RATE_LIMITED:
                metrics.rate_limited.inc()
            self._refuse_pack(exc)
            self.fail(exc, ref="pack")
            return
        try:
            self._dispatch(msg)
        except RoomsyncError as exc:
            self._message_failed(msg, exc)

    def _message_failed(self, msg: m.Message, exc: RoomsyncError) -> None:
        if msg.type == "pack":
            self._refuse_pack(exc)
        blob_hash = getattr(msg, "hash", None)
        self.fail(exc, ref=msg.type, hash=blob_hash if isinstance(blob_hash, str) else None)

    def _refuse_pack(self, exc: RoomsyncError) -> None:
        """Every pack gets its ack, also one refused as a whole (malformed, too large,
        rate-limited, forbidden): ``seqs: []`` and ``refused[{index: -1, code}]``, in order
        with the acks of the packs before it. Never a silently dropped write."""
        if exc.close is None and self.host is not None and self.peer is not None:
            self.host.refuse_pack(self.peer, str(exc.code), exc.message)

    # -- handshake -------------------------------------------------------------------------

    async def _on_hello(self, hello: m.Hello, now: int, raw: dict[str, Any], nbytes: int) -> None:
        """The I/O around :mod:`roomsync.core.handshake`: load the room, verify the token,
        then admit and welcome as the core decides. From the room's load on, this
        connection's traffic is recorded in the room's capture (``raw`` is the hello as
        received, ``nbytes`` its size)."""
        server = self.server
        metrics = server.metrics
        try:
            handshake.check_version(hello)
            prefixes = hello_prefixes(hello)
        except RoomsyncError:
            metrics.handshakes.labels("refused").inc()
            raise
        room = self.session.room
        try:
            host = await server.rooms.acquire(room)
        except StoreError as exc:
            metrics.store_errors.inc()
            raise Overload(f"room could not be loaded: {exc}", retry_after_ms=1000) from None
        self.host = host  # released by _cleanup, also when the peer left meanwhile
        if self._disconnected or self.close_code is not None:
            return
        self.out.capture = host.capture
        self.out.peer = self.peer_id
        host.capture.record_in(self.peer_id, raw, nbytes)
        policy = host.policy
        view = handshake.RoomView(
            room=room,
            locked=host.record.locked,
            closed=host.record.closed or host.closed,
            failed=host.failed is not None,
            peers=len(host.peers),
            max_peers=policy.max_peers,
            durable_head=host.head,
            compacted_through=host.state.compacted_through,
            anonymous_caps=tuple(policy.anonymous_caps),
        )
        try:
            grant, claims = await self._authorize(hello, view, now, raw)
            admission = handshake.admit(
                hello,
                view,
                grant,
                fallback_actor=self.session.peer,
                retry_after_ms=server.retry_hint_ms(),
            )
        except AuthError as exc:
            metrics.auth.labels(exc.reason.value).inc()
            metrics.handshakes.labels("refused").inc()
            raise
        except RoomsyncError:
            metrics.handshakes.labels("refused").inc()
            raise
        metrics.auth.labels(admission.outcome).inc()
        self.session.open(
            caps=admission.caps, actor=admission.actor, prefixes=prefixes, exp_ms=admission.exp_ms
        )
        self.out.budget = policy.stream_budget_bytes
        self.out.binary = "binary" in self.session.caps
        self.session.limiter.reconfigure(policy, now_ms=now)  # the room's rates from here on
        peer = Peer(self.session, self.out, on_close=self._peer_closed)
        peer.actor_bound = admission.bound
        peer.token_jti = grant.jti if grant is not None else None
        if server.hooks.wants_claims:
            peer.claims = claims
        self.peer = peer
        server.hello_done(self)
        self._arm()  # the hello deadline is gone; the token's expiry may be the next one
        self.send(
            handshake.welcome(
                session=self.session.session,
                peer=peer.id,
                room=room,
                admission=admission,
                head=host.head,
                root=host.state.root,
                heartbeat_ms=server.settings.server.heartbeat_ms,
                limits=host.welcome_limits(server.settings.server.max_frame_bytes),
                presence=server.presence_snapshot(host),
                node=server.name,
            )
        )
        metrics.handshakes.labels("welcome").inc()
        metrics.peers.inc()
        self._log(
            "session.welcome",
            actor=admission.actor,
            caps=list(admission.caps),
            cursor=hello.cursor,
            head=host.head,
        )
        host.join(peer, hello.cursor, catchup=hello.catchup is not False)

    async def _authorize(
        self, hello: m.Hello, view: handshake.RoomView, now: int, raw: dict[str, Any]
    ) -> tuple[handshake.TokenGrant | None, Claims | None]:
        """What the hello is granted, and its verified claims: roomsync's token check,
        then the app's ``authorize`` hook when it has one (``docs/hooks.md``), which may
        admit what the check refused, refuse what it admitted, or keep its decision."""
        hooks = self.server.hooks
        room = view.room
        token_error: AuthError | None = None
        grant: handshake.TokenGrant | None = None
        claims: Claims | None = None
        try:
            grant, claims = self._verify_token(hello, room, now)
        except AuthError as exc:
            if not hooks.authorizes:
                raise
            token_error = exc
        if not hooks.authorizes:
            return grant, claims
        if grant is None and token_error is None:
            token_error = handshake.anonymous_refusal(view)
        headers, self._headers = self._headers or {}, None
        peername = self.out.transport.get_extra_info("peername") if self.out.transport else None
        decision = await hooks.authorize(
            HelloContext(
                room=room,
                peer=self.session.peer,
                actor=hello.actor,
                caps=tuple(hello.caps) if hello.caps is not None else None,
                token=hello.token or None,
                claims=claims,
                token_error=token_error.message if token_error is not None else None,
                fields=raw,
                headers=headers,
                remote=str(peername[0]) if isinstance(peername, tuple) and peername else None,
            )
        )
        if self._disconnected or self.close_code is not None:
            raise AuthError("the connection ended during authorize", reason=AuthReason.APP)
        if isinstance(decision, Refuse):
            raise AuthError(decision.reason or "refused by the app", reason=AuthReason.APP)
        if isinstance(decision, Allow):
            return (
                handshake.TokenGrant(
                    sub=decision.actor,
                    caps=decision.caps,
                    exp_ms=grant.exp_ms if grant is not None else None,
                    jti=grant.jti if grant is not None else None,
                ),
                claims,
            )
        if token_error is not None:
            raise token_error
        return grant, claims

    def _verify_token(
        self, hello: m.Hello, room: str, now: int
    ) -> tuple[handshake.TokenGrant | None, Claims | None]:
        """The hello's token checked (signature, expiry, room, revocation) and its
        claims, or (None, None) when it sent none; AuthError otherwise."""
        if not hello.token:
            return None, None
        server = self.server
        claims = server.tokens.verify(hello.token, now_s=now / 1000)
        check_room(claims, room)
        if server.is_revoked(claims, now):
            raise AuthError("token revoked", reason=AuthReason.REVOKED)
        exp_ms = claims.exp * 1000 if claims.exp is not None else None
        grant = handshake.TokenGrant(
            sub=claims.sub, caps=claims.caps, exp_ms=exp_ms, jti=claims.jti
        )
        return grant, claims

    # -- messages after welcome ------------------------------------------------------------

    def _dispatch(self, msg: m.Message) -> None:
        host = self.host
        peer = self.peer
        assert host is not None and peer is not None
        if isinstance(msg, m.PackMsg):
            host.submit_pack(peer, msg.data)
        elif isinstance(msg, m.Request):
            if msg.paths is not None:
                host.answer_paths(peer, msg.paths)
            else:
                host.answer_since(peer, msg.since or 0)
        elif isinstance(msg, m.Subscribe):
            host.resubscribe(peer, msg.paths)
        elif isinstance(msg, m.MstRoot):
            self.send(host.mst_root())
        elif isinstance(msg, m.MstGet):
            self.send(host.mst_nodes(msg.hashes))
        elif isinstance(msg, m.MstProbe):
            self.send(host.mst_sketch(msg.data))
        elif isinstance(msg, m.Presence):
            host.set_presence(peer, msg.state, len(_json_encode(msg.state)))
        elif isinstance(msg, m.Ping):
            self.send({"type": "pong"})
        elif isinstance(msg, m.Pong):
            pass

    def _cleanup(self) -> None:
        """Leave the room and forget the connection; runs once, after the disconnect."""
        if self._cleaned:
            return
        self._cleaned = True
        for timer in (self._deadline, self._closer):
            if timer is not None:
                timer.cancel()
        self._deadline = self._closer = None
        self._inbox = None
        peer = self.peer
        host = self.host
        self.out.closing = True
        if peer is not None:
            if host is not None and peer in host.peers:
                host.leave(peer)
                self.server.metrics.peers.dec()
        if host is not None:
            self.host = None
            self.server.rooms.release(host)
        self.session.close()
        self.server.hello_done(self)
        self.server.connection_closed(self)
