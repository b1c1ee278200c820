"""Unit tests of roomsync.core.mst: the canonical hash of SPEC §1 and its incremental tree."""

from __future__ import annotations

import hashlib
import random

import pytest

from roomsync.core.entries import Change
from roomsync.core.mst import (
    DEFAULT_RETAIN_ROOTS,
    EMPTY_ROOT_HEX,
    MerkleSearchTree,
    build_root,
    leaf_hash,
    level,
    serve_nodes,
)
from roomsync.core.postcard import decode_node, encode_leaf

# Paths with known levels (level = leading zero hex digits of sha256(path)).
LEVEL1 = ["/k/22", "/k/58", "/k/66", "/k/76", "/k/91", "/k/114", "/k/118", "/k/188"]
LEVEL2 = ["/k/214", "/k/524", "/k/1442"]
LEVEL3 = ["/k/9479"]
LEVEL4 = ["/k/62502"]


def ch(path: str, ts: int = 1, value: bytes | None = b"v", actor: str = "a") -> Change:
    return Change(path, ts, 0, actor, value)


def live_root(state: dict[str, Change]) -> str:
    return build_root(state.values())


def all_nodes(tree: MerkleSearchTree) -> dict[bytes, bytes]:
    """Walk the current tree from its root through node()."""
    out: dict[bytes, bytes] = {}
    stack = [tree.root_hash]
    while stack:
        h = stack.pop()
        if h is None:
            continue
        data = tree.node(h)
        assert data is not None
        assert hashlib.sha256(data).digest() == h
        out[h] = data
        left, entries = decode_node(data)
        stack.append(left)
        stack.extend(right for _, _, right in entries)
    return out


# -- leaf and level -------------------------------------------------------------------------


def test_leaf_hash_is_sha256_of_the_postcard_leaf() -> None:
    c = Change("/a", 7, 1, "x", b"hello", seq=99)
    assert leaf_hash(c) == hashlib.sha256(encode_leaf(c)).digest()
    # seq is not part of the leaf
    assert leaf_hash(c) == leaf_hash(c.with_seq(None))


def test_leaf_hash_of_a_tombstone_is_refused() -> None:
    with pytest.raises(ValueError, match="tombstone"):
        leaf_hash(ch("/a", value=None))


@pytest.mark.parametrize(
    ("paths", "expected"),
    [(["/a", "/k/1", "/k/3"], 0), (LEVEL1, 1), (LEVEL2, 2), (LEVEL3, 3), (LEVEL4, 4)],
)
def test_level_counts_leading_zero_hex_digits(paths: list[str], expected: int) -> None:
    for path in paths:
        digest = hashlib.sha256(path.encode()).hexdigest()
        assert len(digest) - len(digest.lstrip("0")) == expected
        assert level(path) == expected


def test_level_uses_utf8() -> None:
    path = "/日本/語"
    digest = hashlib.sha256(path.encode("utf-8")).hexdigest()
    assert level(path) == len(digest) - len(digest.lstrip("0"))


# -- build_root -----------------------------------------------------------------------------


def test_build_root_empty_is_64_zeros() -> None:
    assert build_root([]) == EMPTY_ROOT_HEX == "0" * 64
    assert build_root([ch("/a", value=None)]) == EMPTY_ROOT_HEX


def test_build_root_ignores_tombstones_and_input_order() -> None:
    entries = [ch(f"/p/{i}", ts=i) for i in range(50)]
    with_tombs = [*entries, ch("/gone", value=None), ch("/gone2", value=None)]
    shuffled = list(with_tombs)
    random.Random(3).shuffle(shuffled)
    assert build_root(shuffled) == build_root(entries)


def test_build_root_refuses_duplicate_live_paths() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        build_root([ch("/a", ts=1), ch("/a", ts=2)])


