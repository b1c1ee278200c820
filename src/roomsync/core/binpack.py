"""Binary ``pack`` frames (SPEC §2, data cap ``binary``; layout in ``docs/protocol.md``).

When a session negotiated ``binary``, a ``pack`` may travel as a binary WebSocket frame
instead of a JSON text envelope: one tag byte, then postcard, with no JSON and no base64.
Every other message stays a JSON text frame, and a JSON ``pack`` is always accepted too.

::

    client -> server   01 | Pack
    server -> client   02 | head: u64 varint | flags: u8 | Pack

``flags`` bit 0 is ``done`` (the last chunk of a catch-up or ``request`` answer); bit 1
is ``deflate``: the ``Pack`` bytes are raw DEFLATE (RFC 1951) of the ``Pack``, which the
server uses for the cached blocks of a full catch-up when that saves at least a tenth (a
client inflates at most :data:`MAX_INFLATED_BYTES`); the other bits are reserved and
must be 0. ``head`` is the envelope's ``head``. Clients never send compressed packs. A server
frame is the same bytes as ``{"type": "pack", "data": base64(Pack), "head": head,
"done": true?}``, so a ``Pack`` encoded once (a broadcast group, a cached catch-up block)
is copied into both kinds of frame.

A frame that is empty, has an unknown tag or sets a reserved flag is a broken envelope
(:class:`MalformedEnvelope`, 1002); a frame whose ``Pack`` does not decode is a malformed
pack (:class:`CodecError`: refused, the session survives), exactly as for JSON.
"""

from __future__ import annotations

import zlib

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
#: ``flags`` bit: the ``Pack`` is raw DEFLATE (server -> client only).
FLAG_DEFLATE = 0x02
#: A client refuses a deflated pack that inflates past this (a decompression bomb).
MAX_INFLATED_BYTES = 64 << 20
#: Packs smaller than this are never deflated (not worth a client's inflate call).
DEFLATE_MIN_BYTES = 1024

_CLIENT_TAG = bytes((TAG_CLIENT_PACK,))
_SERVER_TAG = bytes((TAG_SERVER_PACK,))
_FLAG_BYTES = tuple(bytes((i,)) for i in range(4))


def client_frame(changes: list[Change] | tuple[Change, ...]) -> bytes:
    """The binary frame payload of a client ``pack`` (changes without seqs)."""
    return _CLIENT_TAG + encode_pack(changes)


def server_frame(pack: bytes, *, head: int, done: bool = False, deflated: bool = False) -> bytes:
    """The binary frame payload of a server ``pack`` around an encoded ``Pack`` (already
    deflated by :func:`deflate` when ``deflated``)."""
    flags = (FLAG_DONE if done else 0) | (FLAG_DEFLATE if deflated else 0)
    return b"".join((_SERVER_TAG, varint_bytes(head), _FLAG_BYTES[flags], pack))


def deflate(pack: bytes) -> bytes | None:
    """``pack`` as raw DEFLATE when that saves at least a tenth of it, else None."""
    if len(pack) < DEFLATE_MIN_BYTES:
        return None
    z = zlib.compressobj(1, zlib.DEFLATED, -15)
    out = z.compress(pack) + z.flush()
    return out if len(out) <= len(pack) * 9 // 10 else None


def _inflate(data: bytes) -> bytes:
    z = zlib.decompressobj(-15)
    try:
        out = z.decompress(data, MAX_INFLATED_BYTES + 1)
    except zlib.error as exc:
        raise MalformedEnvelope(f"binary pack frame: bad deflate data ({exc})") from None
    if len(out) > MAX_INFLATED_BYTES:
        raise MalformedEnvelope(
            f"binary pack frame inflates past {MAX_INFLATED_BYTES} bytes: refused"
        )
    if not z.eof or z.unused_data:
        raise MalformedEnvelope("binary pack frame: truncated or trailing deflate data")
    return out


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
    if flags & ~(FLAG_DONE | FLAG_DEFLATE):
        raise MalformedEnvelope(f"binary pack frame sets reserved flag bits {flags:#04x}")
    pack = payload[r.pos + 1 :]
    if flags & FLAG_DEFLATE:
        pack = _inflate(pack)
    return m.PackMsg(data=pack, head=head, done=True if flags & FLAG_DONE else None)
