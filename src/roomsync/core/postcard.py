"""The postcard binary format, for the types SPEC §1 and §2 fix.

Postcard is the serde format of the Rust crate ``postcard``: unsigned integers are LEB128
varints, strings/bytes/sequences carry a varint length prefix, enums a varint
discriminant, ``Option`` is ``0x00`` or ``0x01`` + value, fixed arrays are raw bytes.
The types::

    struct Pack      { changes: Vec<Change> }
    struct Change    { path: String, ts: u64, counter: u32, actor: String, op: Op,
                       seq: Option<u64> }
    enum   Op        { Set(Vec<u8>) = 0, Delete = 1 }
    struct Leaf      { path: String, ts: u64, counter: u32, actor: String, value: Vec<u8> }
    struct Node      { left: Option<[u8;32]>, entries: Vec<NodeEntry> }
    struct NodeEntry { path: String, leaf: [u8;32], right: Option<[u8;32]> }

Decoding is strict: truncated input, overlong or overflowing varints, trailing bytes,
invalid UTF-8, unknown enum tags and lengths past the input all raise
:class:`~roomsync.core.errors.CodecError` with message ``bad postcard: <reason>``.
Golden vectors live in ``vectors/postcard.json`` (format in ``vectors/README.md``).
"""

from __future__ import annotations

from collections.abc import Callable

from .entries import Change
from .errors import CodecError

U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
HASH_LEN = 32

_OP_SET = 0
_OP_DELETE = 1


def _bad(reason: str) -> CodecError:
    return CodecError(f"bad postcard: {reason}")


