"""A room's recent envelopes, redacted, for ``room capture`` (SPEC §6, issue 11).

Each loaded room (:class:`~.rooms.RoomHost`) owns one :class:`Capture`: a bounded ring of
the envelopes that crossed its peers' connections in both directions. The taps are
where frames already pass: ``ws.py`` for what a peer sends (and for closes),
:class:`~.outbox.Outbox` for what one peer is sent, and the room's broadcasts in
``rooms.py``, which record **one** record per broadcast frame (``peer: "*"`` and its
``receivers``), not one per delivery. In a room of at most :data:`MAX_RECEIVER_IDS`
peers, a broadcast ``pack`` record also lists the peers it was written to (``to``), so
``roomsync capture diff`` can tell which peer missed which broadcast (a subscription
that filtered it, a peer closing); larger rooms only count them.

Kept: ``hello``/``welcome``, ``pack``, ``ack``, ``request``, ``subscribe``, ``mst-*``,
``presence``/``presence-leave``, the blob messages (``blob-*`` and the direct-upload
``request-upload``/``upload-*``), ``error`` and closes (pseudo-type ``close``). Pings,
pongs and anything else are not kept.

Redaction is by construction: a record holds only metadata picked out of the message
(types, sizes, counts, ids, hashes and codes), never the message itself. Values, pack
and blob data, presence states, tokens, URLs (they carry signatures) and human error
messages are never stored, so there is nothing to mask when the capture is read.

A record is a flat tuple ``(at, dir, peer, type, bytes, key1, value1, key2, ...)``:
about 160 bytes with its timestamp, half of what a dict would hold (rings live in every
room with traffic). :func:`as_dict` turns it into what the control plane answers.
Building one costs a type lookup and a tuple; nothing is encoded or decoded again.
"""

from __future__ import annotations

import binascii
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal

__all__ = [
    "KEPT_TYPES",
    "MAX_RECEIVER_IDS",
    "Capture",
    "Direction",
    "Record",
    "as_dict",
    "close_record",
    "declared_changes",
    "describe",
    "envelope_record",
]

Direction = Literal["in", "out"]

#: ``(at, dir, peer, type, bytes, key1, value1, ...)``: see the module docstring.
Record = tuple[Any, ...]

#: A broadcast ``pack`` record names its receivers (``to``) in rooms of at most this
#: many peers: a bounded list (16 peer ids, ~300 bytes), paid only by small rooms.
MAX_RECEIVER_IDS = 16
#: A string kept in a record (ids, hashes, codes) is at most this long, or left out.
_MAX_STR = 128
#: A pack's change count is a LEB128 varint at the start of its postcard bytes; 16
#: base64 characters decode to 12 bytes, more than the 10 of the longest u64 varint.
_PACK_HEAD_CHARS = 16


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= _MAX_STR else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(value: object) -> int | None:
    return len(value) if isinstance(value, list | tuple) else None


def _pairs(*items: object) -> tuple[Any, ...]:
    """``key, value, ...`` without the pairs whose value is None."""
    out: list[Any] = []
    for i in range(0, len(items), 2):
        if items[i + 1] is not None:
            out += (items[i], items[i + 1])
    return tuple(out)


def declared_changes(data: object) -> int | None:
    """The change count a ``pack``'s ``data`` declares (the first varint of its postcard,
    base64 in a JSON envelope or bytes from a binary frame), read from its first few
    characters; None when it does not parse. Nothing else of the pack is decoded: the
    count is what the peer claims, the ``ack`` says what was kept."""
    if isinstance(data, bytes):
        raw = data[:10]
    elif isinstance(data, str):
        try:
            raw = binascii.a2b_base64(data[:_PACK_HEAD_CHARS], strict_mode=True)
        except (binascii.Error, ValueError):
            return None
    else:
        return None
    value = shift = 0
    for byte in raw:
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        shift += 7
    return None