def test_build_root_sorts_by_utf8_bytes_not_utf16() -> None:
    # U+FF21 sorts before U+1F600 in UTF-8 (and by code point), after it in UTF-16.
    a, b = "/\uff21", "/\U0001f600"
    tree = MerkleSearchTree([ch(b), ch(a)])
    root = tree.root_hash
    assert root is not None
    data = tree.node(root)
    assert data is not None
    _, entries = decode_node(data)
    assert [p for p, _, _ in entries] == [a, b]


def test_build_root_single_entry_by_hand() -> None:
    c = ch("/a")
    leaf = hashlib.sha256(encode_leaf(c)).digest()
    node = b"\x00\x01\x02/a" + leaf + b"\x00"
    assert build_root([c]) == hashlib.sha256(node).hexdigest()


def test_a_high_level_key_becomes_the_root_node() -> None:
    entries = [ch(f"/k/{i}") for i in range(30)] + [ch(LEVEL3[0])]
    tree = MerkleSearchTree(entries)
    root = tree.root_hash
    assert root is not None
    data = tree.node(root)
    assert data is not None
    left, node_entries = decode_node(data)
    assert [p for p, _, _ in node_entries] == LEVEL3
    assert left is not None


# -- MerkleSearchTree: reading -------------------------------------------------------------


def test_empty_tree() -> None:
    tree = MerkleSearchTree()
    assert tree.root_hash is None
    assert tree.root_hex == EMPTY_ROOT_HEX
    assert tree.count == 0
    assert tree.paths() == []
    assert tree.get("/a") is None
    assert "/a" not in tree
    assert tree.leaf("/a") is None
    assert tree.range_hash(None, None) is None
    assert tree.paths_between(None, None) == []
    assert tree.node(bytes(32)) is None


def test_bulk_build_applies_entries_in_order() -> None:
    tree = MerkleSearchTree([ch("/a", ts=1), ch("/b"), ch("/a", ts=2), ch("/b", value=None)])
    assert tree.count == 1
    assert tree.get("/a") == ch("/a", ts=2)
    assert tree.paths() == ["/a"]
    assert "/a" in tree
    assert tree.root_hex == build_root([ch("/a", ts=2)])


def test_bulk_build_matches_incremental() -> None:
    entries = [ch(p, ts=i) for i, p in enumerate([f"/p/{i}" for i in range(300)] + LEVEL2)]
    bulk = MerkleSearchTree(entries)
    step = MerkleSearchTree()
    for c in reversed(entries):
        step.put(c)
    assert bulk.root_hex == step.root_hex == build_root(entries)
    assert all_nodes(bulk) == all_nodes(step)


def test_leaf_lookup() -> None:
    entries = [ch(f"/k/{i}", ts=i) for i in range(200)]
    tree = MerkleSearchTree(entries)
    for c in entries:
        assert tree.leaf(c.path) == leaf_hash(c)
    assert tree.leaf("/missing") is None


def test_retain_roots_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="retain_roots"):
        MerkleSearchTree(retain_roots=-1)


# -- MerkleSearchTree: writing -------------------------------------------------------------


def test_put_insert_replace_delete() -> None:
    tree = MerkleSearchTree()
    state: dict[str, Change] = {}
    for c in [ch("/a"), ch("/b"), ch("/a", ts=2, value=b"w"), ch(LEVEL2[0]), ch(LEVEL1[0])]:
        tree.put(c)
        state[c.path] = c
        assert tree.root_hex == live_root(state)
    tree.put(ch("/a", ts=3, value=None))
    del state["/a"]
    assert tree.root_hex == live_root(state)
    tree.remove(LEVEL2[0])
    del state[LEVEL2[0]]
    assert tree.root_hex == live_root(state)
    assert tree.count == len(state) == 2


def test_removing_an_absent_path_changes_nothing() -> None:
    tree = MerkleSearchTree([ch("/a")])
    before = tree.root_hash
    tree.remove("/nope")
    tree.put(ch("/nope", value=None))
    assert tree.root_hash == before
    assert tree.count == 1