class Writer:
    """Appends postcard primitives to a growing buffer."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def varint(self, value: int) -> None:
        buf = self.buf
        while value >= 0x80:
            buf.append((value & 0x7F) | 0x80)
            value >>= 7
        buf.append(value)

    def u32(self, value: int) -> None:
        if not 0 <= value <= U32_MAX:
            raise ValueError(f"u32 out of range: {value}")
        self.varint(value)

    def u64(self, value: int) -> None:
        if not 0 <= value <= U64_MAX:
            raise ValueError(f"u64 out of range: {value}")
        self.varint(value)

    def bytes_(self, data: bytes) -> None:
        self.varint(len(data))
        self.buf += data

    def string(self, text: str) -> None:
        self.bytes_(text.encode("utf-8"))

    def hash32(self, digest: bytes) -> None:
        if len(digest) != HASH_LEN:
            raise ValueError("a [u8;32] must be exactly 32 bytes")
        self.buf += digest

    def option_hash32(self, digest: bytes | None) -> None:
        if digest is None:
            self.buf.append(0)
        else:
            self.buf.append(1)
            self.hash32(digest)

    def getvalue(self) -> bytes:
        return bytes(self.buf)


class Reader:
    """Reads postcard primitives from ``data``; every failure is a :class:`CodecError`."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _varint(self, max_bytes: int, max_value: int, what: str) -> int:
        data = self.data
        pos = self.pos
        result = 0
        shift = 0
        for i in range(max_bytes):
            if pos >= len(data):
                raise _bad(f"truncated {what} at byte {pos}")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                if byte == 0 and i > 0:
                    raise _bad(f"overlong {what} at byte {self.pos}")
                if result > max_value:
                    raise _bad(f"{what} overflows at byte {self.pos}")
                self.pos = pos
                return result
            shift += 7
        raise _bad(f"overlong {what} at byte {self.pos}")

    def u32(self, what: str = "u32") -> int:
        return self._varint(5, U32_MAX, what)

    def u64(self, what: str = "u64") -> int:
        return self._varint(10, U64_MAX, what)

    def length(self, what: str) -> int:
        n = self._varint(10, U64_MAX, f"{what} length")
        if n > len(self.data) - self.pos:
            raise _bad(f"{what} length {n} past end of input at byte {self.pos}")
        return n

    def bytes_(self, what: str = "bytes") -> bytes:
        n = self.length(what)
        start = self.pos
        self.pos = start + n
        return bytes(self.data[start : start + n])

    def string(self, what: str = "string") -> str:
        start_pos = self.pos
        raw = self.bytes_(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(f"invalid UTF-8 in {what} at byte {start_pos}") from None

    def hash32(self, what: str = "hash") -> bytes:
        if len(self.data) - self.pos < HASH_LEN:
            raise _bad(f"truncated {what} at byte {self.pos}")
        start = self.pos
        self.pos += HASH_LEN
        return bytes(self.data[start : start + HASH_LEN])

    def option_tag(self, what: str) -> bool:
        if self.pos >= len(self.data):
            raise _bad(f"truncated {what} option at byte {self.pos}")
        tag = self.data[self.pos]
        if tag > 1:
            raise _bad(f"invalid option tag {tag} for {what} at byte {self.pos}")
        self.pos += 1
        return tag == 1

    def option_hash32(self, what: str) -> bytes | None:
        return self.hash32(what) if self.option_tag(what) else None

    def sequence_length(self, what: str, min_item_bytes: int) -> int:
        n = self._varint(10, U64_MAX, f"{what} count")
        if n * min_item_bytes > len(self.data) - self.pos:
            raise _bad(f"{what} count {n} past end of input at byte {self.pos}")
        return n

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise _bad(f"{len(self.data) - self.pos} trailing bytes at byte {self.pos}")


# -- Pack ------------------------------------------------------------------------------


def write_change(w: Writer, change: Change) -> None:
    w.string(change.path)
    w.u64(change.ts)
    w.u32(change.counter)
    w.string(change.actor)
    if change.value is None:
        w.varint(_OP_DELETE)
    else:
        w.varint(_OP_SET)
        w.bytes_(change.value)
    if change.seq is None:
        w.buf.append(0)
    else:
        w.buf.append(1)
        w.u64(change.seq)


# varint(ts >> 7) by ts >> 7, for encode_pack (bounded; cleared when full).
_TS_TAILS: dict[int, bytes] = {}
_TS_TAILS_MAX = 4096


def encode_pack(changes: list[Change] | tuple[Change, ...], *, seqs: bool = True) -> bytes:
    """``Pack { changes }`` as postcard bytes; with ``seqs`` False every ``seq`` is
    written as None (archive snapshots), as if the changes carried none.

    The hot path of every broadcast and catch-up: the C codec when it is built, else the
    fields written inline into one buffer (byte-for-byte what :func:`write_change`
    writes; both property-tested).
    """
    if _encode_pack_c is not None:
        encoded = _encode_pack_c(changes, seqs)
        if encoded is not None:
            return encoded  # else something is irregular: the code below raises
    buf = bytearray()
    app = buf.append

    def varint(n: int) -> None:
        while n >= 0x80:
            app((n & 0x7F) | 0x80)
            n >>= 7
        app(n)

    varint(len(changes))
    for c in changes:
        ts, counter, seq = c.ts, c.counter, c.seq if seqs else None
        if not 0 <= ts <= U64_MAX:
            raise ValueError(f"u64 out of range: ts {ts} of {c.path!r}")
        if not 0 <= counter <= U32_MAX:
            raise ValueError(f"u32 out of range: counter {counter} of {c.path!r}")
        if seq is not None and not 0 <= seq <= U64_MAX:
            raise ValueError(f"u64 out of range: seq {seq} of {c.path!r}")
        path = c.path.encode("utf-8")
        n = len(path)
        if n < 0x80:
            app(n)
        else:
            varint(n)
        buf += path
        # An HLC ts (ms since 1970) is a 6-byte varint whose last 5 bytes change every
        # 128 ms: they come from a small cache, the first byte is computed.
        app((ts & 0x7F) | 0x80 if ts >= 0x80 else ts)
        if ts >= 0x80:
            high = ts >> 7
            tail = _TS_TAILS.get(high)
            if tail is None:
                if len(_TS_TAILS) >= _TS_TAILS_MAX:
                    _TS_TAILS.clear()
                tail = _TS_TAILS[high] = varint_bytes(high)
            buf += tail
        if counter < 0x80:
            app(counter)
        else:
            varint(counter)
        actor = c.actor.encode("utf-8")
        n = len(actor)
        if n < 0x80:
            app(n)
        else:
            varint(n)
        buf += actor
        value = c.value
        if value is None:
            app(_OP_DELETE)
        else:
            app(_OP_SET)
            n = len(value)
            if n < 0x80:
                app(n)
            else:
                varint(n)
            buf += value
        if seq is None:
            app(0)
        else:
            app(1)
            if seq < 0x80:
                app(seq)
            elif seq < 0x4000:
                app((seq & 0x7F) | 0x80)
                app(seq >> 7)
            else:
                varint(seq)
    return bytes(buf)


def read_change(r: Reader) -> Change:
    path = r.string("path")
    ts = r.u64("ts")
    counter = r.u32("counter")
    actor = r.string("actor")
    op_pos = r.pos
    tag = r.u32("op tag")
    value: bytes | None
    if tag == _OP_SET:
        value = r.bytes_("value")
    elif tag == _OP_DELETE:
        value = None
    else:
        raise _bad(f"unknown Op tag {tag} at byte {op_pos}")
    seq = r.u64("seq") if r.option_tag("seq") else None
    return Change(path, ts, counter, actor, value, seq)


# The smallest Change: empty path and actor (1+1), ts and counter (1+1), Delete (1), None (1).
_MIN_CHANGE_BYTES = 6


_NO_TS6 = bytes(6)  # fewer than 6 bytes left: not a 6-byte ts, take the general path


# The fast decoder fills a Change's slots directly: the frozen dataclass's __init__ goes
# through object.__setattr__ once per field, which is half the cost of decoding a change.
# Change has no __post_init__, so the result is the same (tests/core/test_postcard.py).
_CHANGE_SLOT_SETTERS = tuple(
    getattr(Change, name).__set__ for name in ("path", "ts", "counter", "actor", "value", "seq")
)


class _OffFastPath(Exception):
    """The fast decoder met something unusual: the strict reader decides (and explains)."""


def _fast_varint(data: bytes, pos: int, max_bytes: int, max_value: int) -> tuple[int, int]:
    result = 0
    shift = 0
    for i in range(max_bytes):
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if (byte == 0 and i > 0) or result > max_value:
                raise _OffFastPath
            return result, pos
        shift += 7
    raise _OffFastPath


def _decode_pack_fast(data: bytes) -> list[Change]:
    """The hot path of :func:`decode_pack`: same format, same checks, no messages.

    Any irregularity raises ``_OffFastPath`` (or IndexError/UnicodeDecodeError) and the
    caller re-reads with the strict :class:`Reader`, which produces the documented error.
    The one-byte varint reads are repeated inline on purpose: a helper call per field
    costs about as much as the field itself.
    """
    size = len(data)
    n, pos = _fast_varint(data, 0, 10, U64_MAX)
    if n * _MIN_CHANGE_BYTES > size - pos:
        raise _OffFastPath
    out: list[Change] = []
    append = out.append
    new = object.__new__
    set_path, set_ts, set_counter, set_actor, set_value, set_seq = _CHANGE_SLOT_SETTERS
    for _ in range(n):
        b = data[pos]
        if b < 0x80:
            ln = b
            pos += 1
        else:
            ln, pos = _fast_varint(data, pos, 10, U64_MAX)
        end = pos + ln
        if end > size:
            raise _OffFastPath
        path = data[pos:end].decode("utf-8")
        pos = end
        # An HLC ts in ms is a 6-byte varint: read it in one go when it is one.
        b0, b1, b2, b3, b4, b5 = data[pos : pos + 6] if pos + 6 <= size else _NO_TS6
        if b0 & b1 & b2 & b3 & b4 & 0x80 and 0 < b5 < 0x80:
            ts = (
                (b0 & 0x7F)
                | (b1 & 0x7F) << 7
                | (b2 & 0x7F) << 14
                | (b3 & 0x7F) << 21
                | (b4 & 0x7F) << 28
                | b5 << 35
            )
            pos += 6
        else:
            ts, pos = _fast_varint(data, pos, 10, U64_MAX)
        b = data[pos]
        if b < 0x80:
            counter = b
            pos += 1
        else:
            counter, pos = _fast_varint(data, pos, 5, U32_MAX)
        b = data[pos]
        if b < 0x80:
            ln = b
            pos += 1
        else:
            ln, pos = _fast_varint(data, pos, 10, U64_MAX)
        end = pos + ln
        if end > size:
            raise _OffFastPath
        actor = data[pos:end].decode("utf-8")
        pos = end
        tag = data[pos]
        pos += 1
        value: bytes | None
        if tag == _OP_SET:
            b = data[pos]
            if b < 0x80:
                ln = b
                pos += 1
            else:
                ln, pos = _fast_varint(data, pos, 10, U64_MAX)
            end = pos + ln
            if end > size:
                raise _OffFastPath
            value = data[pos:end]
            pos = end
        elif tag == _OP_DELETE:
            value = None
        else:
            raise _OffFastPath
        opt = data[pos]
        pos += 1
        if opt == 0:
            seq = None
        elif opt == 1:
            b = data[pos]
            if b < 0x80:
                seq = b
                pos += 1
            else:
                b1 = data[pos + 1]
                if 0 < b1 < 0x80:
                    seq = (b & 0x7F) | b1 << 7
                    pos += 2
                else:
                    seq, pos = _fast_varint(data, pos, 10, U64_MAX)
        else:
            raise _OffFastPath
        change = new(Change)
        set_path(change, path)
        set_ts(change, ts)
        set_counter(change, counter)
        set_actor(change, actor)
        set_value(change, value)
        set_seq(change, seq)
        append(change)
    if pos != size:
        raise _OffFastPath
    return out


_Decoder = Callable[[bytes], "list[Change] | None"]
_Encoder = Callable[["list[Change] | tuple[Change, ...]", bool], "bytes | None"]


def _load_accelerator() -> tuple[_Decoder, _Encoder] | None:
    """The C codec (``_postcard_c``, built with the package when a compiler is there), or
    None when it is not built."""
    try:
        from . import _postcard_c
    except ImportError:
        return None
    _postcard_c.setup(
        Change,
        tuple(getattr(Change, name) for name in ("path", "ts", "counter", "actor", "value", "seq")),
    )
    return _postcard_c.decode_pack, _postcard_c.encode_pack


_C_CODEC = _load_accelerator()
_decode_pack_c: _Decoder | None = None
_encode_pack_c: _Encoder | None = None
#: True when :func:`decode_pack` and :func:`encode_pack` run the C codec (same bytes and
#: results, ~10-15x faster); the pure-Python code stays the fallback and the reference.
#: ``ROOMSYNC_PURE_PYTHON=1`` turns it off at import (read by ``roomsync/__init__.py``:
#: the core reads no environment), :func:`use_accelerator` at any time.
ACCELERATED = False


def use_accelerator(on: bool) -> bool:
    """Run the C codec (``on``, when it is built) or pure Python; returns whether the C
    codec is now in use (also :data:`ACCELERATED`)."""
    global _decode_pack_c, _encode_pack_c, ACCELERATED
    codec = _C_CODEC if on else None
    _decode_pack_c, _encode_pack_c = codec if codec is not None else (None, None)
    ACCELERATED = codec is not None
    return ACCELERATED


use_accelerator(True)


def decode_pack(data: bytes) -> list[Change]:
    """Decode ``Pack`` bytes; raise :class:`CodecError` on any deviation from the format.

    Field values are not validated here (paths, sizes): that is the room's job, so that a
    well-formed pack with one bad path is refused per change, not as a whole.

    A valid pack is read by the C decoder when it is built (:data:`ACCELERATED`), else by
    the Python fast path; anything irregular is read again by the strict :class:`Reader`,
    which raises the documented error (so errors never depend on the decoder).
    """
    data = bytes(data)
    if _decode_pack_c is not None:
        changes = _decode_pack_c(data)
        if changes is not None:
            return changes
    else:
        try:
            return _decode_pack_fast(data)
        except (_OffFastPath, IndexError, UnicodeDecodeError):
            pass
    r = Reader(data)
    n = r.sequence_length("changes", _MIN_CHANGE_BYTES)
    changes = [read_change(r) for _ in range(n)]
    r.finish()
    return changes


# -- MST leaf and node (SPEC §1) ----------------------------------------------------------


def varint_bytes(value: int) -> bytes:
    """LEB128 of a non-negative ``value``; one cached object for values below 128."""
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))
#: The first byte of a varint of at least two bytes, by its low 7 bits.
_CONT_BYTE = tuple(bytes((i | 0x80,)) for i in range(0x80))


