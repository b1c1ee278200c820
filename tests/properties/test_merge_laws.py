"""Laws of the LWW merge (SPEC §1): any delivery order of the same changes, any number of
times, in any batching, gives the same state; and the MST mirrors that state exactly."""

from __future__ import annotations

import hashlib
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from roomsync.core.entries import Change
from roomsync.core.merge import live_items, merge_into, wins
from roomsync.core.mst import MerkleSearchTree, build_root


def _write(path: str, ts: int, counter: int, actor: str) -> Change:
    # Equal (ts, counter, actor) triples are the same write, so the value (and whether it
    # is a delete) is a function of the write's identity.
    digest = hashlib.sha256(f"{path}|{ts}|{counter}|{actor}".encode()).digest()
    value = None if digest[0] % 4 == 0 else digest[:3]
    return Change(path, ts, counter, actor, value)


writes = st.builds(
    _write,
    path=st.sampled_from(["/a", "/b", "/c/d", "/é", "/k/22"]),
    ts=st.integers(0, 4),
    counter=st.integers(0, 2),
    actor=st.sampled_from(["x", "y", "z"]),
)
histories = st.lists(writes, max_size=30)


def merged(changes: list[Change]) -> dict[str, Change]:
    state: dict[str, Change] = {}
    merge_into(state, changes)
    return state


@given(histories, st.data())
def test_merge_is_order_independent(changes: list[Change], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(changes))
    assert merged(shuffled) == merged(changes)


@given(histories)
def test_merge_is_idempotent(changes: list[Change]) -> None:
    state = merged(changes)
    snapshot = dict(state)
    assert merge_into(state, changes) == []
    assert state == snapshot


@given(histories, st.lists(st.integers(0, 30), max_size=4))
def test_batching_does_not_matter(changes: list[Change], cuts: list[int]) -> None:
    bounds = sorted({0, len(changes), *(min(c, len(changes)) for c in cuts)})
    state: dict[str, Change] = {}
    for lo, hi in pairwise(bounds):
        merge_into(state, changes[lo:hi])
    assert state == merged(changes)


@given(histories, histories)
def test_merging_states_is_commutative_and_associative(
    left: list[Change], right: list[Change]
) -> None:
    a, b = merged(left), merged(right)
    ab = dict(a)
    merge_into(ab, b.values())
    ba = dict(b)
    merge_into(ba, a.values())
    assert ab == ba == merged(left + right)


@given(histories)
def test_the_state_holds_the_greatest_write_per_path(changes: list[Change]) -> None:
    state = merged(changes)
    for path, entry in state.items():
        assert entry.key == max(c.key for c in changes if c.path == path)
    for c in changes:
        assert not wins(c, state[c.path])


@given(histories, st.data())
def test_the_mst_of_a_merged_state_is_history_independent(
    changes: list[Change], data: st.DataObject
) -> None:
    roots = set()
    for order in (changes, data.draw(st.permutations(changes))):
        state: dict[str, Change] = {}
        tree = MerkleSearchTree()
        for won in merge_into(state, order):
            tree.put(won)
        assert tree.root_hex == build_root(live_items(state).values())
        roots.add(tree.root_hex)
    assert len(roots) == 1
