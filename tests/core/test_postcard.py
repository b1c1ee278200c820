"""Unit tests of roomsync.core.postcard: edge cases of the binary format (SPEC §2)."""

from __future__ import annotations

import pytest

from roomsync.core.codes import ErrorCode
from roomsync.core.entries import Change
from roomsync.core.errors import CodecError
from roomsync.core.postcard import (
    U32_MAX,
    U64_MAX,
    Reader,
    Writer,
    decode_node,
    decode_pack,
    encode_leaf,
    encode_node,
    encode_pack,
    write_change,
)

# A valid one-change pack prefix: count 1, path "/a", ts 1, counter 0, actor "a".
HEAD = "01022f6101000161"


def varint(n: int) -> bytes:
    w = Writer()
    w.varint(n)
    return w.getvalue()


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (U32_MAX, "ffffffff0f"),
        (U64_MAX, "ffffffffffffffffff01"),
    ],
)
def test_varint_boundaries(value: int, encoded: str) -> None:
    assert varint(value).hex() == encoded
    r = Reader(bytes.fromhex(encoded))
    assert r.u64() == value
    r.finish()


def test_writer_refuses_out_of_range_integers() -> None:
    w = Writer()
    with pytest.raises(ValueError, match="u32"):
        w.u32(U32_MAX + 1)
    with pytest.raises(ValueError, match="u32"):
        w.u32(-1)
    with pytest.raises(ValueError, match="u64"):
        w.u64(U64_MAX + 1)
    with pytest.raises(ValueError, match="32 bytes"):
        w.hash32(b"short")
    with pytest.raises(ValueError, match="u64"):
        encode_pack([Change("/a", -1, 0, "a", b"")])
    with pytest.raises(ValueError, match="u32"):
        encode_pack([Change("/a", 0, U32_MAX + 1, "a", b"")])


def test_pack_round_trip() -> None:
    changes = [
        Change("/a", 0, 0, "", b""),
        Change("/日本/語", U64_MAX, U32_MAX, "zoë", b"\x00\xff" * 100, seq=U64_MAX),
        Change("/gone", 5, 1, "b", None, seq=0),
    ]
    data = encode_pack(changes)
    assert decode_pack(data) == changes
    assert encode_pack(tuple(changes)) == data


def test_empty_pack() -> None:
    assert encode_pack([]) == b"\x00"
    assert decode_pack(b"\x00") == []


def test_long_value_uses_a_multi_byte_length() -> None:
    change = Change("/big", 1, 0, "a", b"x" * 200)
    data = encode_pack([change])
    assert bytes.fromhex("c801") + b"x" * 200 + b"\x00" in data
    assert decode_pack(data) == [change]


@pytest.mark.parametrize(
    ("hex_input", "error"),
    [
        (HEAD, "bad postcard: truncated op tag at byte 8"),
        (HEAD + "00", "bad postcard: truncated value length at byte 9"),
        (HEAD + "0005", "bad postcard: value length 5 past end of input at byte 10"),
        (HEAD + "01", "bad postcard: truncated seq option at byte 9"),
        (HEAD + "010180", "bad postcard: truncated seq at byte 11"),
        (HEAD + "01018000", "bad postcard: overlong seq at byte 10"),
        (HEAD + "ff7f00", "bad postcard: unknown Op tag 16383 at byte 8"),
        (HEAD + "0100" + "00", "bad postcard: 1 trailing bytes at byte 10"),
        ("01022f61", "bad postcard: changes count 1 past end of input at byte 1"),
        (
            "01022f61" + "01" + "80808080808080808001" + "0161" + "0100",
            "bad postcard: overlong counter at byte 5",
        ),
        ("0102c328" + "01000161" + "0100", "bad postcard: invalid UTF-8 in path at byte 1"),
        ("01022f61010002fffe" + "0100", "bad postcard: invalid UTF-8 in actor at byte 6"),
    ],
)
def test_pack_decode_errors(hex_input: str, error: str) -> None:
    with pytest.raises(CodecError) as info:
        decode_pack(bytes.fromhex(hex_input))
    assert info.value.message == error


def test_codec_error_is_a_session_surviving_malformed_pack() -> None:
    with pytest.raises(CodecError) as info:
        decode_pack(b"")
    err = info.value
    assert err.code == ErrorCode.MALFORMED_PACK
    assert err.close is None
    assert err.to_error_fields() == {"code": "malformed-pack", "message": err.message}
    assert err.message.startswith("bad postcard: ")
    assert "still open" in err.next_action