def encode_leaf(change: Change) -> bytes:
    """``Leaf { path, ts, counter, actor, value }`` of a live entry.

    Hashed once per live entry when a Merkle Search Tree root is computed, so it is
    written with one ``join`` instead of :class:`Writer` calls (the same bytes; tested).
    """
    value = change.value
    if value is None:
        raise ValueError("tombstones have no MST leaf")
    ts, counter = change.ts, change.counter
    if not 0 <= ts <= U64_MAX:
        raise ValueError(f"u64 out of range: ts {ts} of {change.path!r}")
    if not 0 <= counter <= U32_MAX:
        raise ValueError(f"u32 out of range: counter {counter} of {change.path!r}")
    path = change.path.encode("utf-8")
    actor = change.actor.encode("utf-8")
    one = _ONE_BYTE
    n_path, n_actor, n_value = len(path), len(actor), len(value)
    if ts >= 0x80:
        # As in encode_pack: the first byte of an HLC ts is computed, the rest is cached.
        high = ts >> 7
        tail = _TS_TAILS.get(high)
        if tail is None:
            if len(_TS_TAILS) >= _TS_TAILS_MAX:
                _TS_TAILS.clear()
            tail = _TS_TAILS[high] = varint_bytes(high)
        ts_bytes = _CONT_BYTE[ts & 0x7F] + tail
    else:
        ts_bytes = one[ts]
    return b"".join(
        (
            one[n_path] if n_path < 0x80 else varint_bytes(n_path),
            path,
            ts_bytes,
            one[counter] if counter < 0x80 else varint_bytes(counter),
            one[n_actor] if n_actor < 0x80 else varint_bytes(n_actor),
            actor,
            one[n_value] if n_value < 0x80 else varint_bytes(n_value),
            value,
        )
    )


