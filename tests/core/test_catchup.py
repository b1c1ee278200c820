"""Cutting answers into ``pack`` frames, and the full catch-up's group cache."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from roomsync.core.catchup import (
    BlockCache,
    chunk_count,
    chunk_message,
    group_message,
    seq_blocks,
)
from roomsync.core.codec import pack_data, unpack_data
from roomsync.core.entries import Change
from roomsync.core.room import ApplyLimits, RoomState


def state(seqs: list[int]) -> list[Change]:
    return [Change(f"/p{s}", s, 0, "a", b"v%d" % s, s) for s in seqs]


def test_a_dense_state_is_cut_like_any_answer() -> None:
    changes = state(list(range(1, 8)))
    groups = seq_blocks(changes, 3)
    assert len(groups) == chunk_count(len(changes), 3)
    for i, group in enumerate(groups):
        msg = chunk_message(changes, i, chunk=3, final_head=9)
        last = i == len(groups) - 1
        assert group_message(group, pack_data(group), last=last, final_head=9) == msg


def test_an_empty_state_is_one_empty_done_group() -> None:
    groups = seq_blocks([], 10)
    assert groups == [[]]
    msg = group_message([], BlockCache().data([]), last=True, final_head=4)
    assert msg["done"] is True and msg["head"] == 4 and unpack_data(msg["data"]) == []


@given(st.sets(st.integers(1, 400), max_size=120), st.integers(1, 40))
def test_groups_keep_seq_order_and_the_chunk_bound(seqs: set[int], chunk: int) -> None:
    changes = state(sorted(seqs))
    groups = seq_blocks(changes, chunk)
    assert groups and [c for g in groups for c in g] == changes
    assert all(0 < len(g) <= chunk for g in groups) or changes == []
    # A group starts on a seq block, so a write elsewhere does not move it.
    for g in groups[1:]:
        before = [c for c in changes if c.seq is not None and c.seq < (g[0].seq or 0)]
        assert not before or ((before[-1].seq or 0) - 1) // chunk < ((g[0].seq or 0) - 1) // chunk


LIMITS = ApplyLimits(max_value_bytes=100, max_clock_skew_ms=10**9)


@given(st.lists(st.integers(0, 30), min_size=1, max_size=60), st.integers(1, 8))
def test_the_cache_never_serves_a_stale_group(writes: list[int], chunk: int) -> None:
    room = RoomState("r")
    cache = BlockCache()
    for n, path in enumerate(writes):
        room.apply([Change(f"/k{path}", n + 1, 0, "a", b"%d" % n)], now_ms=0, limits=LIMITS)
        groups = seq_blocks(room.changes_since(0), chunk)
        cache.retain(groups)
        for group in groups:
            assert cache.data(group) == pack_data(group)
        served = [c for g in groups for c in unpack_data(cache.data(g))]
        assert {c.path: c for c in served} == room.entries
        assert len(served) == len(room.entries)


def test_an_untouched_group_is_a_copy() -> None:
    room = RoomState("r", state(list(range(1, 10))))
    cache = BlockCache()
    first = seq_blocks(room.changes_since(0), 3)
    datas = [cache.data(g) for g in first]
    room.apply([Change("/p5", 100, 0, "a", b"new")], now_ms=0, limits=LIMITS)  # seq 10
    second = seq_blocks(room.changes_since(0), 3)
    cache.retain(second)
    assert [len(g) for g in second] == [3, 2, 3, 1]
    again = [cache.data(g) for g in second]
    assert again[0] is datas[0] and again[2] is datas[2]  # untouched: the same string
    assert again[1] != datas[1] and unpack_data(again[1]) == second[1]
    assert len(cache) == 4
