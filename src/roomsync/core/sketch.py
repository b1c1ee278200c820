"""Batched MST reconcile (issue 13): ``mst-probe`` → and ``mst-sketch`` ←, sans I/O.

The classic walk (``mst-get``/``mst-nodes``, :func:`~roomsync.core.reconcile.reconcile`)
fetches whole nodes, one tree level per round trip. This one asks about *key regions*
and gets truncated fingerprints back, several levels per round trip, and at the bottom
the prober sends what it knows (truncated leaf digests) and the server answers with the
differing entries themselves. The wire format is in ``docs/protocol.md`` ("Batched
reconcile"); this module holds it, the fingerprints, and the server's answer
(:func:`serve_probes`). The client's flow is
:func:`roomsync.core.reconcile.reconcile_batched`.

Regions and slots
-----------------
A region is ``[lo, hi)`` over path order (``(lo, hi)`` when ``lo`` is not included;
None: unbounded). Its node is the canonical node of the live entries strictly between
the bounds (:meth:`~roomsync.core.mst.MerkleSearchTree.region`); the node's entries
``e1 < ... < em`` cut the region into ``m + 1`` *slots* ``[lo, e1), [e1, e2), ...,
[em, hi)``. A slot's fingerprint is the top ``bits`` bits of SHA-256 of postcard::

    struct SlotDigest { lo: Option<String>, lo_incl: bool, leaf: Option<[u8;32]>,
                        child: Option<[u8;32]>, hi: Option<String> }

``leaf`` is the leaf of ``lo`` when the slot includes it and it is live, ``child`` the
hash of the canonical node strictly between the slot's bounds. Both bounds are in it, so
two equal fingerprints mean the same region with the same content on both sides, at
whatever index they sit. That is what makes the walk correct for arbitrary divergence:
the prober splits every region by its *own* slots, and each slot either matches one of
the server's (done) or is probed again as a region of its own. A leaf digest is the top
``bits`` bits of the leaf hash (SPEC §1), which covers the path and the version.

Truncation can hide a difference (about ``2**-bits`` per compared item). The flow never
claims success on fingerprints alone: the driver compares the roots once the entries are
merged and falls back to the exact walk when they differ.

Bounds on the server's work (each refusal is ``too-large`` or ``malformed-envelope``,
and the session survives): at most :data:`MAX_PROBES` probes and :data:`MAX_DIGESTS`
digests a request, :data:`MAX_SLOTS` fingerprints an answer, a leaves probe answers for
at most :data:`MAX_LEAVES` entries of the server (a larger region gets a sketch instead),
at most :data:`MAX_INLINE_BYTES` of entries inline and :data:`MAX_MORE_PATHS` more named
by path; probes past a budget are *deferred* (asked again next round). Everything is read
from the room's own tree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from .entries import Change
from .errors import CodecError, MalformedEnvelope, TooLarge
from .mst import MerkleSearchTree, Region
from .postcard import HASH_LEN, Reader, Writer, decode_pack, encode_pack

BITS_MIN = 4
BITS_MAX = 32
DEFAULT_BITS = 20
"""Slot fingerprint width the SDK asks for: one missed difference in a million compared."""
DEFAULT_LEAF_BITS = 6
"""Leaf digest width the SDK asks for: a leaves answer's checksum catches the differing
entries whose short digests matched (about one in 64), whose regions are asked for
again with 32-bit digests. Cheapest overall around 5 to 6 bits."""

MAX_PROBES = 4096
"""Probes in one ``mst-probe``."""
MAX_DIGESTS = 65_536
"""Leaf digests in one ``mst-probe``, all probes together."""
MAX_SLOTS = 16_384
"""Slot fingerprints in one ``mst-sketch`` (the request's ``budget`` is capped by it)."""
MAX_DEPTH = 8
"""Levels one sketch probe may ask for."""
MAX_LEAVES = 256
"""Server entries a leaves probe is answered for; a larger region is sketched instead."""
MAX_SCAN = 65_536
"""Server entries read for the leaves probes of one request; the rest are deferred."""
MAX_INLINE_BYTES = 1 << 20
"""Postcard bytes of the entries sent inline in one ``mst-sketch``."""
MAX_MORE_PATHS = 4096
"""Differing paths named (without their entries) once the inline budget is spent."""
MAX_BOUND_BYTES = 1024
"""A bound is a path (SPEC §1: at most 1,024 bytes)."""
MAX_INFLATED_BYTES = 64 << 20
"""A client refuses inline entries that inflate past this (a decompression bomb)."""
DEFLATE_MIN_BYTES = 1024

_FLAG_LO = 0x01
_FLAG_LO_INCL = 0x02
_FLAG_HI = 0x04
_FLAG_LEAVES = 0x08
_FLAGS_KNOWN = _FLAG_LO | _FLAG_LO_INCL | _FLAG_HI | _FLAG_LEAVES
_ENTRIES_DEFLATED = 0x01

_RESULT_DEFERRED = 0
_RESULT_SKETCH = 1
_RESULT_LEAVES = 2
_RESULT_NAMED = 3

_sha256 = hashlib.sha256


# -- fingerprints ----------------------------------------------------------------------------


def _opt_str(w: list[bytes], text: str | None) -> None:
    if text is None:
        w.append(b"\x00")
    else:
        raw = text.encode("utf-8")
        w.append(b"\x01" + _varint(len(raw)) + raw)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def slot_fp32(region: Region) -> int:
    """The 32-bit fingerprint of ``region`` as a slot (``SlotDigest`` above)."""
    parts: list[bytes] = []
    _opt_str(parts, region.lo)
    parts.append(b"\x01" if region.lo_incl else b"\x00")
    lower = region.lower
    parts.append(b"\x00" if lower is None else b"\x01" + lower)
    child = region.child_hash()
    parts.append(b"\x00" if child is None else b"\x01" + child)
    _opt_str(parts, region.hi)
    return int.from_bytes(_sha256(b"".join(parts)).digest()[:4], "big")


def region_fps(region: Region, bits: int) -> list[int]:
    """The fingerprints of the slots of ``region``, in order."""
    shift = 32 - bits
    return [slot_fp32(region.slot_region(s)) >> shift for s in range(region.slot_count)]


def leaf_digest(leaf: bytes, bits: int) -> int:
    """The top ``bits`` bits of a leaf hash."""
    return int.from_bytes(leaf[:4], "big") >> (32 - bits)


def leaf_checksum(leaves: Sequence[bytes]) -> int:
    """Sum of the leaves' first 16 bits, mod 2**16: a region's content, order-free."""
    return sum(int.from_bytes(leaf[:2], "big") for leaf in leaves) & 0xFFFF


def _pack_ints(values: Sequence[int], bits: int) -> bytes:
    n = len(values)
    if not n:
        return b""
    acc = 0
    for v in values:
        acc = (acc << bits) | v
    nbytes = (n * bits + 7) // 8
    return (acc << (nbytes * 8 - n * bits)).to_bytes(nbytes, "big")


def _unpack_ints(data: bytes, n: int, bits: int) -> list[int]:
    if not n:
        return []
    nbytes = len(data)
    acc = int.from_bytes(data, "big") >> (nbytes * 8 - n * bits)
    mask = (1 << bits) - 1
    return [(acc >> (bits * (n - 1 - i))) & mask for i in range(n)]


def _bitmap(indices: Sequence[int], n: int) -> bytes:
    out = bytearray((n + 7) // 8)
    for i in indices:
        out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def _bits_set(data: bytes, n: int) -> list[int]:
    return [i for i in range(n) if data[i >> 3] & (0x80 >> (i & 7))]


# -- messages --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """One question about region ``[lo, hi)`` (``(lo, hi)`` unless ``lo_incl``).

    A *sketch* probe (``digests`` None) asks for the slot fingerprints of the server's
    node for the region, ``depth`` levels down. A *leaves* probe sends the prober's leaf
    digests for its live entries of the region, sorted by path, and asks for the
    server's entries that differ.
    """

    lo: str | None
    lo_incl: bool
    hi: str | None
    depth: int = 1
    digests: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """The body of ``mst-probe``: fingerprint widths (slots, leaf digests), slot budget,
    probes."""

    bits: int
    leaf_bits: int
    budget: int
    probes: tuple[Probe, ...]


@dataclass(frozen=True, slots=True)
class SketchNode:
    """The server's slots of one region: their fingerprints and, for the levels it
    expanded, the sub-node of every slot with a non-empty child (None otherwise; the
    whole tuple is None at the last level it sent)."""

    fps: tuple[int, ...]
    children: tuple[SketchNode | None, ...] | None


@dataclass(frozen=True, slots=True)
class Deferred:
    """The server ran out of budget before this probe: ask again."""


@dataclass(frozen=True, slots=True)
class Sketch:
    """Answer to a sketch probe; or, with ``names``, to a leaves probe whose region holds
    more than :data:`MAX_LEAVES` entries on the server: one level, and the paths of the
    server's node, so that a prober with little in the region can split it at them."""

    node: SketchNode
    names: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Leaves:
    """Answer to a leaves probe.

    ``unmatched``: indices of the prober's digests that match none of the server's
    (those entries differ or are absent there). ``entries``: the server's entries of the
    region that match none of the prober's. ``more``: further such entries, named by
    path only (the inline budget was spent): fetch them with ``request{paths}``.
    """

    unmatched: tuple[int, ...]
    entries: tuple[Change, ...]
    more: tuple[str, ...] = ()
    #: :func:`leaf_checksum` of the server's entries of the region: the prober checks its
    #: merge against it, which catches what short leaf digests let through.
    checksum: int = 0


ProbeResult = Deferred | Sketch | Leaves


@dataclass(frozen=True, slots=True)
class SketchAnswer:
    """The body of ``mst-sketch``: the server's root when it answered, one result a probe."""

    root: bytes | None
    results: tuple[ProbeResult, ...]


# -- encoding --------------------------------------------------------------------------------


def _write_bound(w: Writer, text: str, prev: bytes) -> bytes:
    raw = text.encode("utf-8")
    shared = 0
    limit = min(len(raw), len(prev))
    while shared < limit and raw[shared] == prev[shared]:
        shared += 1
    w.varint(shared)
    w.bytes_(raw[shared:])
    return raw


def _read_bound(r: Reader, prev: bytes) -> tuple[str, bytes]:
    shared = r.u32("bound prefix")
    if shared > len(prev):
        raise CodecError(f"bad postcard: bound shares {shared} bytes of a {len(prev)}-byte one")
    raw = prev[:shared] + r.bytes_("bound")
    if len(raw) > MAX_BOUND_BYTES:
        raise CodecError(f"bad postcard: bound of {len(raw)} bytes (at most {MAX_BOUND_BYTES})")
    try:
        return raw.decode("utf-8"), raw
    except UnicodeDecodeError:
        raise CodecError("bad postcard: bound is not UTF-8") from None


def encode_request(request: ProbeRequest) -> bytes:
    """Postcard of ``mst-probe``'s ``data`` (``docs/protocol.md``)."""
    bits, leaf_bits = request.bits, request.leaf_bits
    if not (BITS_MIN <= bits <= BITS_MAX and BITS_MIN <= leaf_bits <= BITS_MAX):
        raise ValueError(f"bits must be {BITS_MIN}..{BITS_MAX}")
    w = Writer()
    w.buf.append(bits)
    w.buf.append(leaf_bits)
    w.varint(request.budget)
    w.varint(len(request.probes))
    prev = b""
    for p in request.probes:
        flags = (
            (_FLAG_LO if p.lo is not None else 0)
            | (_FLAG_LO_INCL if p.lo_incl and p.lo is not None else 0)
            | (_FLAG_HI if p.hi is not None else 0)
            | (_FLAG_LEAVES if p.digests is not None else 0)
        )
        w.buf.append(flags)
        if p.lo is not None:
            prev = _write_bound(w, p.lo, prev)
        if p.hi is not None:
            prev = _write_bound(w, p.hi, prev)
        if p.digests is None:
            w.buf.append(p.depth)
        else:
            w.varint(len(p.digests))
            w.buf += _pack_ints(p.digests, leaf_bits)
    return w.getvalue()


def decode_request(data: bytes) -> ProbeRequest:
    """Inverse of :func:`encode_request`, with the server's bounds.

    Raises :class:`MalformedEnvelope` (bad postcard, bad field) or :class:`TooLarge`
    (more probes or digests than allowed), both with ``close`` None.
    """
    try:
        return _decode_request(data)
    except CodecError as exc:
        raise MalformedEnvelope(f"mst-probe.data: {exc.message}", close=None) from None


def _decode_request(data: bytes) -> ProbeRequest:
    r = Reader(data)
    if len(data) < 2:
        raise CodecError("bad postcard: truncated request")
    bits, leaf_bits = data[0], data[1]
    r.pos = 2
    if not (BITS_MIN <= bits <= BITS_MAX and BITS_MIN <= leaf_bits <= BITS_MAX):
        raise MalformedEnvelope(
            f"mst-probe.data: widths {bits}, {leaf_bits} not in {BITS_MIN}..{BITS_MAX}",
            close=None,
        )
    budget = r.u32("budget")
    n = r.sequence_length("probes", 2)
    if n > MAX_PROBES:
        raise TooLarge(f"mst-probe: {n} probes (at most {MAX_PROBES})")
    probes: list[Probe] = []
    prev = b""
    digests_total = 0
    for _ in range(n):
        if r.pos >= len(data):
            raise CodecError("bad postcard: truncated probe")
        flags = data[r.pos]
        r.pos += 1
        if flags & ~_FLAGS_KNOWN:
            raise CodecError(f"bad postcard: probe flags {flags:#04x}")
        lo = hi = None
        if flags & _FLAG_LO:
            lo, prev = _read_bound(r, prev)
        elif flags & _FLAG_LO_INCL:
            raise CodecError("bad postcard: lo inclusive without lo")
        if flags & _FLAG_HI:
            hi, prev = _read_bound(r, prev)
        lo_incl = bool(flags & _FLAG_LO_INCL)
        if flags & _FLAG_LEAVES:
            count = r.u32("digest count")
            digests_total += count
            if digests_total > MAX_DIGESTS:
                raise TooLarge(f"mst-probe: more than {MAX_DIGESTS} digests")
            nbytes = (count * leaf_bits + 7) // 8
            if nbytes > len(data) - r.pos:
                raise CodecError("bad postcard: digests past end of input")
            raw = data[r.pos : r.pos + nbytes]
            r.pos += nbytes
            probes.append(Probe(lo, lo_incl, hi, 0, tuple(_unpack_ints(raw, count, leaf_bits))))
        else:
            if r.pos >= len(data):
                raise CodecError("bad postcard: truncated probe depth")
            depth = data[r.pos]
            r.pos += 1
            if not 1 <= depth <= MAX_DEPTH:
                raise MalformedEnvelope(
                    f"mst-probe.data: depth {depth} not in 1..{MAX_DEPTH}", close=None
                )
            probes.append(Probe(lo, lo_incl, hi, depth))
    r.finish()
    return ProbeRequest(bits, leaf_bits, budget, tuple(probes))


def _write_sketch(w: Writer, levels: list[list[Region]], bits: int) -> int:
    """BFS nodes of a sketch (``levels[k]``: the regions at depth k); the slots written."""
    w.buf.append(len(levels))
    slots = 0
    last = len(levels) - 1
    for depth, regions in enumerate(levels):
        for region in regions:
            fps = region_fps(region, bits)
            slots += len(fps)
            w.varint(len(fps))
            w.buf += _pack_ints(fps, bits)
            if depth < last:
                kids = [s for s in range(len(fps)) if region.slot_has_child(s)]
                w.buf += _bitmap(kids, len(fps))
    return slots


def _read_sketch(r: Reader, bits: int) -> SketchNode:
    data = r.data
    if r.pos >= len(data):
        raise CodecError("bad postcard: truncated sketch")
    n_levels = data[r.pos]
    r.pos += 1
    if not 1 <= n_levels <= MAX_DEPTH:
        raise CodecError(f"bad postcard: sketch of {n_levels} levels")
    # Read BFS, then link each node to its parent slot.
    wanted = 1
    levels: list[list[tuple[list[int], list[int] | None]]] = []
    for depth in range(n_levels):
        row: list[tuple[list[int], list[int] | None]] = []
        next_wanted = 0
        for _ in range(wanted):
            count = r.u32("slot count")
            if count < 1 or count > MAX_SLOTS:
                raise CodecError(f"bad postcard: node of {count} slots")
            nbytes = (count * bits + 7) // 8
            if nbytes > len(data) - r.pos:
                raise CodecError("bad postcard: fingerprints past end of input")
            fps = _unpack_ints(data[r.pos : r.pos + nbytes], count, bits)
            r.pos += nbytes
            kids: list[int] | None = None
            if depth < n_levels - 1:
                mbytes = (count + 7) // 8
                if mbytes > len(data) - r.pos:
                    raise CodecError("bad postcard: child bitmap past end of input")
                kids = _bits_set(data[r.pos : r.pos + mbytes], count)
                r.pos += mbytes
                next_wanted += len(kids)
            row.append((fps, kids))
        levels.append(row)
        wanted = next_wanted
    built: list[SketchNode] = []
    for row in reversed(levels):
        it = iter(built)
        now: list[SketchNode] = []
        for fps, kids in row:
            if kids is None:
                now.append(SketchNode(tuple(fps), None))
                continue
            children: list[SketchNode | None] = [None] * len(fps)
            for s in kids:
                children[s] = next(it)
            now.append(SketchNode(tuple(fps), tuple(children)))
        built = now
    return built[0]


def decode_answer(data: bytes, request: ProbeRequest) -> SketchAnswer:
    """``mst-sketch``'s ``data`` as the answer to ``request`` (it gives the digest
    counts and the fingerprint width); :class:`CodecError` when it does not fit."""
    r = Reader(data)
    root = r.hash32("root")
    n = r.sequence_length("results", 1)
    if n != len(request.probes):
        raise CodecError(f"bad postcard: {n} results for {len(request.probes)} probes")
    bits = request.bits
    pending: list[tuple[int, list[int], int, list[str], int]] = []
    results: list[ProbeResult | None] = []
    for i, probe in enumerate(request.probes):
        if r.pos >= len(data):
            raise CodecError("bad postcard: truncated result")
        tag = data[r.pos]
        r.pos += 1
        if tag == _RESULT_DEFERRED:
            results.append(Deferred())
        elif tag == _RESULT_SKETCH:
            results.append(Sketch(_read_sketch(r, bits)))
        elif tag == _RESULT_NAMED and probe.digests is not None:
            node = _read_sketch(r, bits)
            names: list[str] = []
            prev = b""
            for _ in range(len(node.fps) - 1):
                name, prev = _read_bound(r, prev)
                names.append(name)
            results.append(Sketch(node, tuple(names)))
        elif tag == _RESULT_LEAVES and probe.digests is not None:
            count = len(probe.digests)
            n_unmatched = r.sequence_length("unmatched", 1)
            unmatched = [r.u32("index") for _ in range(n_unmatched)]
            if any(i >= count for i in unmatched) or unmatched != sorted(set(unmatched)):
                raise CodecError("bad postcard: unmatched indices out of order or range")
            if len(data) - r.pos < 2:
                raise CodecError("bad postcard: truncated checksum")
            checksum = int.from_bytes(data[r.pos : r.pos + 2], "big")
            r.pos += 2
            n_entries = r.u32("entry count")
            n_more = r.sequence_length("more", 1)
            more = [r.string("path") for _ in range(n_more)]
            pending.append((i, unmatched, n_entries, more, checksum))
            results.append(None)
        else:
            raise CodecError(f"bad postcard: result tag {tag} for probe {i}")
    if r.pos >= len(data):
        raise CodecError("bad postcard: truncated entries flags")
    flags = data[r.pos]
    r.pos += 1
    if flags & ~_ENTRIES_DEFLATED:
        raise CodecError(f"bad postcard: entries flags {flags:#04x}")
    packed = r.bytes_("entries")
    r.finish()
    if flags & _ENTRIES_DEFLATED:
        packed = _inflate(packed)
    changes = decode_pack(packed) if packed else []
    if sum(p[2] for p in pending) != len(changes):
        raise CodecError("bad postcard: entry counts do not add up to the entries sent")
    at = 0
    for i, unmatched, n_entries, more, checksum in pending:
        results[i] = Leaves(
            tuple(unmatched), tuple(changes[at : at + n_entries]), tuple(more), checksum
        )
        at += n_entries
    done = tuple(x for x in results if x is not None)
    assert len(done) == len(results)
    return SketchAnswer(None if root == bytes(HASH_LEN) else root, done)


def _deflate(data: bytes) -> bytes | None:
    if len(data) < DEFLATE_MIN_BYTES:
        return None
    z = zlib.compressobj(1, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush()
    return out if len(out) <= len(data) * 9 // 10 else None


def _inflate(data: bytes) -> bytes:
    z = zlib.decompressobj(-15)
    try:
        out = z.decompress(data, MAX_INFLATED_BYTES + 1)
    except zlib.error as exc:
        raise CodecError(f"bad postcard: bad deflate data in entries ({exc})") from None
    if len(out) > MAX_INFLATED_BYTES or not z.eof or z.unused_data:
        raise CodecError("bad postcard: entries inflate badly or past the limit")
    return out


# -- the server ------------------------------------------------------------------------------


def _sketch_levels(region: Region, depth: int, budget: int) -> tuple[list[list[Region]], int]:
    """The regions of a sketch of ``region``, level by level, as deep as ``depth`` and
    ``budget`` allow (a level is sent whole or not at all; the first always)."""
    levels = [[region]]
    used = region.slot_count
    while len(levels) < depth:
        nxt = [
            r.slot_region(s) for r in levels[-1] for s in range(r.slot_count) if r.slot_has_child(s)
        ]
        n = sum(r.slot_count for r in nxt)
        if not nxt or used + n > budget:
            break
        levels.append(nxt)
        used += n
    return levels, used


def serve_probe_message(tree: MerkleSearchTree, data: str) -> str:
    """``mst-probe{data}`` (base64) -> ``mst-sketch{data}`` (base64), for the server.

    Bad base64 or postcard is :class:`MalformedEnvelope`, an oversized request
    :class:`TooLarge`; both leave the session up (``close`` None).
    """
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEnvelope("mst-probe.data: bad base64", close=None) from None
    return base64.b64encode(serve_probes(tree, raw)).decode("ascii")


def serve_probes(tree: MerkleSearchTree, data: bytes) -> bytes:
    """Answer ``mst-probe``'s ``data`` from ``tree``: ``mst-sketch``'s ``data``.

    Raises what :func:`decode_request` raises, and :class:`TooLarge` when the first
    probe alone needs more than :data:`MAX_SLOTS` fingerprints (a node that large is
    reconciled with ``mst-get``). Its cost is bounded by the module's limits.
    """
    request = decode_request(data)
    return answer_request(tree, request)


def answer_request(tree: MerkleSearchTree, request: ProbeRequest) -> bytes:
    """:func:`serve_probes` for a decoded request."""
    bits, leaf_bits = request.bits, request.leaf_bits
    budget = min(request.budget, MAX_SLOTS)
    w = Writer()
    root = tree.root_hash
    w.hash32(root if root is not None else bytes(HASH_LEN))
    w.varint(len(request.probes))
    slots_used = 0
    inline: list[Change] = []
    inline_bytes = 0
    more_left = MAX_MORE_PATHS
    scan_left = MAX_SCAN
    answered = False
    exhausted = False
    for probe in request.probes:
        if exhausted:
            w.buf.append(_RESULT_DEFERRED)
            continue
        digests = probe.digests
        if digests is not None:
            if scan_left <= 0 and answered:
                exhausted = True
                w.buf.append(_RESULT_DEFERRED)
                continue
            entries = tree.region_entries(probe.lo, probe.lo_incl, probe.hi, MAX_LEAVES)
            scan_left -= MAX_LEAVES + 1 if entries is None else len(entries)
            if entries is not None:
                ours = [leaf_digest(leaf, leaf_bits) for _, leaf, _ in entries]
                if len(ours) == len(digests):
                    unmatched = [i for i, d in enumerate(digests) if ours[i] != d]
                    send = [entries[i][2] for i in unmatched]
                else:
                    theirs = set(digests)
                    mine = set(ours)
                    unmatched = [i for i, d in enumerate(digests) if d not in mine]
                    send = [e[2] for e, d in zip(entries, ours, strict=True) if d not in theirs]
                keep: list[Change] = []
                more: list[str] = []
                room = MAX_INLINE_BYTES - inline_bytes
                for change in send:
                    size = _entry_size(change)
                    if size <= room:
                        keep.append(change)
                        room -= size
                    else:
                        more.append(change.path)
                if len(more) > more_left:
                    exhausted = True
                    w.buf.append(_RESULT_DEFERRED)
                    continue
                more_left -= len(more)
                inline_bytes = MAX_INLINE_BYTES - room
                inline += keep
                w.buf.append(_RESULT_LEAVES)
                w.varint(len(unmatched))
                for i in unmatched:
                    w.varint(i)
                w.buf += leaf_checksum([leaf for _, leaf, _ in entries]).to_bytes(2, "big")
                w.varint(len(keep))
                w.varint(len(more))
                for path in more:
                    w.string(path)
                answered = True
                continue
            depth = 1  # the region is large here: sketch it instead, with names
        else:
            depth = probe.depth
        region = tree.region(probe.lo, probe.lo_incl, probe.hi)
        if region.slot_count > budget - slots_used:
            if answered:
                exhausted = True
                w.buf.append(_RESULT_DEFERRED)
                continue
            if region.slot_count > MAX_SLOTS:
                raise TooLarge(
                    f"mst-probe: an MST node of {region.slot_count} slots; reconcile with mst-get"
                )
        levels, used = _sketch_levels(region, depth, max(budget - slots_used, region.slot_count))
        w.buf.append(_RESULT_SKETCH if digests is None else _RESULT_NAMED)
        _write_sketch(w, levels, bits)
        if digests is not None:
            prev = b""
            node = region.node
            for name in node.keys if node is not None else ():
                prev = _write_bound(w, name, prev)
        slots_used += used
        answered = True
    packed = encode_pack(inline) if inline else b""
    deflated = _deflate(packed)
    w.buf.append(_ENTRIES_DEFLATED if deflated is not None else 0)
    w.bytes_(deflated if deflated is not None else packed)
    return w.getvalue()


def _entry_size(change: Change) -> int:
    value = change.value
    return len(change.path) + len(change.actor) + (len(value) if value is not None else 0) + 24