NodeEntryTuple = tuple[str, bytes, bytes | None]


def encode_node(left: bytes | None, entries: list[NodeEntryTuple]) -> bytes:
    """``Node { left, entries: [NodeEntry { path, leaf, right }] }``."""
    parts = [b"\x00" if left is None else b"\x01" + _hash32(left), varint_bytes(len(entries))]
    append = parts.append
    for path, leaf, right in entries:
        raw = path.encode("utf-8")
        append(varint_bytes(len(raw)))
        append(raw)
        append(_hash32(leaf))
        append(b"\x00" if right is None else b"\x01" + _hash32(right))
    return b"".join(parts)


def _hash32(digest: bytes) -> bytes:
    if len(digest) != HASH_LEN:
        raise ValueError("a [u8;32] must be exactly 32 bytes")
    return digest


def decode_node(data: bytes) -> tuple[bytes | None, list[NodeEntryTuple]]:
    """Inverse of :func:`encode_node`, strict like :func:`decode_pack`."""
    r = Reader(data)
    left = r.option_hash32("left")
    n = r.sequence_length("entries", 1 + HASH_LEN + 1)
    entries: list[NodeEntryTuple] = []
    for _ in range(n):
        path = r.string("path")
        leaf = r.hash32("leaf")
        right = r.option_hash32("right")
        entries.append((path, leaf, right))
    r.finish()
    return left, entries
