"""WebSocket frames as the server writes them (RFC 6455 §5.2): unmasked, final.

A broadcast encodes one text frame and hands the same ``bytes`` to every receiver;
:mod:`.outbox` is the one place they are written.
"""

from __future__ import annotations

import struct

_OP_TEXT = 0x1
#: The opcode of a binary frame (a binary ``pack``, SPEC §2 cap ``binary``).
OP_BINARY = 0x2
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
