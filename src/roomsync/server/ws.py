"""``WS /ws/{room_id}``: the socket loop of one peer (SPEC §2).

The loop only moves frames: it decodes JSON, asks the core session whether the message is
acceptable now, and dispatches it to the room. Errors from the core carry their SPEC code
and close code; anything unexpected is logged and answered with ``internal`` + 1011,
never with a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from ..auth.caps import SUPPORTED_DATA_CAPS, negotiate
from ..auth.tokens import check_room
from ..core import messages as m
from ..core.codec import PROTOCOL_VERSION
from ..core.codes import CloseCode, ErrorCode
from ..core.errors import (
    AuthError,
    ExpectedHello,
    MalformedEnvelope,
    Overload,
    RoomClosed,
    RoomsyncError,
    UnsupportedVersion,
)
from ..core.ratelimit import RateLimiter
from ..core.session import Phase, Session, hello_prefixes
from ..core.types import validate_room_id
from ..storage.base import StoreError
from .logs import event
from .peer import Peer, text_frame
from .transport import Outbound, RoomsyncWebSocket

if TYPE_CHECKING:
    from .app import RoomsyncServer
    from .rooms import RoomHost

log = logging.getLogger("roomsync.ws")
_BLOB_TYPES = frozenset({"blob-upload", "request-upload", "blob-uploaded", "blob-request"})
_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


async def websocket_handler(server: RoomsyncServer, request: web.Request) -> web.StreamResponse:
    settings = server.settings.server
    # decode_text=False: text frames arrive as bytes that msgspec parses directly (UTF-8 is
    # validated there), sparing a str copy of every frame.
    ws = RoomsyncWebSocket(
        autoping=False,
        max_msg_size=settings.max_frame_bytes,
        timeout=5.0,
        compress=False,
        decode_text=False,
    )
    ws.too_big_error = _too_big_error(settings.max_frame_bytes)
    await ws.prepare(request)
    conn = _Connection(server, ws, request)
    server.connection_opened(conn)
    try:
        await conn.run(request.match_info["room_id"])
    finally:
        server.connection_closed(conn)
    return ws


@functools.lru_cache(maxsize=4)
def _too_big_error(max_frame_bytes: int) -> bytes:
    """The ``too-large`` error frame payload, shared by every connection."""
    return _json_encode(
        {
            "type": "error",
            "code": "too-large",
            "message": f"frame larger than max_frame_bytes {max_frame_bytes}: split the pack",
        }
    )


class _Connection:
    """One WebSocket connection from accept to close."""

    __slots__ = (
        "_closing_task",
        "close_code",
        "host",
        "last_seen_ms",
        "out",
        "peer",
        "request",
        "server",
        "session",
        "ws",
    )

    def __init__(self, server: RoomsyncServer, ws: RoomsyncWebSocket, request: web.Request):
        self.server = server
        self.ws = ws
        self.request = request
        self.peer: Peer | None = None
        self.host: RoomHost | None = None
        self.close_code: int | None = None
        self._closing_task: asyncio.Task[None] | None = None
        policy = server.settings.policy
        now = server.now_ms()
        self.session = Session(
            session=_new_id("s"),
            peer=_new_id("p"),
            room="",
            limiter=RateLimiter(
                messages_per_s=policy.rate_messages_per_s,
                burst_messages=policy.rate_burst_messages,
                bytes_per_s=policy.rate_bytes_per_s,
                burst_bytes=policy.rate_burst_bytes,
                grace_ms=policy.rate_grace_ms,
                now_ms=now,
            ),
        )
        self.out = Outbound(request.transport)
        self.last_seen_ms = now

    # -- closing -------------------------------------------------------------------------

    def close(self, code: int, error: dict[str, Any] | None = None) -> None:
        """Send ``error`` (if any), then close with ``code``; safe to call more than once."""
        if self.close_code is not None:
            return
        self.close_code = code
        m_ = self.server.metrics
        if error is not None:
            m_.errors.labels(str(error.get("code"))).inc()
            if self.peer is not None:
                self.peer.out.write(text_frame(error))
            else:
                self.out.write(text_frame(error))
        m_.closes.labels(str(code)).inc()
        if error and error.get("code") == "resync-required":
            m_.resyncs.labels(str(error.get("reason", "retention"))).inc()
        self._log(
            "session.close",
            code=code,
            error=(error or {}).get("code"),
            message=(error or {}).get("message"),
        )
        self._closing_task = asyncio.get_running_loop().create_task(self._close(code))

    async def _close(self, code: int) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=code), timeout=5.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            self.out.abort()

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
        if self.peer is not None:
            self.peer.send(obj)
        else:
            self.out.write(text_frame(obj))
        self.server.metrics.msg_out(str(obj.get("type")))

    # -- the loop ------------------------------------------------------------------------

    async def run(self, room_id: str) -> None:
        server = self.server
        try:
            if server.draining:
                self.close(
                    int(CloseCode.RESTARTING),
                    {
                        "type": "error",
                        "code": str(ErrorCode.DRAINING),
                        "message": "node is draining: reconnect, possibly to another node",
                    },
                )
            else:
                overload = server.admission_refusal()
                if overload is not None:
                    self.fail(overload)
                else:
                    self.session.room = validate_room_id(room_id)
                    await self._loop()
        except RoomsyncError as exc:
            self.fail(exc)
        except Exception:
            self._log(
                "session.internal_error",
                level=logging.ERROR,
            )
            log.exception("unexpected error in session %s", self.session.session)
            self.close(
                int(CloseCode.INTERNAL),
                {"type": "error", "code": "internal", "message": "internal server error"},
            )
        finally:
            await self._cleanup()

    async def _loop(self) -> None:
        ws = self.ws
        server = self.server
        metrics = server.metrics
        hello_deadline = server.settings.server.heartbeat_ms * 3 / 1000
        while self.close_code is None:
            try:
                if self.session.phase is Phase.AWAIT_HELLO:
                    msg = await asyncio.wait_for(ws.receive(), hello_deadline)
                else:
                    msg = await ws.receive()
            except TimeoutError:
                self.fail(ExpectedHello("no hello received in time"))
                return
            now = server.now_ms()
            self.last_seen_ms = now
            if self.peer is not None:
                self.peer.last_seen_ms = now
            kind = msg.type
            if kind is WSMsgType.TEXT:
                payload: bytes = msg.data
                size = len(payload)
                del msg  # large frames (inline blobs): keep as few copies alive as we can
                if self.host is not None and self.peer is not None:
                    self.host.touch(self.peer, now)  # an application heartbeat (SPEC §5)
                try:
                    obj = _decode(payload)
                except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                    metrics.msg_in("invalid")
                    if self.session.phase is Phase.AWAIT_HELLO:
                        self.fail(ExpectedHello("the first frame must be a JSON hello"))
                    else:
                        self.fail(MalformedEnvelope(f"frame is not valid JSON: {exc}"))
                    continue
                del payload
                await self._on_frame(obj, size, now)
            elif kind is WSMsgType.BINARY:
                metrics.msg_in("binary")
                if self.session.phase is Phase.AWAIT_HELLO:
                    self.fail(ExpectedHello("the first frame must be a JSON hello"))
                else:
                    self.fail(MalformedEnvelope("binary frames are not used: send JSON text"))
            elif kind is WSMsgType.PING:
                await ws.pong(msg.data)
            elif kind is WSMsgType.PONG:
                pass
            elif kind is WSMsgType.ERROR:
                ws_error = ws.exception()
                code = getattr(ws_error, "code", None)
                if code == WSCloseCode.MESSAGE_TOO_BIG:
                    # aiohttp already sent the too-large error (see RoomsyncWebSocket) and 1009.
                    self.close_code = int(CloseCode.TOO_BIG)
                    metrics.errors.labels("too-large").inc()
                    metrics.closes.labels("1009").inc()
                else:
                    self.fail(MalformedEnvelope(f"websocket error: {ws_error}"))
                return
            else:  # CLOSE, CLOSING, CLOSED
                if self.close_code is None:
                    self.close_code = ws.close_code or int(CloseCode.NORMAL)
                    metrics.closes.labels(str(self.close_code)).inc()
                    self._log(
                        "session.closed_by_peer",
                        code=self.close_code,
                    )
                return

    async def _on_frame(self, obj: Any, nbytes: int, now: int) -> None:
        metrics = self.server.metrics
        type_ = obj.get("type") if isinstance(obj, dict) else None
        metrics.msg_in(type_ if isinstance(type_, str) and len(type_) < 32 else "invalid")
        prefixes_before = self.session.prefixes  # `subscribe` replaces them in receive()
        try:
            msg = self.session.receive(obj, nbytes, now)
        except RoomsyncError as exc:
            if exc.code is ErrorCode.RATE_LIMITED:
                metrics.rate_limited.inc()
            if type_ == "pack":
                self._refuse_pack(exc)
            self.fail(exc, ref=type_ if isinstance(type_, str) else None)
            return
        try:
            if isinstance(msg, m.Hello):
                await self._on_hello(msg, now)
            elif msg.type in _BLOB_TYPES:
                assert self.host is not None and self.peer is not None
                await self.server.blobs.handle(self.host, self.peer, msg, now)
            else:
                self._dispatch(msg, prefixes_before)
        except RoomsyncError as exc:
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

    async def _on_hello(self, hello: m.Hello, now: int) -> None:
        server = self.server
        metrics = server.metrics
        if hello.v != PROTOCOL_VERSION:
            metrics.handshakes.labels("refused").inc()
            raise UnsupportedVersion(
                f"protocol version {hello.v} is not supported; this server speaks "
                f"v{PROTOCOL_VERSION}"
            )
        prefixes = hello_prefixes(hello)
        room = self.session.room
        try:
            host = await server.rooms.acquire(room)
        except StoreError as exc:
            metrics.store_errors.inc()
            raise Overload(f"room could not be loaded: {exc}", retry_after_ms=1000) from None
        self.host = host
        if host.record.closed or host.closed:
            raise RoomClosed(f"room {room!r} is closed")
        try:
            granted, actor, exp_ms, outcome = self._authenticate(hello, host, now)
        except AuthError as exc:
            metrics.auth.labels(_auth_outcome(exc)).inc()
            metrics.handshakes.labels("refused").inc()
            raise
        metrics.auth.labels(outcome).inc()
        if len(host.peers) >= host.policy.max_peers:
            metrics.handshakes.labels("refused").inc()
            raise Overload(
                f"room {room!r} is full ({host.policy.max_peers} peers)",
                retry_after_ms=server.retry_hint_ms(),
            )
        if "read" in granted or "*" in granted:
            host.check_cursor(hello.cursor if hello.catchup is not False else None)
        caps = negotiate(hello.caps, granted, SUPPORTED_DATA_CAPS)
        self.session.open(caps=caps, actor=actor, prefixes=prefixes, exp_ms=exp_ms)
        peer = Peer(
            self.session,
            self.out,
            stream_budget=host.policy.stream_budget_bytes,
            on_close=self._peer_closed,
            now_ms=now,
        )
        self.peer = peer
        if exp_ms is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, (exp_ms - server.now_ms()) / 1000)
            peer.expiry_handle = loop.call_later(delay, self._expired)
        welcome = m.Welcome(
            v=PROTOCOL_VERSION,
            session=self.session.session,
            peer=peer.id,
            room=room,
            caps=list(caps),
            head=host.state.head,
            root=host.state.root,
            heartbeat_ms=server.settings.server.heartbeat_ms,
            limits=host.welcome_limits(server.settings.server.max_frame_bytes),
            presence=server.presence_snapshot(host),
            node=server.node_name,
            actor=actor,
        ).to_wire()
        self.send(welcome)
        metrics.handshakes.labels("welcome").inc()
        metrics.peers.inc()
        self._log(
            "session.welcome",
            actor=actor,
            caps=list(caps),
            cursor=hello.cursor,
            head=host.state.head,
        )
        host.join(peer, hello.cursor, catchup=hello.catchup is not False)

    def _authenticate(
        self, hello: m.Hello, host: RoomHost, now: int
    ) -> tuple[tuple[str, ...], str, int | None, str]:
        """(granted caps, actor, expiry ms or None, auth outcome) or AuthError."""
        server = self.server
        room = host.room
        if hello.token:
            claims = server.tokens.verify(hello.token, now_s=now / 1000)
            check_room(claims, room)
            if server.is_revoked(claims):
                raise AuthError("token revoked")
            actor = claims.sub or hello.actor or self.session.peer
            exp_ms = claims.exp * 1000 if claims.exp is not None else None
            return claims.caps, actor, exp_ms, "ok"
        if host.record.locked:
            raise AuthError(f"room '{room}' is locked: a token for it is required")
        anonymous = tuple(host.policy.anonymous_caps)
        if not anonymous:
            raise AuthError("anonymous access is disabled: send a token")
        return anonymous, hello.actor or self.session.peer, None, "anonymous"

    def _expired(self) -> None:
        self.close(
            int(CloseCode.TOKEN_EXPIRED),
            {"type": "error", "code": "auth", "message": "auth: token expired"},
        )

    # -- messages after welcome ------------------------------------------------------------

    def _dispatch(self, msg: m.Message, prefixes_before: tuple[str, ...]) -> None:
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
            host.resubscribed(peer, prefixes_before)
        elif isinstance(msg, m.MstRoot):
            self.send(host.mst_root())
        elif isinstance(msg, m.MstGet):
            self.send(host.mst_nodes(msg.hashes))
        elif isinstance(msg, m.Presence):
            host.set_presence(peer, msg.state, len(_json_encode(msg.state)))
        elif isinstance(msg, m.Ping):
            self.send({"type": "pong"})
        elif isinstance(msg, m.Pong):
            pass

    async def _cleanup(self) -> None:
        peer = self.peer
        host = self.host
        if peer is not None:
            peer.closing = True
            if peer.expiry_handle is not None:
                peer.expiry_handle.cancel()
            if host is not None and peer in host.peers:
                host.leave(peer)
                self.server.metrics.peers.dec()
        if host is not None:
            self.host = None
            self.server.rooms.release(host)
        self.session.close()
        if self._closing_task is not None:
            await self._closing_task
        elif not self.ws.closed:
            await self.ws.close()


def _auth_outcome(exc: AuthError) -> str:
    text = exc.message.removeprefix("auth: ")
    for key in (
        "token expired",
        "bad signature",
        "unknown kid",
        "not valid for room",
        "malformed",
        "locked",
        "anonymous",
        "revoked",
        "missing claim",
        "unsupported algorithm",
        "not yet valid",
    ):
        if key in text:
            return key.replace(" ", "-")
    return "other"
