"""The seam between the server and its WebSocket library.

Data frames are built here once and written straight to the connection's transport: a
broadcast encodes one text frame (server frames are unmasked, so the bytes are the same
for every receiver) and hands the same ``bytes`` to each peer. aiohttp still owns the
handshake, the reader, control frames and the closing handshake; since it writes
uncompressed frames synchronously too, our writes never interleave inside its frames.
A different WebSocket implementation (e.g. picows) only needs another :class:`Outbound`.
"""

from __future__ import annotations

import asyncio
import struct

from aiohttp import WSCloseCode, web

_OP_TEXT = 0x1
_OP_PING = 0x9
_FIN = 0x80


def encode_frame(payload: bytes, opcode: int = _OP_TEXT) -> bytes:
    """An unmasked, final WebSocket frame (RFC 6455 §5.2) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        header = bytes((_FIN | opcode, n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", _FIN | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 127, n)
    return header + payload


PING_FRAME = encode_frame(b"", _OP_PING)


class Outbound:
    """Writes frames to one peer and tells how much is queued for it (the stream budget)."""

    __slots__ = ("transport",)

    def __init__(self, transport: asyncio.BaseTransport | None) -> None:
        self.transport = transport

    def write(self, frame: bytes) -> bool:
        """Queue ``frame``; False when the connection is already closing."""
        t = self.transport
        if t is None or t.is_closing():
            return False
        t.write(frame)  # type: ignore[attr-defined]
        return True

    def send(self, frame: bytes) -> int:
        """Queue ``frame`` and return the bytes now queued for the peer; -1 when the
        connection is already closing (the broadcast hot path: one call per delivery)."""
        t = self.transport
        if t is None or t.is_closing():
            return -1
        t.write(frame)  # type: ignore[attr-defined]
        return int(t.get_write_buffer_size())  # type: ignore[attr-defined]

    def queued_bytes(self) -> int:
        t = self.transport
        if t is None or t.is_closing():
            return 0
        return int(t.get_write_buffer_size())  # type: ignore[attr-defined]

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]


class RoomsyncWebSocket(web.WebSocketResponse):
    """aiohttp's server WebSocket, plus the SPEC rule "an error before every non-normal close".

    aiohttp closes by itself with 1009 when a frame exceeds ``max_msg_size``, before our
    loop sees it; this hook writes the ``too-large`` error frame first.
    """

    too_big_error: bytes | None = None

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and self.too_big_error is not None:
            error, self.too_big_error = self.too_big_error, None
            transport = self._req.transport if self._req is not None else None
            if transport is not None and not transport.is_closing():
                transport.write(encode_frame(error))
        return await super().close(code=code, message=message, drain=drain)
