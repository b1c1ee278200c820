"""Binary ``pack`` frames (SPEC §2, data cap ``binary``; layout in ``docs/protocol.md``).

When a session negotiated ``binary``, a ``pack`` may travel as a binary WebSocket frame
instead of a JSON text envelope: one tag byte, then postcard, with no JSON and no base64.
Every other message stays a JSON text frame, and a JSON ``pack`` is always accepted too.

::

    client -> server   01 | Pack
    server -> client   02 | head: u64 varint | flags: u8 | Pack

``flags`` bit 0 is ``done`` (the last chunk of a catch-up or ``request`` answer); the
other bits are reserved and must be 0. ``head`` is the envelope's ``head``. A server
frame is the same bytes as ``{"type": "pack", "data": base64(Pack), "head": head,
"done": true?}``, so a ``Pack`` encoded once (a broadcast group, a cached catch-up block)
is copied into both kinds of frame.

A frame that is empty, has an unknown tag or sets a reserved flag is a broken envelope
(:class:`MalformedEnvelope`, 1002); a frame whose ``Pack`` does not decode is a malformed
pack (:class:`CodecError`: refused, the session survives), exactly as for JSON.
"""

from __future__ import annotations

from . import messages as m
from .entries import Change
from .errors import CodecError, MalformedEnvelope
from .postcard import Reader, encode_pack, varint_bytes

#: Tag of a client pack (client -> server).
TAG_CLIENT_PACK = 0x01
#: Tag of a server pack (server -> client), followed by ``head`` and ``flags``.
TAG_SERVER_PACK = 0x02
#: ``flags`` bit: the last chunk of an answer.
FLAG_DONE = 0x01

_CLIENT_TAG = bytes((TAG_CLIENT_PACK,))
_SERVER_TAG = bytes((TAG_SERVER_PACK,))
_FLAGS = (b"\x00", bytes((FLAG_DONE,)))


def client_frame(changes: list[Change] | tuple[Change, ...]) -> bytes:
    """The binary frame payload of a client ``pack`` (changes without seqs)."""
    return _CLIENT_TAG + encode_pack(changes)


def server_frame(pack: bytes, *, head: int, done: bool = False) -> bytes:
    """The binary frame payload of a server ``pack`` around an encoded ``Pack``."""
    return b"".join((_SERVER_TAG, varint_bytes(head), _FLAGS[done], pack))


def parse_client_frame(payload: bytes) -> bytes:
    """The encoded ``Pack`` of a binary frame a client sent (not yet decoded)."""
    if not payload:
        raise MalformedEnvelope("empty binary frame: expected a tag byte (01 = pack)")
    if payload[0] != TAG_CLIENT_PACK:
        raise MalformedEnvelope(
            f"unknown binary frame tag {payload[0]:#04x}: clients send 01 (pack)"
        )
    return payload[1:]


def parse_server_frame(payload: bytes) -> m.PackMsg:
    """A binary frame the server sent, as the ``pack`` message it stands for (``data``
    holds the encoded ``Pack``, which :func:`~.codec.unpack_data` decodes)."""
    if not payload:
        raise MalformedEnvelope("empty binary frame: expected a tag byte (02 = pack)")
    if payload[0] != TAG_SERVER_PACK:
        raise MalformedEnvelope(
            f"unknown binary frame tag {payload[0]:#04x}: servers send 02 (pack)"
        )
    r = Reader(payload)
    r.pos = 1
    try:
        head = r.u64("head")
        if r.pos >= len(payload):
            raise MalformedEnvelope("binary pack frame ends before its flags byte")
        flags = payload[r.pos]
    except CodecError as exc:  # the head varint
        raise MalformedEnvelope(f"binary pack frame header: {exc.message}") from None
    if flags & ~FLAG_DONE:
        raise MalformedEnvelope(f"binary pack frame sets reserved flag bits {flags:#04x}")
    return m.PackMsg(data=payload[r.pos + 1 :], head=head, done=True if flags else None)
