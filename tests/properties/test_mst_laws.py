"""Laws of the Merkle Search Tree (SPEC §1) and of reconcile.

* The incremental tree always equals the reference construction ``build_root``.
* The root depends on the live state only, never on the history that led there.
* Every node the tree serves decodes and hashes to its key.
* Reconciling two divergent replicas and exchanging the differing paths with LWW makes
  their roots equal, with the exact walk and with the batched one (whose rounds stay
  within the depth of the trees).
* A region's node is the canonical node of its range, and its slots partition it.
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
from roomsync.core.reconcile import run_local, run_local_batched

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


def _replicas(
    shared: dict[str, bytes],
    ops_a: list[tuple[str, bytes | None, int]],
    ops_b: list[tuple[str, bytes | None, int]],
) -> list[tuple[dict[str, Change], MerkleSearchTree]]:
    base = [Change(p, 10, 0, "base", v) for p, v in shared.items()]
    replicas = []
    for actor, replica_ops in (("a", ops_a), ("b", ops_b)):
        state: dict[str, Change] = {}
        tree = MerkleSearchTree()
        writes = base + [Change(p, ts, 0, actor, v) for p, v, ts in replica_ops]
        for won in merge_into(state, writes):
            tree.put(won)
        replicas.append((state, tree))
    return replicas


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(paths, st.binary(max_size=2), max_size=50),
    _replica_ops(),
    _replica_ops(),
    st.sampled_from([4, 6, 8, 32]),
    st.integers(1, 64),
    st.sampled_from([1, 8, 1024]),
)
def test_batched_reconcile_then_exchange_converges(
    shared: dict[str, bytes],
    ops_a: list[tuple[str, bytes | None, int]],
    ops_b: list[tuple[str, bytes | None, int]],
    leaf_bits: int,
    leaf_max: int,
    first_budget: int,
) -> None:
    """Inserts, deletes, disjoint and empty sets: the batched walk finds every difference
    (32-bit slot fingerprints: no truncation miss in these sizes), reports only paths
    that may differ, and a second walk after the exchange finds nothing."""
    (state_a, tree_a), (state_b, tree_b) = _replicas(shared, ops_a, ops_b)
    result = run_local_batched(
        tree_a,
        tree_b,
        bits=32,
        leaf_bits=leaf_bits,
        leaf_max=leaf_max,
        first_budget=first_budget,
    )
    assert result.complete
    assert result.remote_root == tree_b.root_hash
    live_a, live_b = live_items(state_a), live_items(state_b)
    differing = {p for p in live_a.keys() | live_b.keys() if live_a.get(p) != live_b.get(p)}
    assert differing <= set(result.differing)
    assert set(result.pull) <= set(live_b) and set(result.push) <= set(live_a)
    for c in result.entries:
        assert c == state_b[c.path]  # the remote's own entries, inline
    # Rounds: one per level of the larger tree, plus the re-asks of short digests.
    depth = max(_depth(tree_a), _depth(tree_b))
    assert result.rounds <= depth + 3

    # What a driver does: take the inline entries, request the rest (tombstones come
    # too), send ours; LWW decides on both sides.
    inline = {c.path for c in result.entries}
    to_a = [*result.entries, *(state_b[p] for p in result.to_request if p in state_b)]
    to_b = [state_a[p] for p in result.differing if p in state_a]
    assert inline.isdisjoint(result.to_request)
    for won in merge_into(state_a, to_a):
        tree_a.put(won)
    for won in merge_into(state_b, to_b):
        tree_b.put(won)
    assert tree_a.root_hex == tree_b.root_hex
    again = run_local_batched(tree_a, tree_b, bits=32)
    assert (again.pull, again.push, again.rounds) == ((), (), 0)


def _depth(tree: MerkleSearchTree) -> int:
    def walk(h: bytes | None) -> int:
        if h is None:
            return 0
        data = tree.node(h)
        assert data is not None
        left, entries = decode_node(data)
        return 1 + max(walk(x) for x in (left, *(r for _, _, r in entries)))

    return walk(tree.root_hash)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(paths, st.binary(max_size=2), max_size=50),
    st.none() | paths,
    st.booleans(),
    st.none() | paths,
)
def test_region_node_and_slots(
    live: dict[str, bytes], lo: str | None, lo_incl: bool, hi: str | None
) -> None:
    entries = [Change(p, 1, 0, "a", v) for p, v in live.items()]
    tree = MerkleSearchTree(entries)
    region = tree.region(lo, lo_incl, hi)

    def inside(path: str) -> bool:
        above = lo is None or path > lo or (lo_incl and path == lo)
        return above and (hi is None or path < hi)

    if lo is not None and hi is not None and lo >= hi:
        assert tree.region_entries(lo, lo_incl, hi, 100) == []
        return
    strictly = [c for c in entries if (lo is None or c.path > lo) and (hi is None or c.path < hi)]
    got = region.child_hash()
    assert (bytes(32) if got is None else got).hex() == build_root(strictly)
    found = tree.region_entries(lo, lo_incl, hi, 100)
    assert found is not None
    assert [p for p, _, _ in found] == sorted(c.path for c in entries if inside(c.path))
    slots: list[str] = []
    for s in range(region.slot_count):
        sub = region.slot_region(s)
        part = tree.region_entries(sub.lo, sub.lo_incl, sub.hi, 100)
        assert part is not None
        slots += [p for p, _, _ in part]
    assert slots == [p for p, _, _ in found]
