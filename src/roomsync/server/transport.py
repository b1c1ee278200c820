"""The seam between the server and its WebSocket library: outgoing frames.

Data frames are built here once and written straight to the connection's transport: a
broadcast encodes one text frame (server frames are unmasked, so the bytes are the same
for every receiver) and hands the same ``bytes`` to each peer. picows (see
``listener.py``) owns the handshake, the reader, pongs and the frames it refuses; it
writes synchronously too, so our writes never interleave inside its frames.
"""

from __future__ import annotations

import asyncio
import struct

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
        return self.send(frame) >= 0

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

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()  # type: ignore[attr-defined]
