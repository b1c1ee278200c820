"""Laws of the Merkle Search Tree (SPEC §1) and of reconcile.

* The incremental tree always equals the reference construction ``build_root``.
* The root depends on the live state only, never on the history that led there.
* Every node the tree serves decodes and hashes to its key.
* Reconciling two divergent replicas and exchanging the differing paths with LWW makes
  their roots equal.
"""

from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from roomsync.core.entries import Change
from roomsync.core.merge import live_items, merge_into
from roomsync.core.mst import MerkleSearchTree, build_root, serve_nodes
from roomsync.core.postcard import decode_node
from roomsync.core.reconcile import run_local

# Paths of known levels so that small trees still split at levels 1, 2 and 3.
HIGH = ["/k/22", "/k/58", "/k/66", "/k/76", "/k/91", "/k/214", "/k/524", "/k/9479"]
POOL = [f"/p/{i}" for i in range(48)] + HIGH + ["/ü/1", "/日本", "/x/😀", "/\uff21"]

paths = st.sampled_from(POOL)
values = st.none() | st.binary(max_size=3)
# (path, value or None for a tombstone, True to call remove() instead of put())
ops = st.lists(st.tuples(paths, values, st.booleans()), max_size=120)


def check_nodes(tree: MerkleSearchTree) -> int:
    """Walk the tree through node(); return the number of entries seen."""
    seen = 0
    stack = [tree.root_hash]
    while stack:
        h = stack.pop()
        if h is None:
            continue
        data = tree.node(h)
        assert data is not None
        assert hashlib.sha256(data).digest() == h
        left, entries = decode_node(data)
        seen += len(entries)
        stack.append(left)
        stack.extend(right for _, _, right in entries)
    return seen


@settings(max_examples=150, deadline=None)
@given(ops, st.sets(st.integers(0, 119), max_size=6))
def test_incremental_tree_equals_reference(
    history: list[tuple[str, bytes | None, bool]], checkpoints: set[int]
) -> None:
    tree = MerkleSearchTree()
    state: dict[str, Change] = {}
    for step, (path, value, use_remove) in enumerate(history):
        if use_remove:
            tree.remove(path)
            state.pop(path, None)
        else:
            change = Change(path, step, 0, "a", value)
            tree.put(change)
            if value is None:
                state.pop(path, None)
            else:
                state[path] = change
        if step in checkpoints:
            assert tree.root_hex == build_root(state.values())
    assert tree.root_hex == build_root(state.values())
    assert tree.count == len(state)
    assert check_nodes(tree) == len(state)
    assert MerkleSearchTree(state.values()).root_hex == tree.root_hex


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(paths, values, max_size=40),
    st.lists(st.tuples(paths, values), max_size=60),
    st.integers(0, 2**32),
)
def test_root_depends_on_the_live_state_only(
    final: dict[str, bytes | None],
    noise: list[tuple[str, bytes | None]],
    seed: int,
) -> None:
    """The same final state reached through random interleavings of overwrites and deletes."""
    rnd = random.Random(seed)
    target = {p: Change(p, 1_000, 0, "final", v) for p, v in final.items()}
    for p, _ in noise:  # every path written by noise ends with a final write too
        target.setdefault(p, Change(p, 1_000, 0, "final", None))
    live = [c for c in target.values() if c.value is not None]
    expected = build_root(live)
    assert MerkleSearchTree(target.values()).root_hex == expected
    for _ in range(3):
        # Per path: its noise writes in random order, then its final write.
        queues: dict[str, list[Change]] = {p: [] for p in target}
        for n, (p, v) in enumerate(noise):
            queues[p].append(Change(p, n, 0, "noise", v))
        for p, q in queues.items():
            rnd.shuffle(q)
            q.append(target[p])
        tree = MerkleSearchTree()
        pending = [q for q in queues.values()]
        while pending:
            q = rnd.choice(pending)
            tree.put(q.pop(0))
            if rnd.random() < 0.1:
                _ = tree.root_hash  # hash mid-way: later puts must re-hash correctly
            pending = [q for q in pending if q]
        assert tree.root_hex == expected
        assert tree.count == len(live)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(paths, st.binary(max_size=2), max_size=50), paths, paths)
def test_range_hash_is_the_root_of_the_range(live: dict[str, bytes], lo: str, hi: str) -> None:
    entries = [Change(p, 1, 0, "a", v) for p, v in live.items()]
    tree = MerkleSearchTree(entries)
    inside = [c for c in entries if lo < c.path < hi]
    got = tree.range_hash(lo, hi)
    assert (bytes(32) if got is None else got).hex() == build_root(inside)
    assert tree.paths_between(lo, hi) == sorted(c.path for c in inside)


def _replica_ops() -> st.SearchStrategy[list[tuple[str, bytes | None, int]]]:
    return st.lists(st.tuples(paths, values, st.integers(0, 50)), max_size=40)


@settings(max_examples=120, deadline=None)
@given(
    st.dictionaries(paths, st.binary(max_size=2), max_size=50),
    _replica_ops(),
    _replica_ops(),
    st.integers(1, 300),
)
def test_reconcile_then_exchange_converges(
    shared: dict[str, bytes],
    ops_a: list[tuple[str, bytes | None, int]],
    ops_b: list[tuple[str, bytes | None, int]],
    max_hashes: int,
) -> None:
    base = [Change(p, 10, 0, "base", v) for p, v in shared.items()]
    replicas = []
    for actor, replica_ops in (("a", ops_a), ("b", ops_b)):
        state: dict[str, Change] = {}
        tree = MerkleSearchTree()
        writes = base + [Change(p, ts, 0, actor, v) for p, v, ts in replica_ops]
        for won in merge_into(state, writes):
            tree.put(won)
        replicas.append((state, tree))
    (state_a, tree_a), (state_b, tree_b) = replicas

    result = run_local(tree_a, tree_b, max_hashes=max_hashes)
    assert result.complete
    live_a, live_b = live_items(state_a), live_items(state_b)
    differing = {p for p in live_a.keys() | live_b.keys() if live_a.get(p) != live_b.get(p)}
    assert set(result.differing) == differing
    assert set(result.pull) == {p for p in differing if p in live_b}
    assert set(result.push) == {p for p in differing if p in live_a}

    # a asks b for the differing paths (the answer carries tombstones) and sends its own
    to_a = [state_b[p] for p in result.differing if p in state_b]
    to_b = [state_a[p] for p in result.differing if p in state_a]
    for won in merge_into(state_a, to_a):
        tree_a.put(won)
    for won in merge_into(state_b, to_b):
        tree_b.put(won)
    assert tree_a.root_hex == tree_b.root_hex
    assert tree_a.root_hex == build_root(live_items(state_a).values())
    again = run_local(tree_a, tree_b)
    assert (again.pull, again.push, again.rounds) == ((), (), 0)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(paths, st.binary(max_size=2), max_size=60))
def test_serve_nodes_answers_only_real_nodes(live: dict[str, bytes]) -> None:
    tree = MerkleSearchTree(Change(p, 1, 0, "a", v) for p, v in live.items())
    root = tree.root_hash
    asked = [bytes(32)] if root is None else [root, bytes(32)]
    for h, data in serve_nodes(tree, asked):
        assert hashlib.sha256(data).digest() == h == root
