"""RoomState.apply: validation, LWW, seqs, acks (SPEC §1, §2)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from roomsync.core.entries import Change
from roomsync.core.mst import build_root
from roomsync.core.room import ApplyLimits, RoomState

LIMITS = ApplyLimits(max_value_bytes=10, max_clock_skew_ms=1000)


def test_accept_assigns_gap_free_seqs() -> None:
    room = RoomState("r")
    res = room.apply(
        [Change("/a", 1, 0, "x", b"1"), Change("/b", 1, 0, "x", b"2")], now_ms=0, limits=LIMITS
    )
    assert res.seqs == [1, 2] and room.head == 2
    assert [c.seq for c in res.accepted] == [1, 2]
    assert room.root == build_root(room.entries.values())


def test_losing_change_is_acked_with_the_winning_seq_and_not_broadcast() -> None:
    room = RoomState("r")
    room.apply([Change("/a", 5, 0, "x", b"new")], now_ms=0, limits=LIMITS)
    res = room.apply(
        [Change("/a", 4, 0, "y", b"old"), Change("/a", 5, 0, "x", b"new")], now_ms=0, limits=LIMITS
    )
    assert res.seqs == [1, 1]
    assert res.accepted == [] and res.refused == []
    assert room.head == 1
    # The older write lost and is said to; the repeat of the winning write did not lose.
    assert res.superseded == [{"index": 0, "seq": 1}]


def test_refusals_are_per_change() -> None:
    room = RoomState("r")
    res = room.apply(
        [
            Change("no-slash", 1, 0, "x", b"1"),
            Change("/big", 1, 0, "x", b"x" * 11),
            Change("/future", 10_000, 0, "x", b"1"),
            Change("/ok", 1, 0, "x", b"1"),
            Change("/anon", 1, 0, "", b"1"),
        ],
        now_ms=0,
        limits=LIMITS,
    )
    assert res.seqs == [None, None, None, 1, None]
    assert [(r["index"], r["code"]) for r in res.refused] == [
        (0, "invalid-path"),
        (1, "too-large"),
        (2, "clock-skew"),
        (4, "malformed-pack"),
    ]
    assert list(room.entries) == ["/ok"]


def test_tombstones_leave_the_mst_but_stay_in_state() -> None:
    room = RoomState("r")
    room.apply([Change("/a", 1, 0, "x", b"1")], now_ms=0, limits=LIMITS)
    room.apply([Change("/a", 2, 0, "x", None)], now_ms=0, limits=LIMITS)
    assert room.root == "0" * 64
    assert room.entries["/a"].deleted
    assert room.live_count() == 0
    assert [c.seq for c in room.changes_since(0)] == [2]
    assert room.forget_tombstones(2) == 1
    assert room.entries == {} and room.compacted_through == 2


def test_changes_since_is_latest_per_path_in_seq_order_and_filtered() -> None:
    room = RoomState("r")
    for i, path in enumerate(["/a/1", "/b/1", "/a/1", "/a/2"]):
        room.apply([Change(path, i + 1, 0, "x", b"v")], now_ms=0, limits=LIMITS)
    assert [(c.path, c.seq) for c in room.changes_since(0)] == [
        ("/b/1", 2),
        ("/a/1", 3),
        ("/a/2", 4),
    ]
    assert [c.path for c in room.changes_since(2, ("/a",))] == ["/a/1", "/a/2"]
    assert [c.path for c in room.get_paths(["/a/2", "/zz", "/a/2"])] == ["/a/2"]


def test_loading_keeps_head_and_seqs() -> None:
    entries = [Change("/a", 1, 0, "x", b"1", 7), Change("/b", 1, 0, "x", None, 9)]
    room = RoomState("r", entries, head=9, compacted_through=3)
    assert room.head == 9 and room.compacted_through == 3
    res = room.apply([Change("/c", 1, 0, "x", b"1")], now_ms=0, limits=LIMITS)
    assert res.seqs == [10]


def test_pending_changes_stay_out_of_the_durable_view_until_committed() -> None:
    room = RoomState("r")
    room.apply([Change("/a", 1, 0, "x", b"1")], now_ms=0, limits=LIMITS, pending=True)
    room.committed(1)
    res = room.apply(
        [Change("/a", 2, 0, "x", b"2"), Change("/new", 2, 0, "x", b"n")],
        now_ms=0,
        limits=LIMITS,
        pending=True,
    )
    assert res.seqs == [2, 3] and room.head == 3 and room.durable_head == 1
    assert room.pending
    # Every read that hands changes to peers sees the durable entries only.
    assert [(c.path, c.value) for c in room.changes_since(0)] == [("/a", b"1")]
    assert [(c.path, c.value) for c in room.get_paths(["/a", "/new"])] == [("/a", b"1")]
    assert [c.value for c in room.changes_under(["/"])] == [b"1"]
    # LWW and seqs still see the pending state: a later write of /a gets seq 4.
    res = room.apply([Change("/a", 3, 0, "x", b"3")], now_ms=0, limits=LIMITS, pending=True)
    assert res.seqs == [4]
    room.committed(3)
    assert [(c.path, c.seq) for c in room.changes_since(0)] == [("/a", 1), ("/new", 3)]
    room.committed(4)
    assert not room.pending
    assert [(c.path, c.seq) for c in room.changes_since(0)] == [("/new", 3), ("/a", 4)]


def test_changes_under_follows_segments_not_characters() -> None:
    room = RoomState(
        "r",
        [
            Change(p, 1, 0, "x", b"v", seq)
            for seq, p in enumerate(["/a", "/a/b", "/a-b", "/ab", "/a/b/c", "/b"], 1)
        ],
    )
    assert [c.path for c in room.changes_under(["/a"])] == ["/a", "/a/b", "/a/b/c"]
    assert [c.path for c in room.changes_under(["/a"], excluding=("/a/b",))] == ["/a"]
    assert room.changes_under(["/a/b"], excluding=("/a",)) == []
    room.apply([Change("/a/z", 1, 0, "x", b"v")], now_ms=0, limits=LIMITS)
    assert [c.path for c in room.changes_under(["/a", "/b"])] == [
        "/a",
        "/a/b",
        "/a/b/c",
        "/b",
        "/a/z",
    ]


def test_client_changes_checks_the_pack_as_a_whole() -> None:
    import pytest

    from roomsync.core.codec import pack_data
    from roomsync.core.errors import CodecError, Forbidden, TooLarge
    from roomsync.core.room import client_changes

    ok = [Change("/a", 1, 0, "alice#t", b"1")]
    kw = {"max_pack_bytes": 1000, "max_changes": 2, "bound_actor": "alice"}
    assert client_changes(pack_data(ok), **kw) == ok  # type: ignore[arg-type]
    with pytest.raises(TooLarge, match="max_pack_bytes"):
        client_changes(pack_data([Change("/a", 1, 0, "alice", b"x" * 2000)]), **kw)  # type: ignore[arg-type]
    with pytest.raises(TooLarge, match="max_changes_per_pack"):
        client_changes(pack_data(ok * 3), **kw)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="seq: None"):
        client_changes(pack_data([ok[0].with_seq(3)]), **kw)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="bad base64"):
        client_changes("***", **kw)  # type: ignore[arg-type]
    with pytest.raises(Forbidden, match="'bob'"):
        client_changes(pack_data([Change("/a", 1, 0, "bob", b"1")]), **kw)  # type: ignore[arg-type]
    anonymous = {**kw, "bound_actor": None}
    assert client_changes(pack_data([Change("/a", 1, 0, "bob", b"1")]), **anonymous)  # type: ignore[arg-type]
    # A binary frame's pack (the postcard bytes): the same checks, its size counted as is.
    from roomsync.core.postcard import encode_pack

    assert client_changes(encode_pack(ok), **kw) == ok  # type: ignore[arg-type]
    exact = encode_pack([Change("/a", 1, 0, "alice", b"x" * 980)])
    fits = {**kw, "max_pack_bytes": len(exact)}
    assert len(client_changes(exact, **fits)) == 1  # type: ignore[arg-type]
    with pytest.raises(TooLarge, match=f"pack of {len(exact)} bytes"):
        client_changes(exact, **{**fits, "max_pack_bytes": len(exact) - 1})  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="bad postcard"):
        client_changes(b"\x01\x05/x", **kw)  # type: ignore[arg-type]


_PATHS = ["/a", "/b", "/c/x", "/c/y", "/d"]


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.lists(st.tuples(st.sampled_from(_PATHS), st.booleans()), min_size=1, max_size=4),
            st.integers(0, 4),  # batches committed afterwards (oldest first), if pending
        ),
        max_size=12,
    ),
    cursor=st.integers(0, 40),
    prefixes=st.sampled_from([("/",), ("/c",), ("/a", "/d")]),
)
def test_changes_since_equals_a_scan_of_the_durable_entries(
    steps: list[tuple[list[tuple[str, bool]], int]],
    cursor: int,
    prefixes: tuple[str, ...],
) -> None:
    """Entries are kept in seq order so catch-up reads only what follows the cursor; it
    must equal the plain definition (every path's durable entry with a seq after the
    cursor, in seq order), whatever mix of pending and committed writes came before, for
    any cursor a hello may carry (at most the durable head)."""
    from roomsync.core.types import any_prefix_matches

    room = RoomState("r", [Change("/d", 1, 0, "x", b"0", 2), Change("/a", 1, 0, "x", b"0", 1)])
    ts = 10
    uncommitted: list[int] = []  # last seq of each pending batch, in commit order
    for batch, commits in steps:
        changes = []
        for path, live in batch:
            ts += 1
            changes.append(Change(path, ts, 0, "x", b"v" if live else None))
        result = room.apply(changes, now_ms=0, limits=LIMITS, pending=True)
        if result.accepted:
            uncommitted.append(result.accepted[-1].seq or 0)
        for _ in range(min(commits, len(uncommitted))):
            room.committed(uncommitted.pop(0))  # the group commit makes batches durable in order
        seqs = [c.seq or 0 for c in room.entries.values()]
        assert seqs == sorted(seqs)
    since = min(cursor, room.durable_head)
    durable = [d for p in room.entries if (d := room.durable(p)) is not None]
    expected = sorted(
        (c for c in durable if (c.seq or 0) > since and any_prefix_matches(prefixes, c.path)),
        key=lambda c: c.seq or 0,
    )
    assert room.changes_since(since, prefixes) == expected
