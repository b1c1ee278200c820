"""The sorted path index answers prefix queries exactly like a scan of every path
(the subscribe answer of issue 9 item 3 must not change, only its cost)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from roomsync.core.entries import Change
from roomsync.core.room import ApplyLimits, RoomState
from roomsync.core.types import any_prefix_matches

segment = st.sampled_from(["a", "b", "a-b", "ab", "a0", "é", "z/"[0], "0"])
paths = st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
prefixes = st.one_of(st.just("/"), paths)


@settings(max_examples=300, deadline=None)
@given(
    first=st.lists(paths, max_size=30),
    later=st.lists(paths, max_size=80),
    wanted=st.lists(prefixes, min_size=1, max_size=5),
    excluding=st.lists(prefixes, max_size=3),
)
def test_changes_under_equals_a_scan(
    first: list[str], later: list[str], wanted: list[str], excluding: list[str]
) -> None:
    room = RoomState(
        "r", [Change(p, 1, 0, "x", b"v", i) for i, p in enumerate(dict.fromkeys(first), 1)]
    )
    room.apply(
        [Change(p, 2, i, "y", b"w") for i, p in enumerate(later)],
        now_ms=10,
        limits=ApplyLimits(),
    )
    ex = tuple(excluding)
    expected = sorted(
        (
            c
            for c in room.entries.values()
            if any_prefix_matches(tuple(wanted), c.path)
            and not (ex and any_prefix_matches(ex, c.path))
        ),
        key=lambda c: c.seq or 0,
    )
    assert room.changes_under(wanted, excluding=ex) == expected
