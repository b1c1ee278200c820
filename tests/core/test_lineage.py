"""Lineage rules (:mod:`roomsync.core.lineage`): what ``propose`` collects, what
``validate`` calls a conflict, and that a promotion batch makes the parent show the
child's outcome on every proposed path while leaving every other path alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomsync.core.entries import Change
from roomsync.core.lineage import conflicts, promotion_batch, proposed_changes, resolved
from roomsync.core.merge import merge_into


def c(path: str, value: bytes | None, ts: int = 1, actor: str = "a") -> Change:
    return Change(path, ts, 0, actor, value)


def test_proposed_changes_include_deletes_even_without_tombstones() -> None:
    checkpoint = {"/a": c("/a", b"1"), "/b": c("/b", b"1"), "/c": c("/c", b"1")}
    child = {
        "/a": c("/a", b"1"),  # unchanged
        "/b": c("/b", b"2", ts=5),  # changed
        "/d": c("/d", b"new", ts=6),  # added
        "/e": c("/e", None, ts=7),  # deleted something the checkpoint did not have
    }  # /c: deleted and its tombstone compacted away
    got = proposed_changes(checkpoint, child)
    assert [(x.path, x.value) for x in got] == [("/b", b"2"), ("/c", None), ("/d", b"new")]
    assert all(x.seq is None for x in got)


def test_conflicts_are_paths_both_sides_changed_differently() -> None:
    checkpoint = {"/a": c("/a", b"1"), "/b": c("/b", b"1"), "/c": c("/c", b"1")}
    parent = {
        "/a": c("/a", b"parent", ts=3),  # changed differently: conflict
        "/b": c("/b", b"same", ts=4),  # changed to the child's value: no conflict
        "/c": c("/c", b"1"),  # untouched
        "/n": c("/n", None, ts=5),  # the parent deleted a path it never had
    }
    changes = [c("/a", b"child", 9), c("/b", b"same", 9), c("/c", b"x", 9), c("/n", None, 9)]
    assert conflicts(checkpoint, parent, changes) == ["/a"]
    assert [x.path for x in resolved(changes, ["/a"], "parent")] == ["/b", "/c", "/n"]
    assert resolved(changes, ["/a"], "child") == changes
    with pytest.raises(ValueError):
        resolved(changes, [], "both")


def test_promotion_batch_wins_lww_and_skips_no_ops() -> None:
    parent = {"/a": c("/a", b"p", ts=10_000), "/same": c("/same", b"v", ts=3)}
    changes = [c("/a", b"child"), c("/same", b"v"), c("/gone", None), c("/new", b"n")]
    batch = promotion_batch(changes, parent, now_ms=50)
    assert [x.path for x in batch] == ["/a", "/new"]
    state = dict(parent)
    merge_into(state, batch)
    assert state["/a"].value == b"child" and state["/new"].value == b"n"
    assert len({x.key for x in batch}) == len(batch)


values = st.one_of(st.none(), st.sampled_from([b"1", b"2", b"3"]))
paths = st.sampled_from(["/a", "/b", "/c", "/d"])
states = st.dictionaries(paths, values)


def _state(values_by_path: dict[str, bytes | None], ts: int) -> dict[str, Change]:
    return {p: c(p, v, ts=ts + i) for i, (p, v) in enumerate(sorted(values_by_path.items()))}


@given(states, states, states)
@settings(max_examples=300, deadline=None)
def test_promotion_gives_the_child_outcome_where_it_changed(
    base: dict[str, bytes | None],
    child_values: dict[str, bytes | None],
    parent_values: dict[str, bytes | None],
) -> None:
    checkpoint = {p: e for p, e in _state(base, 100).items() if e.value is not None}
    child = dict(checkpoint)
    merge_into(child, _state(child_values, 1000).values())
    parent = dict(checkpoint)
    merge_into(parent, _state(parent_values, 2000).values())
    changes = proposed_changes(checkpoint, child)
    found = conflicts(checkpoint, parent, changes)
    after = dict(parent)
    merge_into(after, promotion_batch(resolved(changes, found, "child"), parent, now_ms=5))
    for path in {*checkpoint, *child, *parent}:
        mine = child.get(path)
        theirs = after.get(path)
        outcome = None if theirs is None else theirs.value
        proposed = any(x.path == path for x in changes)
        if proposed:
            assert outcome == (None if mine is None else mine.value)
        else:
            assert outcome == (None if parent.get(path) is None else parent[path].value)
    # Resolving for the parent keeps the parent's outcome on every conflicting path.
    kept = dict(parent)
    merge_into(kept, promotion_batch(resolved(changes, found, "parent"), parent, now_ms=5))
    for path in found:
        assert (kept.get(path) or c(path, None)).value == (parent.get(path) or c(path, None)).value
