"""The SDK's connection lifecycle: connect, ``hello``/``welcome``, heartbeat, reconnect (SPEC §2).

:class:`Connection` runs one :class:`~.link.Link` at a time and, when it ends, asks
:class:`~roomsync.core.reconnect.ReconnectPolicy` what to do: the close code -> action
table (retry with backoff, refresh the token, full resync, or stop) and the delays live
there, in the core; this module only dials, sleeps and moves frames:

=========================  ======================================================
close                      what the client does (``core.reconnect.ACTION_ON_CLOSE``)
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
session opened in time, :meth:`Connection.start` stops the client and raises
:class:`ConnectError` naming the URL and the cause of the last failed attempt. Every
retry is logged (logger ``roomsync.client``: a warning before the first welcome, info
after) with its number, the cause and the delay.

The heartbeat follows :class:`~roomsync.core.keepalive.Keepalive`: it sleeps until the
core's next deadline, then pings an idle link or drops one the server has been silent on
for three heartbeats.

Server frames are dispatched by type to the handlers the other parts registered
(:meth:`Connection.handle`); an ``error`` goes to the handler registered for its
``ref`` (:meth:`Connection.handle_error`). Types without a handler are ignored. The
parts that follow the session (:class:`LinkWatcher`: the local replica, presence) hear
of every welcome and every link that went down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from ..core import messages as m
from ..core.binpack import parse_server_frame
from ..core.codec import PROTOCOL_VERSION, decode_json, parse_server
from ..core.errors import RoomsyncError
from ..core.keepalive import Keepalive, KeepaliveAction
from ..core.reconnect import ABNORMAL_CLOSURE, Backoff, ReconnectPolicy, StopReason
from ..core.replica import Replica
from ..core.types import actor_allowed, validate_room_id
from .errors import ConnectError, ConnectionClosed, RequestRefused
from .events import Listeners, fresh
from .link import Link
from .stats import ConnectionStats, RetryWait

log = logging.getLogger("roomsync.client")

TokenProvider = Callable[[], Awaitable[str]]
FrameHandler = Callable[[Link, Any], None]
ErrorHandler = Callable[[Link, m.Error, RequestRefused], None]

HANDSHAKE_TIMEOUT_S = 15.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0


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


class LinkWatcher(Protocol):
    """A part of the client that follows the sessions (the local replica, presence)."""

    def link_welcomed(self, link: Link) -> None:
        """``link`` was welcomed (``link.welcome`` is set). May abort the link."""

    def link_down(self, link: Link) -> None:
        """``link`` went down; its waiters have already failed with ``_LinkDown``."""


class Pulse:
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


@dataclass(frozen=True, slots=True)
class _Ended:
    close_code: int
    error: dict[str, Any] | None
    welcomed: bool
    cause: str


class Connection:
    """The lifecycle of one client: links one after another until it stops for good.

    Owns the current :class:`~.link.Link`, the client's terminal state (``terminal``:
    the :class:`ConnectionClosed` that stopped it), the ``stats``, and the ``pulse`` that
    wakes every waiter when something changed.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        replica: Replica,
        *,
        token: str | None,
        token_provider: TokenProvider | None,
        caps: Sequence[str] | None,
        binary: bool = True,
        hello_fields: Mapping[str, Any] | None = None,
        reconnect: bool,
        backoff: Backoff | None,
        rng: random.Random,
        ssl: ssl_module.SSLContext | None,
        connect_timeout_s: float | None,
    ) -> None:
        #: The room's WebSocket URLs: several nodes of one deployment (SPEC §8). Each
        #: reconnect tries the next, so peers of a drained or dead node move to another.
        self.urls: tuple[str, ...] = (url,) if isinstance(url, str) else tuple(url)
        if not self.urls:
            raise ValueError("at least one server URL is needed")
        self.url = self.urls[0]
        self.replica = replica
        self._token = token
        self._token_provider = token_provider
        self._caps = _requested_caps(caps, binary=binary)
        reserved = set(m.Hello.__dataclass_fields__) | {"type"}
        clash = sorted(set(hello_fields or ()) & reserved)
        if clash:
            raise ValueError(f"hello_fields may not set the protocol's own fields: {clash}")
        self._hello_fields = dict(hello_fields or {})
        self._policy = ReconnectPolicy(
            backoff, reconnect=reconnect, can_refresh_token=token_provider is not None
        )
        self._rng = rng
        self.ssl = ssl
        self._connect_timeout_s = connect_timeout_s
        #: How the last failed connection attempt ended (for :class:`ConnectError`).
        self._last_failure: _Ended | None = None
        #: What the current attempt is waiting for: "token", "connect" or "welcome".
        self._phase = "token"
        #: Set while a session is open (welcomed); cleared while disconnected.
        self.connected = asyncio.Event()
        #: The last ``welcome`` received (session id, peer, caps, head, limits, ...).
        self.session_info: m.Welcome | None = None
        #: Capabilities granted by the last ``welcome``.
        self.caps: tuple[str, ...] = ()
        self.stats = ConnectionStats()
        self.pulse = Pulse()
        self.terminal: ConnectionClosed | None = None
        self.closed = Listeners[ConnectionClosed]()
        self.link: Link | None = None
        self.http: aiohttp.ClientSession | None = None
        self._closing = False
        self._runner: asyncio.Task[None] | None = None
        self._handlers: dict[str, FrameHandler] = {}
        self._error_handlers: dict[str, ErrorHandler] = {}
        self._watchers: list[LinkWatcher] = []
        self._streams: list[Listeners[Any]] = []

    # -- wiring ------------------------------------------------------------------------------

    def handle(self, type: str, handler: FrameHandler) -> None:
        """Call ``handler(link, message)`` for every server frame of ``type``."""
        self._handlers[type] = handler

    def handle_error(self, ref: str, handler: ErrorHandler) -> None:
        """Call ``handler(link, error, refused)`` for every ``error{ref}`` of ``ref``
        (``error.ref`` is set; ``refused`` is the :class:`RequestRefused` to raise)."""
        self._error_handlers[ref] = handler

    def watch(self, watcher: LinkWatcher) -> None:
        """Tell ``watcher`` of every welcome and every link down, in registration order."""
        self._watchers.append(watcher)

    def end_with_client(self, listeners: Listeners[Any]) -> None:
        """End the streams of ``listeners`` when the client stops."""
        self._streams.append(listeners)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection loop and wait for the first ``welcome`` (see RoomClient.start)."""
        if self._runner is not None:
            raise RuntimeError("RoomClient.start() was already called")
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._runner = asyncio.get_running_loop().create_task(self._run())
        try:
            await asyncio.wait_for(
                self.wait_for(lambda: self.stats.welcomes > 0), self._connect_timeout_s
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
            self.stop(error)
            await self.close()
            raise fresh(error) from None
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
        """Close the connection (1000) and stop."""
        if self._closing:
            return
        self._closing = True
        link = self.link
        if link is not None:
            link.closing = True
            try:
                await asyncio.wait_for(link.ws.close(), CLOSE_TIMEOUT_S)
            except (TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError):
                link.abort()
        runner = self._runner
        if runner is not None and not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        self.stop(ConnectionClosed(1000, None, "closed by the application"), by_app=True)
        if self.http is not None:
            await self.http.close()

    def disconnect(self) -> None:
        """Drop the current link abruptly, as a network failure would."""
        link = self.link
        if link is not None:
            link.abort()

    def stop(self, error: ConnectionClosed, *, by_app: bool = False) -> None:
        """Stop for good: end every stream and waiter with ``error``, call ``on_close``."""
        if self.terminal is not None:
            return
        self.terminal = error
        self.connected.clear()
        for listeners in self._streams:
            listeners.end(None if by_app else error)
        self.closed.emit(error)
        self.pulse.fire()

    def check_running(self) -> None:
        """Raise the :class:`ConnectionClosed` that stopped the client, if it stopped."""
        if self.terminal is not None:
            raise fresh(self.terminal)

    def drop_cap(self, cap: str) -> None:
        """Plan the next session as if ``cap`` had not been granted (a failed resync)."""
        self.caps = tuple(c for c in self.caps if c != cap)

    # -- waiting -----------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; raise if the client stops first."""
        while True:
            if predicate():
                return
            self.check_running()
            await self.pulse.wait()

    def is_synced(self) -> bool:
        link = self.link
        return link is not None and link.synced and not link.closing

    async def synced_link(self) -> Link:
        """The current link once its catch-up (or resync) is complete."""
        await self.wait_for(self.is_synced)
        link = self.link
        assert link is not None
        return link

    async def welcomed_link(self) -> Link:
        """The current link once it is welcomed."""

        def welcomed() -> bool:
            link = self.link
            return link is not None and link.welcome is not None and not link.closing

        await self.wait_for(welcomed)
        link = self.link
        assert link is not None
        return link

    # -- the connection loop -----------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._closing:
                ended = await self._attempt()
                if self._closing:
                    return
                code, error = ended.close_code, ended.error
                error_code = _str(error, "code")
                self.stats.closes.append((code, error_code))
                decision = self._policy.after_close(
                    code,
                    welcomed=ended.welcomed,
                    rng=self._rng,
                    error_code=error_code,
                    retry_after_ms=_int(error, "retry_after_ms"),
                )
                if decision.stop is not None:
                    self.stop(self._stop_error(decision.stop, ended))
                    return
                if decision.resync:
                    self.replica.resync_required()
                if len(self.urls) > 1:  # the next node: this one may be draining or gone
                    self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]
                delay = decision.delay_s
                self.stats.waits.append(RetryWait(delay, code, error_code, decision.retry_after_ms))
                if self.stats.welcomes == 0:
                    log.warning(
                        "cannot connect to %s: %s; retry %d in %.3f s",
                        self.url,
                        ended.cause,
                        decision.attempt,
                        delay,
                    )
                else:
                    log.info(
                        "connection to %s ended: %s; reconnect attempt %d in %.3f s",
                        self.url,
                        ended.cause,
                        decision.attempt,
                        delay,
                    )
                if delay > 0:
                    await asyncio.sleep(delay)  # the backoff itself: nothing to wait on
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unexpected library error: stop loudly
            log.exception("roomsync client loop failed")
            self.stop(ConnectionClosed(ABNORMAL_CLOSURE, None, f"client failure: {exc!r}"))
        finally:
            if self.terminal is not None and self.http is not None and not self._closing:
                await self.http.close()

    def _stop_error(self, reason: StopReason, ended: _Ended) -> ConnectionClosed:
        code, error = ended.close_code, ended.error
        if reason is StopReason.NO_TOKEN_PROVIDER:
            return ConnectionClosed(
                code,
                error,
                "token expired and no token_provider to "
                "refresh it: pass token_provider to connect()",
            )
        if reason is StopReason.RECONNECT_OFF and self.stats.welcomes == 0:
            return ConnectError(
                self.url, ended.cause, attempts=self.stats.attempts, close_code=code, error=error
            )
        return ConnectionClosed(code, error)

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
        assert self.http is not None
        self._phase = "connect"
        try:
            ws = await asyncio.wait_for(
                self.http.ws_connect(
                    self.url,
                    ssl=self.ssl if self.ssl is not None else True,
                    autoping=True,
                    heartbeat=None,
                    max_msg_size=0,
                    compress=0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
                ),
                HANDSHAKE_TIMEOUT_S,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("cannot connect to %s: %r", self.url, exc)
            return _Ended(ABNORMAL_CLOSURE, None, False, _failure_cause(exc))
        self._phase = "welcome"
        if self.replica.needs_resync:
            self.stats.resyncs += 1
        plan = self.replica.start_session(can_reconcile="reconcile" in self.caps)
        link = Link(ws, plan.mode)
        self.link = link
        loop = asyncio.get_running_loop()
        link.last_recv_ms = link.last_sent_ms = loop.time() * 1000
        hello = m.Hello(
            v=PROTOCOL_VERSION,
            token=token,
            actor=self.replica.actor,
            caps=self._caps,
            subscribe=plan.subscribe,
            cursor=plan.cursor,
            catchup=None if plan.catchup else False,
        )
        link.send({**self._hello_fields, **hello.to_wire()})
        link.tasks.append(loop.create_task(self._sender(link)))
        try:
            async for msg in ws:
                link.last_recv_ms = loop.time() * 1000
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._on_text(link, msg.data)
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    self._on_binary(link, msg.data)
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

    async def _end_link(self, link: Link) -> None:
        link.closing = True
        for task in link.tasks:
            task.cancel()
        await asyncio.gather(*link.tasks, return_exceptions=True)
        link.fail_waiters()
        if not link.ws.closed:
            try:
                await asyncio.wait_for(link.ws.close(), CLOSE_TIMEOUT_S)
            except (TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError):
                pass
        if self.link is link:
            self.link = None
        for watcher in self._watchers:
            watcher.link_down(link)
        self.connected.clear()
        self.pulse.fire()

    async def _sender(self, link: Link) -> None:
        """Write queued frames in order; a failed write drops the link."""
        loop = asyncio.get_running_loop()
        try:
            while not link.closing:
                await link.outbox_ready.wait()
                link.outbox_ready.clear()
                while link.outbox and not link.closing:
                    frame = link.outbox.popleft()
                    link.last_sent_ms = loop.time() * 1000
                    if isinstance(frame, bytes):
                        await link.ws.send_bytes(frame)
                    else:
                        await link.ws.send_str(frame)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.info("sending to %s failed: %r", self.url, exc)
            link.abort()

    async def _heartbeat(self, link: Link, keepalive: Keepalive) -> None:
        """Sleep until the keepalive's next deadline; ping an idle link, drop a silent one."""
        loop = asyncio.get_running_loop()
        while True:
            now_ms = loop.time() * 1000
            deadline_ms = keepalive.next_deadline_ms(
                now_ms,
                last_recv_ms=link.last_recv_ms,
                last_sent_ms=link.last_sent_ms,
                presence_held=link.presence_sent,
            )
            try:  # woken early when a presence state shortens the idle interval
                await asyncio.wait_for(link.wake.wait(), (deadline_ms - now_ms) / 1000)
            except TimeoutError:
                pass
            link.wake.clear()
            if link.closing:
                return
            now_ms = loop.time() * 1000
            action = keepalive.check(
                now_ms,
                last_recv_ms=link.last_recv_ms,
                last_sent_ms=link.last_sent_ms,
                presence_held=link.presence_sent,
                sending=bool(link.outbox),
            )
            if action is KeepaliveAction.DROP:
                log.info(
                    "no frame from %s for %.1f s: reconnecting",
                    self.url,
                    (now_ms - link.last_recv_ms) / 1000,
                )
                link.abort()
                return
            if action is KeepaliveAction.PING:
                link.send(m.Ping().to_wire())

    # -- incoming frames ---------------------------------------------------------------------

    def _on_binary(self, link: Link, payload: bytes) -> None:
        """A binary ``pack`` (SPEC §2 cap ``binary``): handled as its JSON twin would be.
        A frame that does not parse loses a pack, so the link is dropped and resynced."""
        if not link.binary:
            log.error("server sent a binary frame without the 'binary' cap: reconnecting")
            link.abort()
            return
        try:
            msg = parse_server_frame(payload)
        except RoomsyncError as exc:
            log.error("server sent a broken binary frame (%s): reconnecting", exc.message)
            link.abort()
            return
        handler = self._handlers.get("pack")
        if handler is not None:
            handler(link, msg)
        self.pulse.fire()

    def _on_text(self, link: Link, text: str) -> None:
        try:
            msg = parse_server(decode_json(text))
        except RoomsyncError as exc:
            log.warning("ignoring a server frame: %s", exc.message)
            return
        if isinstance(msg, m.Welcome):
            self._on_welcome(link, msg)
        elif isinstance(msg, m.Error):
            self._on_error(link, msg)
        elif isinstance(msg, m.Ping):
            if not link.closing:
                link.send(m.Pong().to_wire())
        elif not isinstance(msg, m.Pong):  # a pong only refreshes the link's liveness
            handler = self._handlers.get(msg.type)
            if handler is None:
                log.debug("no handler for server message %r", msg.type)
                return
            handler(link, msg)
        self.pulse.fire()

    def _on_welcome(self, link: Link, msg: m.Welcome) -> None:
        link.welcome = msg
        actor = self.replica.actor
        if msg.actor and msg.actor != actor and not actor_allowed(msg.actor, actor):
            log.warning(
                "the server binds this session to actor %r but this replica writes as %r: "
                "its packs will be refused (forbidden); pass actor=%r (or %r#<suffix>) "
                "to connect()",
                msg.actor,
                actor,
                msg.actor,
                msg.actor,
            )
        self.session_info = msg
        self.caps = tuple(msg.caps)
        link.binary = "binary" in self.caps
        self.stats.welcomes += 1
        keepalive = Keepalive.from_welcome(msg.heartbeat_ms, msg.limits)
        link.keepalive = keepalive
        link.tasks.append(asyncio.get_running_loop().create_task(self._heartbeat(link, keepalive)))
        for watcher in self._watchers:
            watcher.link_welcomed(link)
            if link.closing:
                return  # a watcher aborted it (e.g. a resync that is not possible any more)
        self.connected.set()

    def _on_error(self, link: Link, msg: m.Error) -> None:
        error = msg.to_wire()
        link.last_error = error
        ref = error.get("ref")
        log.info("server error %s (ref %s): %s", msg.code, ref, msg.message)
        if ref == "pack":
            return  # the pack's own ack (refused[index -1]) settles it, in order
        if not isinstance(ref, str):
            return
        handler = self._error_handlers.get(ref)
        if handler is not None:
            # The parser leaves ``ref`` among the extra fields: hand it over as ``error.ref``.
            handler(link, dataclasses.replace(msg, ref=ref), RequestRefused(error))


# -- helpers -----------------------------------------------------------------------------------


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
        return f"no answer within {HANDSHAKE_TIMEOUT_S:g} s"
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


def _str(obj: dict[str, Any] | None, name: str) -> str | None:
    value = (obj or {}).get(name)
    return value if isinstance(value, str) else None


def _int(obj: dict[str, Any] | None, name: str) -> int | None:
    value = (obj or {}).get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _requested_caps(caps: Sequence[str] | None, *, binary: bool) -> tuple[str, ...] | None:
    """The ``caps`` of our hellos: ``caps`` (None: all that is granted), plus the opt-in
    ``binary`` when wanted (a server grants it only when asked for by name)."""
    if not binary:
        return tuple(caps) if caps is not None else None
    if caps is None:
        return ("*", "binary")
    return tuple(caps) if "binary" in caps else (*caps, "binary")