def test_removing_everything_gives_the_empty_root() -> None:
    paths = [f"/k/{i}" for i in range(100)] + LEVEL2 + LEVEL3
    tree = MerkleSearchTree([ch(p) for p in paths])
    assert tree.root_hash is not None
    for p in reversed(paths):
        tree.remove(p)
    assert tree.root_hash is None
    assert tree.root_hex == EMPTY_ROOT_HEX
    assert tree.count == 0


def test_same_leaf_again_keeps_the_hashes() -> None:
    tree = MerkleSearchTree([ch(f"/k/{i}") for i in range(100)])
    nodes = all_nodes(tree)
    tree.put(ch("/k/5").with_seq(42))  # same leaf, other seq
    assert tree.get("/k/5") == ch("/k/5").with_seq(42)
    assert all_nodes(tree) == nodes


def test_insert_then_remove_a_high_level_key_restores_the_root() -> None:
    entries = [ch(f"/p/{i}", ts=i) for i in range(400)]
    tree = MerkleSearchTree(entries)
    before = tree.root_hex
    added: list[Change] = []
    for key in LEVEL4 + LEVEL3 + LEVEL2:
        added.append(ch(key))
        tree.put(added[-1])
        assert tree.root_hex == build_root(entries + added)
    for key in LEVEL3 + LEVEL4 + LEVEL2:
        tree.remove(key)
    assert tree.root_hex == before


def test_structure_edits_at_every_level_match_the_reference() -> None:
    rnd = random.Random(11)
    pool = [f"/k/{i}" for i in range(250)] + LEVEL1 + LEVEL2 + LEVEL3 + ["/ü/1", "/x/😀"]
    tree = MerkleSearchTree()
    state: dict[str, Change] = {}
    for step in range(1500):
        path = rnd.choice(pool)
        if rnd.random() < 0.35:
            tree.put(ch(path, ts=step, value=None))
            state.pop(path, None)
        else:
            c = ch(path, ts=step, value=bytes([rnd.randrange(4)]))
            tree.put(c)
            state[path] = c
        if step % 97 == 0:
            assert tree.root_hex == live_root(state)
    assert tree.root_hex == live_root(state)
    assert tree.count == len(state)
    nodes = all_nodes(tree)
    assert sum(len(decode_node(d)[1]) for d in nodes.values()) == len(state)


# -- ranges --------------------------------------------------------------------------------


def test_range_hash_and_paths_between_match_the_reference() -> None:
    entries = [ch(f"/p/{i}", ts=i) for i in range(300)] + [ch(p) for p in LEVEL2 + LEVEL3]
    tree = MerkleSearchTree(entries)
    keys = sorted(c.path for c in entries)
    rnd = random.Random(5)
    bounds: list[str | None] = [None, "/", "/k/", "/k/2", "/zz", *rnd.sample(keys, 25)]
    for lo in bounds:
        for hi in bounds:
            inside = [
                c for c in entries if (lo is None or c.path > lo) and (hi is None or c.path < hi)
            ]
            got = tree.range_hash(lo, hi)
            assert (EMPTY_ROOT_HEX if got is None else got.hex()) == build_root(inside)
            assert tree.paths_between(lo, hi) == sorted(c.path for c in inside)


def test_range_of_the_whole_tree_is_the_root() -> None:
    tree = MerkleSearchTree([ch(f"/k/{i}") for i in range(50)])
    assert tree.range_hash(None, None) == tree.root_hash
    assert tree.range_hash("/k/3", "/k/3") is None
    assert tree.paths_between("/k/4", "/k/3") == []


# -- node() retention ----------------------------------------------------------------------


