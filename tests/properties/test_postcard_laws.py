"""Laws of the postcard codec (SPEC §2): round-trip, strictness, "parses or raises CodecError"."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from roomsync.core.entries import Change
from roomsync.core.errors import CodecError
from roomsync.core.postcard import (
    U32_MAX,
    U64_MAX,
    decode_node,
    decode_pack,
    encode_node,
    encode_pack,
)

changes = st.builds(
    Change,
    path=st.text(max_size=24),
    ts=st.integers(0, U64_MAX),
    counter=st.integers(0, U32_MAX),
    actor=st.text(max_size=12),
    value=st.none() | st.binary(max_size=48),
    seq=st.none() | st.integers(0, U64_MAX),
)
packs = st.lists(changes, max_size=8)
hashes = st.binary(min_size=32, max_size=32)
node_entries = st.lists(st.tuples(st.text(max_size=16), hashes, st.none() | hashes), max_size=6)


@given(packs)
def test_pack_round_trip(pack: list[Change]) -> None:
    data = encode_pack(pack)
    assert decode_pack(data) == pack


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_decode_pack_parses_or_raises_codec_error(data: bytes) -> None:
    try:
        decoded = decode_pack(data)
    except CodecError as err:
        assert err.message.startswith("bad postcard: ")
    else:
        # The decoder is strict, so whatever it accepts is the canonical encoding.
        assert encode_pack(decoded) == data


@given(packs, st.data())
def test_every_strict_prefix_of_a_pack_is_refused(pack: list[Change], data: st.DataObject) -> None:
    encoded = encode_pack(pack)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    try:
        decode_pack(encoded[:cut])
    except CodecError:
        pass
    else:
        raise AssertionError("a truncated pack was accepted")


@given(packs.filter(bool), st.data())
def test_corrupted_packs_parse_or_raise_codec_error(
    pack: list[Change], data: st.DataObject
) -> None:
    encoded = bytearray(encode_pack(pack))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_pack(bytes(encoded))
    except CodecError:
        return
    assert encode_pack(decoded) == bytes(encoded)


@given(st.none() | hashes, node_entries)
def test_node_round_trip(
    left: bytes | None, entries: list[tuple[str, bytes, bytes | None]]
) -> None:
    data = encode_node(left, entries)
    assert decode_node(data) == (left, entries)


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_decode_node_parses_or_raises_codec_error(data: bytes) -> None:
    try:
        left, entries = decode_node(data)
    except CodecError as err:
        assert err.message.startswith("bad postcard: ")
    else:
        assert encode_node(left, entries) == data


def _flip(data: bytes, index: int, byte: int) -> bytes:
    if not data:
        return data
    i = index % len(data)
    return data[:i] + bytes((byte,)) + data[i + 1 :]


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(_flip, packs.map(encode_pack), st.integers(0, 10_000), st.integers(0, 255)),
    )
)
def test_fast_and_strict_decoders_agree(data: bytes) -> None:
    """decode_pack's fast path accepts exactly what the strict Reader accepts, alike."""
    from roomsync.core import postcard as pc

    try:
        fast: list[Change] | None = pc._decode_pack_fast(data)
    except (pc._OffFastPath, IndexError, UnicodeDecodeError):
        fast = None
    reader = pc.Reader(data)
    try:
        n = reader.sequence_length("changes", 6)
        strict: list[Change] | None = [pc.read_change(reader) for _ in range(n)]
        reader.finish()
    except CodecError:
        strict = None
    if fast is not None:
        assert fast == strict


@given(packs)
def test_inline_encoder_matches_the_writer(pack: list[Change]) -> None:
    from roomsync.core import postcard as pc

    w = pc.Writer()
    w.varint(len(pack))
    for change in pack:
        pc.write_change(w, change)
    assert encode_pack(pack) == w.getvalue()


@given(changes.filter(lambda c: c.value is not None), st.none() | hashes, node_entries)
def test_leaf_and_node_encoders_match_the_writer(
    change: Change, left: bytes | None, entries: list[tuple[str, bytes, bytes | None]]
) -> None:
    from roomsync.core import postcard as pc

    w = pc.Writer()
    w.string(change.path)
    w.u64(change.ts)
    w.u32(change.counter)
    w.string(change.actor)
    assert change.value is not None
    w.bytes_(change.value)
    assert pc.encode_leaf(change) == w.getvalue()
    w = pc.Writer()
    w.option_hash32(left)
    w.varint(len(entries))
    for path, leaf, right in entries:
        w.string(path)
        w.hash32(leaf)
        w.option_hash32(right)
    assert pc.encode_node(left, entries) == w.getvalue()