def test_leaf_encoding() -> None:
    change = Change("/a", 300, 1, "b", b"xy", seq=9)
    assert encode_leaf(change).hex() == "022f61" + "ac02" + "01" + "0162" + "027879"
    with pytest.raises(ValueError, match="tombstone"):
        encode_leaf(Change("/a", 1, 0, "b", None))


def test_node_round_trip() -> None:
    h1, h2, h3 = bytes(range(32)), bytes(range(32, 64)), b"\xff" * 32
    entries = [("/a", h1, None), ("/é", h2, h3)]
    data = encode_node(h3, entries)
    assert data[:33] == b"\x01" + h3
    assert decode_node(data) == (h3, entries)
    empty_left = encode_node(None, entries)
    assert empty_left[0] == 0
    assert decode_node(empty_left) == (None, entries)


@pytest.mark.parametrize(
    ("hex_input", "error"),
    [
        ("", "bad postcard: truncated left option at byte 0"),
        ("00", "bad postcard: truncated entries count at byte 1"),
        ("0005", "bad postcard: entries count 5 past end of input at byte 2"),
        ("0001022f61" + "00" * 32, "bad postcard: truncated right option at byte 37"),
        ("0001022f61" + "00" * 31, "bad postcard: truncated leaf at byte 5"),
        ("0000ff", "bad postcard: 1 trailing bytes at byte 2"),
    ],
)
def test_node_decode_errors(hex_input: str, error: str) -> None:
    with pytest.raises(CodecError) as info:
        decode_node(bytes.fromhex(hex_input))
    assert info.value.message == error


def test_reader_hash_and_option() -> None:
    r = Reader(b"\x01" + bytes(32) + b"\x00")
    assert r.option_hash32("h") == bytes(32)
    assert r.option_hash32("h") is None
    r.finish()


@pytest.mark.parametrize(
    "n", [0, 1, 0x7F, 0x80, 0x81, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, 1_764_000_000_000, 2**64 - 1]
)
def test_encode_pack_inline_varints_match_the_writer(n: int) -> None:
    """encode_pack writes ts and seq through shortcuts (a cache of ts tails, short seqs
    inline); at every varint length boundary the bytes equal the plain Writer's."""
    changes = [Change("/p", n, 0, "a", b"v", n), Change("/q", n, 0, "a", None, None)]
    w = Writer()
    w.varint(len(changes))
    for change in changes:
        write_change(w, change)
    assert encode_pack(changes) == bytes(w.buf)
    assert encode_pack(changes) == bytes(w.buf)  # the second time from the ts cache
    # seqs=False writes every seq as None, as the changes without their seqs would be.
    assert encode_pack(changes, seqs=False) == encode_pack([c.with_seq(None) for c in changes])


@pytest.mark.parametrize("ts", [0, 1, 2**35 - 1, 2**35, 1_764_000_000_000, 2**42 - 1, 2**42])
@pytest.mark.parametrize("seq", [None, 0, 0x7F, 0x80, 0x3FFF, 0x4000, 2**40])
def test_decode_shortcuts_round_trip_at_varint_boundaries(ts: int, seq: int | None) -> None:
    """The decoder reads 6-byte ts and 2-byte seq varints in one go; around those lengths,
    and with fewer than 6 bytes left after a ts, it gives back exactly what was encoded."""
    changes = [Change("/p", ts, 0, "a", b"v", seq), Change("", ts, 0, "", None, seq)]
    assert decode_pack(encode_pack(changes)) == changes


def test_decode_refuses_an_overlong_six_byte_ts() -> None:
    """A 6-byte ts whose last byte is 0 is not canonical postcard: refused, not read."""
    good = encode_pack([Change("/p", 2**35, 0, "a", None, None)])
    ts_at = 1 + 1 + 2  # count, path length, "/p"
    bad = bytearray(good)
    bad[ts_at + 5] = 0x00  # last byte of the varint: continuation bits say it is the end
    bad[ts_at + 4] |= 0x80
    with pytest.raises(CodecError):
        decode_pack(bytes(bad))


def test_the_fast_decoder_builds_the_same_changes_as_the_constructor() -> None:
    """decode_pack fills Change's slots directly: that is only right while Change has
    exactly these slots and nothing runs after __init__."""
    assert Change.__slots__ == ("path", "ts", "counter", "actor", "value", "seq")
    assert not hasattr(Change, "__post_init__")
    changes = [Change("/a", 1_700_000_000_000, 3, "x", b"v", 200), Change("/b", 5, 0, "y", None)]
    decoded = decode_pack(encode_pack(changes))
    assert decoded == changes and all(type(c) is Change for c in decoded)
    assert [hash(c) for c in decoded] == [hash(c) for c in changes]
    assert [c.key for c in decoded] == [c.key for c in changes]
