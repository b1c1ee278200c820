"""Unit tests of roomsync.core.packing: cutting pending writes into packs, pacing them."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.core.limits import WelcomeLimits
from roomsync.core.packing import (
    DEFAULT_PACK_LIMITS,
    FRAME_OVERHEAD,
    PACK_OVERHEAD,
    PATH_BYTES_PER_REQUEST,
    PATHS_PER_REQUEST,
    PackLimits,
    cut_packs,
    encoded_size,
    next_pack_length,
    oversize,
    path_chunks,
    rate_limit_pause_ms,
)
from roomsync.core.postcard import encode_pack


def write(i: int, size: int = 10) -> Change:
    return Change(f"/k{i}", i + 1, 0, "me", b"x" * size)


def pack_bytes(changes: list[Change]) -> int:
    return len(encode_pack(changes))


def estimate(changes: list[Change]) -> int:
    return PACK_OVERHEAD + sum(encoded_size(c) for c in changes)


# -- sizes ---------------------------------------------------------------------------------


def test_encoded_size_matches_postcard() -> None:
    rng = random.Random(7)
    for i in range(200):
        value = None if i % 5 == 0 else bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
        c = Change(
            "/" + "é" * rng.randrange(1, 70),
            rng.randrange(1 << 50),
            rng.randrange(1 << 32),
            "actor-" + "x" * rng.randrange(150),
            value,
            None if i % 2 else rng.randrange(1 << 40),
        )
        assert encoded_size(c) == len(encode_pack([c])) - 1


# -- limits --------------------------------------------------------------------------------


def test_limits_from_the_welcome() -> None:
    assert PackLimits.from_welcome(WelcomeLimits(max_pack_bytes=2000, max_changes_per_pack=7)) == (
        PackLimits(7, 2000)
    )
    # A small frame bounds the pack: its base64 must fit the frame with the envelope.
    small = PackLimits.from_welcome(WelcomeLimits(max_frame_bytes=4096, max_pack_bytes=1 << 20))
    assert small.max_bytes == (4096 - FRAME_OVERHEAD) * 3 // 4
    # A frame too small for anything still leaves a limit of one byte, not zero.
    assert PackLimits.from_welcome(WelcomeLimits(max_frame_bytes=10)).max_bytes == 1
    assert DEFAULT_PACK_LIMITS == PackLimits.from_welcome(WelcomeLimits())


def test_a_pack_at_the_limit_fits_its_frame() -> None:
    limits = PackLimits.from_welcome(WelcomeLimits(max_frame_bytes=4096))
    changes = [write(i, 50) for i in range(100)]
    for pack in cut_packs(changes, limits):
        frame = f'{{"type":"pack","data":"{pack_data(pack)}"}}'
        assert len(frame) <= 4096


@pytest.mark.parametrize(("changes", "size"), [(0, 1), (1, 0), (-1, 10)])
def test_limits_are_validated(changes: int, size: int) -> None:
    with pytest.raises(ValueError, match="PackLimits needs"):
        PackLimits(changes, size)


def test_fits_and_oversize() -> None:
    small, big = write(1, 10), write(2, 500)
    limits = PackLimits(100, encoded_size(small) + PACK_OVERHEAD)
    assert limits.fits(small) and not limits.fits(big)
    assert oversize([small, big, small], limits) == [big]
    assert oversize([], limits) == []


# -- cutting -------------------------------------------------------------------------------


def test_next_pack_length() -> None:
    changes = [write(i) for i in range(5)]
    size = encoded_size(changes[0])
    assert next_pack_length([], DEFAULT_PACK_LIMITS) == 0
    assert next_pack_length(changes, PackLimits(2, 1 << 20)) == 2
    assert next_pack_length(changes, PackLimits(100, PACK_OVERHEAD + 3 * size)) == 3
    assert next_pack_length(changes, PackLimits(100, PACK_OVERHEAD + 3 * size - 1)) == 2
    assert next_pack_length(changes, PackLimits(100, 1)) == 1  # the first always goes
    assert next_pack_length(iter(changes), PackLimits(100, 1 << 20)) == 5


def test_cut_packs() -> None:
    changes = [write(i) for i in range(7)]
    assert cut_packs(changes, PackLimits(3, 1 << 20)) == [changes[:3], changes[3:6], changes[6:]]
    assert cut_packs([], PackLimits(3, 1 << 20)) == []


_changes = st.lists(
    st.builds(
        Change,
        path=st.text("abc/é", min_size=1, max_size=20).map(lambda s: "/" + s),
        ts=st.integers(0, 1 << 48),
        counter=st.integers(0, (1 << 32) - 1),
        actor=st.text("xyz", min_size=1, max_size=8),
        value=st.none() | st.binary(max_size=400),
    ),
    max_size=60,
)


@given(changes=_changes, max_changes=st.integers(1, 10), max_bytes=st.integers(1, 2000))
def test_packing_law(changes: list[Change], max_changes: int, max_bytes: int) -> None:
    """Every change in exactly one pack, order kept, every pack within the limits unless it
    is one change that fits no pack, and no pack could have taken the next change too."""
    limits = PackLimits(max_changes, max_bytes)
    packs = cut_packs(changes, limits)
    assert [c for pack in packs for c in pack] == changes
    assert all(packs)
    for i, pack in enumerate(packs):
        assert len(pack) <= max_changes
        # The estimate bounds the real bytes (the count's varint is taken at its widest).
        assert pack_bytes(pack) <= estimate(pack)
        assert estimate(pack) <= max_bytes or (len(pack) == 1 and not limits.fits(pack[0]))
        if i + 1 < len(packs):
            grown = [*pack, packs[i + 1][0]]
            assert len(grown) > max_changes or estimate(grown) > max_bytes
    # Once the oversize changes are refused, every pack is within the limits.
    sendable = [c for c in changes if c not in oversize(changes, limits)]
    assert all(pack_bytes(p) <= max_bytes for p in cut_packs(sendable, limits))


# -- pacing and requests -------------------------------------------------------------------


def test_rate_limit_pause_doubles_up_to_five_seconds() -> None:
    assert [rate_limit_pause_ms(n) for n in range(7)] == [250, 500, 1000, 2000, 4000, 5000, 5000]
    assert rate_limit_pause_ms(10_000) == 5000


def test_path_chunks() -> None:
    paths = [f"/p/{i}" for i in range(2500)]
    chunks = list(path_chunks(paths))
    assert [len(c) for c in chunks] == [PATHS_PER_REQUEST, PATHS_PER_REQUEST, 500]
    assert list(path_chunks([])) == []
    long = "/" + "x" * (PATH_BYTES_PER_REQUEST // 3)
    assert [len(c) for c in path_chunks([long] * 5)] == [2, 2, 1]
    huge = "/" + "y" * PATH_BYTES_PER_REQUEST
    assert list(path_chunks([huge, "/a"])) == [[huge], ["/a"]]  # a lone long path still goes


@given(st.lists(st.text(min_size=1, max_size=3000).map(lambda s: "/" + s), max_size=300))
def test_path_chunks_law(paths: list[str]) -> None:
    chunks = list(path_chunks(paths))
    assert [p for c in chunks for p in c] == paths
    for chunk in chunks:
        assert chunk
        assert len(chunk) <= PATHS_PER_REQUEST
        size = sum(len(p.encode("utf-8")) + 4 for p in chunk)
        assert size <= PATH_BYTES_PER_REQUEST or len(chunk) == 1
