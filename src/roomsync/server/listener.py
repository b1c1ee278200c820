"""One listening socket for both planes: WebSocket upgrades on ``/ws/`` go to picows,
every other request to aiohttp.

picows parses and writes WebSocket frames in C and calls us once per frame, with no task,
queue or request object kept per connection; an idle connection costs about a third less
memory than on aiohttp's WebSocket, and a received frame a few task switches less. It
does not serve HTTP requests with bodies (blob uploads) or routing, so each new connection
starts with :class:`_Router`, which reads the request head and hands the transport, with
the bytes read so far, to one of the two protocols (``transport.set_protocol``). TLS
works the same way: the router sees the decrypted stream.

picows is driven through its ``WSProtocol`` constructor (what ``picows.ws_create_server``
builds per connection); ``pyproject.toml`` bounds the version for that reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from picows import WSAutoPingStrategy
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in its stubs

log = logging.getLogger("roomsync.listener")

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_S = 10.0
_CLOSE_1009 = b"\x03\xf1"  # the close code 1009 as it starts a CLOSE frame's payload


def is_websocket_upgrade(head: bytes, prefix: bytes = b"/ws/") -> bool:
    """True for ``GET <prefix>... HTTP/1.1`` with an ``Upgrade: websocket`` header."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or not parts[1].startswith(prefix):
        return False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


class _Log:
    """The logger-like object picows gets: a ``logging.Logger`` would make it create a
    child logger per connection. Its chatter (connection accepted, disconnected) goes to
    debug; its errors (protocol violations by clients) to info, as clients cause them."""

    __slots__ = ()

    def isEnabledFor(self, level: int) -> bool:
        return False  # picows's own trace level; its debug branches stay off

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        pass

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        pass

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        pass

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.info("picows: " + msg, *args)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.info("picows: " + msg, *args)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.error("picows: " + msg, *args, exc_info=True)


_LOG = _Log()


class _Socket:
    """What picows writes through: the connection's transport, plus one rule.

    picows closes with 1009 by itself when a frame passes ``max_frame_size``; the SPEC
    wants our ``too-large`` error frame before every non-normal close, so it is written
    here just before that CLOSE frame. ``get_write_buffer_size`` is never 0 so that
    picows always writes through :meth:`write` (its fast path would ``send()`` on the
    socket directly); it only writes handshakes and control frames, our data frames go
    to the transport itself (see ``outbox.Outbox``).
    """

    __slots__ = ("too_big", "transport")

    def __init__(self, transport: asyncio.Transport, too_big: bytes) -> None:
        self.transport = transport
        self.too_big = too_big

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data[:1] == b"\x88" and bytes(data[2:4]) == _CLOSE_1009 and self.too_big:
            self.transport.write(self.too_big)
            self.too_big = b""
        self.transport.write(data)

    def writelines(self, data: list[Any]) -> None:
        for chunk in data:
            self.write(chunk)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _Router(asyncio.Protocol):
    """The first protocol of every connection: read the request head, pick the plane."""

    __slots__ = ("_buf", "_listener", "_timer", "_transport")

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._buf = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self._transport = t = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT_S, t.abort)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0 and len(self._buf) <= MAX_HEAD_BYTES:
            return  # the head is not complete yet
        transport = self._transport
        assert transport is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        data, self._buf = self._buf, b""
        self._transport = None
        listener = self._listener
        if end >= 0 and is_websocket_upgrade(data[:end]):
            ws = listener.websocket_protocol()
            transport.set_protocol(ws)
            ws.connection_made(_Socket(transport, listener.too_big_frame))
            view = memoryview(data)
            while view:
                buf = ws.get_buffer(len(view))
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                ws.buffer_updated(n)
                view = view[n:]
        else:
            # aiohttp answers everything else, including heads too big or malformed.
            http = listener.http_factory()
            transport.set_protocol(http)
            http.connection_made(transport)
            http.data_received(data)

    def eof_received(self) -> bool:
        return False  # closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None


class Listener:
    """Builds the protocols behind one listening socket.

    ``http_factory`` is aiohttp's low-level server (``AppRunner.server``); ``ws_factory``
    is picows's listener factory: it gets the parsed upgrade request and returns a
    ``WSListener`` for the connection, or None for a 404.
    """

    def __init__(
        self,
        http_factory: Callable[[], asyncio.Protocol],
        ws_factory: Callable[[Any], Any],
        *,
        max_frame_bytes: int,
        too_big_frame: bytes,
    ) -> None:
        self.http_factory = http_factory
        self.ws_factory = ws_factory
        self.max_frame_bytes = max_frame_bytes
        self.too_big_frame = too_big_frame

    def __call__(self) -> _Router:
        return _Router(self)

    def websocket_protocol(self) -> WSProtocol:
        return WSProtocol(
            None,  # host:port (client side only)
            None,  # path (client side only)
            False,  # is_client_side
            self.ws_factory,
            _LOG,
            True,  # disconnect_on_exception (ours never escape; see ws._Connection)
            None,  # handshake timeout: the router already read the whole head
            False,  # auto ping: the server's heartbeat pings (app.RoomsyncServer.reap)
            20.0,
            20.0,
            WSAutoPingStrategy.PING_WHEN_IDLE,
            False,  # auto pong: ws._Connection answers PINGs, counted against its limits
            self.max_frame_bytes,
            None,  # extra response headers
            2048,  # initial read buffer; it grows with the frames
        )


def socket_transport(transport: Any) -> asyncio.Transport:
    """The connection's own transport under picows's ``underlying_transport``."""
    return transport.transport if isinstance(transport, _Socket) else transport