def _hello(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    caps = msg.get("caps")
    kept_caps = (
        [c for c in caps if _str(c) is not None][:16] if isinstance(caps, list | tuple) else None
    )
    return _pairs(
        "v", _int(msg.get("v")),
        "actor", _str(msg.get("actor")),
        "caps", kept_caps,
        "paths", _count(msg.get("subscribe")),
        "cursor", _int(msg.get("cursor")),
        "anonymous", not msg.get("token"),  # whether a token was sent; never the token
    )  # fmt: skip


def _welcome(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    caps = msg.get("caps")
    return _pairs(
        "room", _str(msg.get("room")),
        "caps", [c for c in caps if isinstance(c, str)] if isinstance(caps, list) else None,
        "head", _int(msg.get("head")),
        "presence", _count(msg.get("presence")),  # how many peers, not their states
    )  # fmt: skip


# pack, ack and request are the frequent ones: written out, without _pairs.


def _pack(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    n = declared_changes(msg.get("data"))
    meta: tuple[Any, ...] = () if n is None else ("changes", n)
    head = msg.get("head")
    if type(head) is int:
        meta += ("head", head)
    if msg.get("done") is True:
        meta += ("done", True)
    if msg.get("binary") is True:
        meta += ("binary", True)
    return meta


def _ack(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    seqs = msg.get("seqs")
    meta: tuple[Any, ...] = ("seqs", len(seqs)) if type(seqs) is list else ()
    refused = msg.get("refused")
    if refused and type(refused) is list:
        meta += ("refused", len(refused))
    superseded = msg.get("superseded")
    if superseded and type(superseded) is list:
        meta += ("superseded", len(superseded))
    return meta


def _request(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    since = msg.get("since")
    if type(since) is int:
        return ("since", since)
    return _pairs("paths", _count(msg.get("paths")))


def _paths(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    return _pairs("paths", _count(msg.get("paths")))


def _mst_root(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    return _pairs("root", _str(msg.get("root")), "count", _int(msg.get("count")))


def _mst_get(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    return _pairs("hashes", _count(msg.get("hashes")))


def _mst_nodes(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    return _pairs("nodes", _count(msg.get("nodes")))


def _mst_probe(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    # The body names paths (region bounds) and carries entries: the record's size is all.
    return ()


def _presence(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    peers = msg.get("peers")
    if peers is not None:  # server -> client: a batch; how many peers, not their states
        return _pairs("peers", _count(peers))
    return ("cleared", True) if msg.get("state") is None else ()


def _presence_leave(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    return _pairs("left", _str(msg.get("peer")))


def _blob(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    """Every blob message: its hash, declared size, refusal reason and expiry, never its
    ``data``, ``url`` or ``headers``; a ``blob`` answer says which way it came."""
    via = None
    if msg.get("type") == "blob":
        via = "url" if "url" in msg else "inline"
    return _pairs(
        "hash", _str(msg.get("hash")),
        "size", _int(msg.get("size")),
        "reason", _str(msg.get("reason")),
        "expires", _int(msg.get("expires")),
        "via", via,
    )  # fmt: skip


def _error(msg: Mapping[str, Any]) -> tuple[Any, ...]:
    # The human message is left out: it may quote what the peer sent (a path, a field).
    return _pairs(
        "code", _str(msg.get("code")),
        "ref", _str(msg.get("ref")),
        "hash", _str(msg.get("hash")),
        "reason", _str(msg.get("reason")),
        "retry_after_ms", _int(msg.get("retry_after_ms")),
    )  # fmt: skip


_DESCRIBE: dict[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]] = {
    "hello": _hello,
    "welcome": _welcome,
    "pack": _pack,
    "ack": _ack,
    "request": _request,
    "subscribe": _paths,
    "mst-root": _mst_root,
    "mst-get": _mst_get,
    "mst-nodes": _mst_nodes,
    "mst-probe": _mst_probe,
    "mst-sketch": _mst_probe,
    "presence": _presence,
    "presence-leave": _presence_leave,
    "blob-upload": _blob,
    "blob-uploaded": _blob,
    "blob-available": _blob,
    "blob-request": _blob,
    "blob": _blob,
    "request-upload": _blob,
    "upload-url": _blob,
    "upload-denied": _blob,
    "upload-rejected": _blob,
    "error": _error,
}

#: Envelope types a capture keeps (plus the pseudo-type ``close``).
KEPT_TYPES = frozenset(_DESCRIBE)


def describe(msg: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
    """``(type, flat metadata)`` of one envelope, or None when its type is not kept.

    Pure, and safe on anything a peer sends (wrong types are left out, long strings too).
    """
    type_ = msg.get("type")
    if not isinstance(type_, str):
        return None
    fn = _DESCRIBE.get(type_)
    return None if fn is None else (type_, fn(msg))


def envelope_record(
    at: int,
    dir: Direction,
    peer: str,
    msg: Mapping[str, Any],
    size: int,
    *,
    receivers: int | None = None,
) -> Record | None:
    """The record of envelope ``msg`` (``size`` bytes on the wire), or None when its type
    is not kept. ``receivers``: for a broadcast (``peer`` ``"*"``), how many got it."""
    described = describe(msg)
    if described is None:
        return None
    type_, meta = described
    if receivers is not None:
        meta = (*meta, "receivers", receivers)
    return (at, dir, peer, type_, size, *meta)


def close_record(
    at: int, dir: Direction, peer: str, code: int, error: str | None = None, size: int = 0
) -> Record:
    """A close as a record: ``dir`` ``out`` when the server closed, ``in`` when the peer
    did (or the connection dropped: 1006); ``error`` the code of the error sent before."""
    return (at, dir, peer, "close", size, "code", code, *_pairs("error", error))


def as_dict(record: Record) -> dict[str, Any]:
    """A record as ``room capture`` answers it: ``{at, dir, peer, type, bytes, ...}``."""
    out: dict[str, Any] = {
        "at": record[0],
        "dir": record[1],
        "peer": record[2],
        "type": record[3],
        "bytes": record[4],
    }
    for i in range(5, len(record) - 1, 2):
        out[record[i]] = record[i + 1]
    return out


class Capture:
    """The ring of one room's recent records, ``size`` at most (0: capture is off).

    The ring is made on the first record, so a room only pays while it has traffic:
    ``size`` records of about 160 bytes each at most. Every method is called on the
    event loop and costs O(1).
    """

    __slots__ = ("_now_ms", "_ring", "size")

    def __init__(self, size: int, now_ms: Callable[[], int]) -> None:
        self.size = size
        self._now_ms = now_ms
        self._ring: deque[Record] | None = None

    def _push(self, record: Record) -> None:
        ring = self._ring
        if ring is None:
            ring = self._ring = deque(maxlen=self.size)
        ring.append(record)

    # record_in and record_out are envelope_record without its layers: they run once per
    # pack and per ack, so they keep to a dict lookup, the describer and one tuple.

    def record_in(self, peer: str, msg: Mapping[str, Any], size: int) -> None:
        """``peer`` sent ``msg`` (a decoded frame of ``size`` bytes)."""
        if self.size:
            type_ = msg.get("type")
            fn = _DESCRIBE.get(type_) if type(type_) is str else None
            if fn is not None:
                self._push((self._now_ms(), "in", peer, type_, size, *fn(msg)))

    def record_out(
        self, peer: str, msg: Mapping[str, Any], size: int, *, receivers: int | None = None
    ) -> None:
        """``msg`` was written as a frame of ``size`` bytes to ``peer``, or (``peer``
        ``"*"``) broadcast once to ``receivers`` peers."""
        if self.size:
            type_ = msg.get("type")
            fn = _DESCRIBE.get(type_) if type(type_) is str else None
            if fn is not None:
                meta = fn(msg)
                if receivers is not None:
                    meta = (*meta, "receivers", receivers)
                self._push((self._now_ms(), "out", peer, type_, size, *meta))

    def record_frame(self, peer: str, type_: str, size: int, *meta: Any) -> None:
        """A frame written without its envelope at hand (broadcast packs, the chunks of a
        streamed answer): its type, size and flat ``key, value`` metadata (counts only)."""
        if self.size:
            self._push((self._now_ms(), "out", peer, type_, size, *meta))

    def record_close(
        self, dir: Direction, peer: str, code: int, error: str | None = None, size: int = 0
    ) -> None:
        if self.size:
            self._push(close_record(self._now_ms(), dir, peer, code, error, size))

    def resize(self, size: int) -> None:
        """Change the bound (a policy change): the newest records are kept; 0 drops all."""
        self.size = size
        ring = self._ring
        if ring is not None:
            self._ring = deque(ring, maxlen=size) if size else None

    def __len__(self) -> int:
        return len(self._ring) if self._ring is not None else 0

    def snapshot(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` records, oldest first, as :func:`as_dict` gives them."""
        ring = self._ring
        if ring is None or limit <= 0:
            return []
        newest = list(itertools.islice(reversed(ring), limit))
        newest.reverse()
        return [as_dict(r) for r in newest]
