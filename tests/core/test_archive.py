"""The archive snapshot format (:mod:`roomsync.core.archive`, docs/protocol.md "Archive
snapshots"): canonical bytes, chunk framing, refs, and a hand-built golden snapshot."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomsync.core.archive import (
    CHUNK_ENTRIES,
    MAGIC,
    SnapshotHasher,
    SnapshotHeader,
    decode_body,
    decode_header,
    encode_snapshot,
    split_snapshot,
)
from roomsync.core.entries import Change
from roomsync.core.errors import CodecError
from roomsync.core.mst import MerkleSearchTree, build_root


def _snapshot(room: str, head: int, entries: list[Change]) -> list[bytes]:
    live = [c for c in entries if c.value is not None]
    header = SnapshotHeader(room, head, build_root(live), len(live))
    return list(encode_snapshot(header, entries))


def _ref(chunks: list[bytes]) -> str:
    hasher = SnapshotHasher()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.ref


def test_golden_snapshot_built_by_hand() -> None:
    entries = [Change("/b", 2, 0, "x", b"B", 9), Change("/a", 1, 3, "y", b"A", 4)]
    chunks = _snapshot("doc", 9, entries)
    header_json = json.dumps(
        {"count": 2, "head": 9, "room": "doc", "root": build_root(entries)},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    assert chunks[0] == MAGIC + bytes([len(header_json)]) + header_json
    # Pack { changes: [/a, /b] } by hand: varint(2), then per change: path, ts, counter,
    # actor, Op::Set(0) + bytes, seq None (0).
    pack = bytes([2]) + b"\x02/a\x01\x03\x01y\x00\x01A\x00" + b"\x02/b\x02\x00\x01x\x00\x01B\x00"
    assert chunks[1:] == [bytes([len(pack)]) + pack]
    assert _ref(chunks) == "sha256:" + hashlib.sha256(b"".join(chunks)).hexdigest()


@given(
    st.dictionaries(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6).map(
            lambda s: "/" + s
        ),
        st.one_of(st.none(), st.binary(max_size=8)),
        max_size=40,
    ),
    st.integers(min_value=0, max_value=10**6),
)
@settings(max_examples=150, deadline=None)
def test_round_trip_and_canonical(values: dict[str, bytes | None], head: int) -> None:
    entries = [Change(p, 1000 + i, 0, "a", v, i + 1) for i, (p, v) in enumerate(values.items())]
    chunks = _snapshot("r", head, entries)
    again = _snapshot("r", head, list(reversed(entries)))
    assert chunks == again  # the order entries come in does not matter
    header = decode_header(chunks[0])
    decoded = [c for chunk in chunks[1:] for c in decode_body(chunk)]
    live = sorted((c for c in entries if c.value is not None), key=lambda c: c.path.encode())
    assert decoded == [c.with_seq(None) for c in live]
    assert header.count == len(live)
    assert header.root == MerkleSearchTree(decoded).root_hex
    assert split_snapshot(b"".join(chunks)) == chunks


def test_chunks_are_bounded() -> None:
    n = CHUNK_ENTRIES * 2 + 5
    entries = [Change(f"/k{i:06d}", 1, 0, "a", b"v") for i in range(n)]
    chunks = _snapshot("r", n, entries)
    assert [len(decode_body(c)) for c in chunks[1:]] == [CHUNK_ENTRIES, CHUNK_ENTRIES, 5]


def test_bad_snapshots_are_codec_errors() -> None:
    chunks = _snapshot("r", 1, [Change("/a", 1, 0, "a", b"v")])
    with pytest.raises(CodecError):
        decode_header(b"NOTMAGIC" + chunks[0][8:])
    with pytest.raises(CodecError):
        decode_header(chunks[0] + b" ")
    spaced = MAGIC + bytes([3]) + b"{ }"
    with pytest.raises(CodecError):
        decode_header(spaced)
    not_canonical = b'{"room":"r","head":1,"root":"x","count":0}'
    with pytest.raises(CodecError):
        decode_header(MAGIC + bytes([len(not_canonical)]) + not_canonical)
    with pytest.raises(CodecError):
        decode_body(chunks[1][:-1])
    with pytest.raises(CodecError):
        decode_body(chunks[1] + b"\x00")
    with pytest.raises(CodecError):
        split_snapshot(b"".join(chunks)[:-1])
    with pytest.raises(ValueError):
        list(encode_snapshot(SnapshotHeader("r", 1, "x", 5), [Change("/a", 1, 0, "a", b"v")]))