def test_node_serves_the_previous_roots_while_writes_continue() -> None:
    tree = MerkleSearchTree([ch(f"/k/{i}") for i in range(500)], retain_roots=2)
    generations = [all_nodes(tree)]
    for n in range(4):
        tree.put(ch(f"/k/{n}", ts=10 + n, value=b"new"))
        tree.put(ch(f"/new/{n}"))
        generations.append(all_nodes(tree))  # computes a new root
    # current + the two roots computed before it are fully servable
    for nodes in generations[-3:]:
        for h, data in nodes.items():
            assert tree.node(h) == data
    # older ones are forgotten (except nodes they share with newer roots)
    oldest_only = set(generations[0]) - set().union(*generations[-3:])
    assert oldest_only
    assert all(tree.node(h) is None for h in oldest_only)


def test_node_serves_the_last_root_before_it_is_recomputed() -> None:
    tree = MerkleSearchTree([ch(f"/k/{i}") for i in range(300)], retain_roots=0)
    nodes = all_nodes(tree)
    for i in range(50):
        tree.put(ch(f"/k/{i}", ts=2))
    # writes happened but no new root was computed: the last root is still whole
    assert all(tree.node(h) == d for h, d in nodes.items())
    assert tree.root_hash is not None
    assert any(tree.node(h) is None for h in nodes)


def test_default_retention() -> None:
    assert DEFAULT_RETAIN_ROOTS >= 1
    tree = MerkleSearchTree([ch("/a")])
    first = all_nodes(tree)
    for i in range(DEFAULT_RETAIN_ROOTS):
        tree.put(ch("/a", ts=2 + i))
        assert tree.root_hash is not None
    assert all(tree.node(h) == d for h, d in first.items())
    tree.put(ch("/a", ts=100))
    assert tree.root_hash is not None
    assert all(tree.node(h) is None for h in first)


def test_serve_nodes_skips_unknown_dedupes_and_limits() -> None:
    tree = MerkleSearchTree([ch(f"/k/{i}") for i in range(400)])
    nodes = all_nodes(tree)
    hashes = list(nodes)
    unknown = hashlib.sha256(b"nope").digest()
    served = serve_nodes(tree, [unknown, hashes[0], hashes[0], *hashes[1:5]])
    assert served == [(h, nodes[h]) for h in hashes[:5]]
    assert serve_nodes(tree, hashes, limit=3) == [(h, nodes[h]) for h in hashes[:3]]
    assert serve_nodes(tree, []) == []


def test_bulk_build_of_many_entries() -> None:
    entries = [
        Change(f"/docs/{i % 997}/items/{i}", 1_700_000_000_000 + i, i % 5, "a", b"x" * 16)
        for i in range(20_000)
    ]
    tree = MerkleSearchTree(entries)
    assert tree.count == 20_000
    root = tree.root_hex
    tree.put(Change("/docs/1/items/1", 1_800_000_000_000, 0, "b", b"y"))
    assert tree.root_hex != root
    tree.put(entries[1])  # no LWW in the tree: it mirrors what it is given
    assert tree.root_hex == root


def test_puts_into_an_empty_tree_are_a_bulk_load() -> None:
    """A full catch-up into an empty replica defers the shape to the first read."""
    changes = [Change(f"/b{i}", i, 0, "a", b"%d" % i) for i in range(300)]
    tree = MerkleSearchTree()
    assert tree.hashed
    for c in changes:
        tree.put(c)
    tree.remove("/b7")
    tree.put(Change("/b8", 999, 0, "a", None))
    assert not tree.hashed and tree.count == 298
    live = [c for c in changes if c.path not in ("/b7", "/b8")]
    assert tree.root_hex == build_root(live) and tree.hashed
    tree.put(Change("/b9", 1000, 0, "a", b"new"))  # built: incremental from here on
    assert not tree.hashed
    live = [c for c in live if c.path != "/b9"] + [Change("/b9", 1000, 0, "a", b"new")]
    assert tree.root_hex == build_root(live)
    assert tree.paths_between("/b1", "/b100") == ["/b10"]
