"""Archive snapshots (SPEC §6 ``archive``): the canonical bytes of a room's live state.

A snapshot is a sequence of self-delimiting *chunks*; its bytes are their concatenation
and its ref is ``"sha256:" + hex(SHA-256(bytes))`` (:class:`SnapshotHasher`)::

    snapshot := header body*
    header   := MAGIC  varint(n)  JSON(n bytes)
    body     := varint(n)  postcard Pack(n bytes)        (at most CHUNK_ENTRIES changes)

- ``MAGIC`` is the 8 bytes ``RSARCH\\x00\\x01`` (format version 1).
- The header JSON is canonical: keys sorted, no spaces, UTF-8:
  ``{"count": live entries, "head": the room's durable head, "room": id, "root": the
  canonical root (SPEC §1) of the entries}``.
- The bodies hold every live entry of the room exactly once, in ascending UTF-8 order of
  their paths, as postcard ``Pack`` payloads (the wire encoding of SPEC §2) with ``seq``
  None: a seq is the room's own numbering, not part of the state. Tombstones are not
  archived (a restored room starts compacted, SPEC §6 restore).

The same state at the same head of the same room always gives the same bytes, so the same
ref. Chunks are bounded (``CHUNK_ENTRIES``), so a restore decodes one chunk at a time and
never holds the encoded and the decoded state at once. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .entries import Change
from .errors import CodecError
from .postcard import Reader, decode_pack, encode_pack, varint_bytes

__all__ = [
    "CHUNK_ENTRIES",
    "MAGIC",
    "REF_PREFIX",
    "SnapshotHasher",
    "SnapshotHeader",
    "decode_body",
    "decode_header",
    "encode_snapshot",
    "split_snapshot",
]

MAGIC = b"RSARCH\x00\x01"
REF_PREFIX = "sha256:"
#: Live entries per body chunk.
CHUNK_ENTRIES = 4096
_MAX_HEADER = 4096


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    room: str
    head: int
    root: str
    count: int

    def encode(self) -> bytes:
        body = json.dumps(
            {"count": self.count, "head": self.head, "room": self.room, "root": self.root},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")
        return MAGIC + varint_bytes(len(body)) + body


def _path(change: Change) -> str:
    return change.path


def encode_snapshot(header: SnapshotHeader, entries: Iterable[Change]) -> Iterator[bytes]:
    """The snapshot's chunks: the header, then the live ones of ``entries`` (a state: one
    entry per path) in UTF-8 path order, ``CHUNK_ENTRIES`` per chunk."""
    yield header.encode()
    # Code-point order is UTF-8 byte order (paths hold no surrogates, SPEC §1).
    live = sorted((c for c in entries if c.value is not None), key=_path)
    if len(live) != header.count:
        raise ValueError(f"header says {header.count} live entries, the state has {len(live)}")
    for start in range(0, len(live), CHUNK_ENTRIES):
        pack = encode_pack(live[start : start + CHUNK_ENTRIES], seqs=False)
        yield varint_bytes(len(pack)) + pack


class SnapshotHasher:
    """The ref of a snapshot, fed chunk by chunk."""

    __slots__ = ("_h", "size")

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._h.update(chunk)
        self.size += len(chunk)

    @property
    def ref(self) -> str:
        return REF_PREFIX + self._h.hexdigest()


def _framed(data: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """The varint-framed payload at ``pos`` of ``data`` and the position after it."""
    r = Reader(data[pos : pos + 10])
    n = r.u64(f"archive {what} length")
    start = pos + r.pos
    end = start + n
    if end > len(data):
        raise CodecError(f"archive {what}: {n} bytes announced, {len(data) - start} left")
    return data[start:end], end


def decode_header(chunk: bytes) -> SnapshotHeader:
    """The header chunk, checked (magic, canonical JSON, field types)."""
    if not chunk.startswith(MAGIC):
        raise CodecError("not a roomsync archive (bad magic)")
    body, end = _framed(chunk, len(MAGIC), "header")
    if end != len(chunk) or len(body) > _MAX_HEADER:
        raise CodecError("archive header: bad length")
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise CodecError(f"archive header is not JSON: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != {"count", "head", "room", "root"}:
        raise CodecError("archive header: fields must be count, head, room, root")
    header = SnapshotHeader(obj["room"], obj["head"], obj["root"], obj["count"])
    if (
        not isinstance(header.room, str)
        or not isinstance(header.root, str)
        or type(header.head) is not int
        or type(header.count) is not int
        or header.head < 0
        or header.count < 0
    ):
        raise CodecError("archive header: bad field types")
    if header.encode() != chunk:
        raise CodecError("archive header is not canonical")
    return header


def decode_body(chunk: bytes) -> list[Change]:
    """The entries of one body chunk (its framing checked)."""
    pack, end = _framed(chunk, 0, "body")
    if end != len(chunk):
        raise CodecError("archive body chunk: trailing bytes")
    return decode_pack(pack)


def split_snapshot(data: bytes) -> list[bytes]:
    """Cut whole snapshot bytes back into their chunks (the framing says where)."""
    if not data.startswith(MAGIC):
        raise CodecError("not a roomsync archive (bad magic)")
    _, pos = _framed(data, len(MAGIC), "header")
    chunks = [data[:pos]]
    while pos < len(data):
        start = pos
        _, pos = _framed(data, pos, "body")
        chunks.append(data[start:pos])
    return chunks
