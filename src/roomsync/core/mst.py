"""The Merkle Search Tree over the live entries of a room: the canonical hash (SPEC §1).

The construction is fixed by SPEC §1 so that every client computes the same root::

    leaf(e)  = SHA-256(postcard Leaf{path, ts, counter, actor, value})
    level(k) = number of leading zero 4-bit digits of SHA-256(utf8 path k)
    build(S) = Node{left, entries}: the entries of S at its highest level L split S into
               G0, e1, G1, ..., em, Gm; left = hash(build(G0)), entry i = (path, leaf,
               hash(build(Gi))), None for an empty group
    root     = hex(SHA-256(postcard(build(all live)))), or 64 zeros when empty

Two things live here:

* :func:`build_root`, the literal reference construction (used by tests, by
  ``roomsync replay`` and as the oracle of the property tests);
* :class:`MerkleSearchTree`, the same tree maintained incrementally as changes are
  applied. ``put`` only edits structure and marks the touched path dirty; hashes are
  recomputed lazily, only for dirty nodes, when :attr:`MerkleSearchTree.root_hash` is
  read. So a burst of writes costs one re-hash of the nodes they touched. Puts into an
  empty tree (a client's full catch-up) do not even build the shape: the first read
  builds it in one pass from the sorted live paths, as the constructor does.

Because ``build`` is a function of the live set alone, a node's key range is bounded by
the two nearest entries of a higher level, whatever the history. The incremental
operations (insert = split the covering subtree at the new key, delete = merge the two
subtrees beside the removed key) keep exactly that shape.

Invariant: after any sequence of put/remove, ``root_hex == build_root(live entries)``
and every node served by ``node(h)`` decodes and hashes to ``h`` (property-tested in
``tests/properties/test_mst_laws.py``).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable
from itertools import pairwise

from .entries import Change
from .postcard import NodeEntryTuple, encode_leaf, encode_node

EMPTY_ROOT_HEX = "00" * 32
"""``root`` of an empty room: 64 zeros (SPEC §1)."""

DEFAULT_RETAIN_ROOTS = 4
"""How many previously computed roots keep their nodes servable by default."""

_sha256 = hashlib.sha256


def leaf_hash(change: Change) -> bytes:
    """``SHA-256(postcard Leaf)`` of a live change (ValueError for a tombstone)."""
    return _sha256(encode_leaf(change)).digest()


def level(path: str) -> int:
    """The MST level of ``path``: leading zero hex digits of ``SHA-256(utf8 path)``."""
    digest = int.from_bytes(_sha256(path.encode("utf-8")).digest(), "big")
    return (256 - digest.bit_length()) // 4


def _utf8_key(change: Change) -> bytes:
    return change.path.encode("utf-8")


def build_root(entries: Iterable[Change]) -> str:
    """The canonical root (hex) of the live entries among ``entries``: SPEC §1 verbatim.

    Tombstones are ignored; paths are sorted by their UTF-8 bytes. ``entries`` is a state
    (one entry per path): a path that is live twice raises :class:`ValueError`. This is
    the slow, obviously correct construction; :class:`MerkleSearchTree` must agree with it.
    """
    live = sorted((c for c in entries if c.value is not None), key=_utf8_key)
    for before, after in pairwise(live):
        if before.path == after.path:
            raise ValueError(f"duplicate live path {after.path!r}")
    if not live:
        return EMPTY_ROOT_HEX
    levels = [level(c.path) for c in live]

    def build(lo: int, hi: int) -> bytes | None:
        if lo == hi:
            return None
        top = max(levels[lo:hi])
        splits = [i for i in range(lo, hi) if levels[i] == top]
        left = build(lo, splits[0])
        node_entries: list[NodeEntryTuple] = []
        for n, i in enumerate(splits):
            end = splits[n + 1] if n + 1 < len(splits) else hi
            node_entries.append((live[i].path, leaf_hash(live[i]), build(i + 1, end)))
        return _sha256(encode_node(left, node_entries)).digest()

    root = build(0, len(live))
    assert root is not None
    return root.hex()


class _Node:
    """One MST node: the entries of one level between two higher-level entries.

    ``children[i]`` holds the keys between ``keys[i-1]`` and ``keys[i]`` (``children[0]``
    is ``left``, ``children[i+1]`` the ``right`` of entry ``i``). ``leaves[i]`` is None until
    hashed; ``hash`` is None while the node (or anything below it) is dirty.
    """

    __slots__ = ("changes", "children", "hash", "keys", "leaves", "level")

    def __init__(
        self,
        level: int,
        keys: list[str],
        changes: list[Change],
        leaves: list[bytes | None],
        children: list[_Node | None],
    ) -> None:
        self.level = level
        self.keys = keys
        self.changes = changes
        self.leaves = leaves
        self.children = children
        self.hash: bytes | None = None


class MerkleSearchTree:
    """The MST of a room's live entries, kept up to date one change at a time.

    Call :meth:`put` with every change the room accepts (tombstones remove their path);
    read :attr:`root_hash` / :attr:`root_hex` when the canonical hash is needed (welcome,
    ``mst-root``); answer ``mst-get`` with :meth:`node` (or :func:`serve_nodes`).

    What :meth:`node` guarantees: a root is *computed* when :attr:`root_hash`,
    :attr:`root_hex` or :meth:`range_hash` is read after writes. :meth:`node` returns, by
    hash, every node of the latest computed root and of the ``retain_roots`` roots
    computed before it (default 4), even after later writes changed the tree. Nodes of
    states whose root was never computed are never materialised (nobody can know their
    hashes). So a peer reconciling against the root it was sent can finish its walk while
    writes continue, as long as fewer than ``retain_roots`` newer roots were computed
    meanwhile. Past that, unknown hashes are answered as missing and the peer starts over
    (``ReconcileResult.complete`` is False). Retained roots cost memory only for the nodes
    they do not share with the current tree, and nothing while no root is read.
    """

    __slots__ = ("_entries", "_live", "_pending", "_retired", "_root", "_stale")

    def __init__(
        self, entries: Iterable[Change] = (), *, retain_roots: int = DEFAULT_RETAIN_ROOTS
    ) -> None:
        """Bulk-build from ``entries`` (applied in order as by :meth:`put`)."""
        if retain_roots < 0:
            raise ValueError("retain_roots must be >= 0")
        state: dict[str, Change] = {}
        for change in entries:
            if change.value is None:
                state.pop(change.path, None)
            else:
                state[change.path] = change
        self._entries = state
        # Serialized nodes by hash: ``_live`` for the clean nodes of the current tree,
        # ``_pending`` for nodes of the last computed root dirtied since, ``_retired`` for
        # nodes of older computed roots (newest last).
        self._live: dict[bytes, bytes] = {}
        self._pending: dict[bytes, bytes] = {}
        self._retired: deque[dict[bytes, bytes]] = deque(maxlen=retain_roots)
        # Python orders str by code point, which is the order of their UTF-8 bytes.
        self._root: _Node | None = None
        # True while the shape is not built: puts into an empty tree only fill
        # ``_entries`` (a full catch-up is a bulk load), and the first read that needs the
        # shape builds it in one pass (:meth:`_shape`), the same tree as one put each.
        self._stale = bool(state)

    # -- reading ---------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of live entries."""
        return len(self._entries)

    def get(self, path: str) -> Change | None:
        """The live change stored at ``path``, or None."""
        return self._entries.get(path)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def paths(self) -> list[str]:
        """All live paths, sorted."""
        return sorted(self._entries)

    @property
    def root_hash(self) -> bytes | None:
        """Hash of the root node (None when empty); re-hashes only dirty nodes."""
        return self._flush()

    @property
    def hashed(self) -> bool:
        """True when :attr:`root_hash` is up to date: reading it builds and hashes nothing."""
        return not self._stale and (self._root is None or self._root.hash is not None)

    @property
    def root_hex(self) -> str:
        """The canonical hash of SPEC §1: hex root, or 64 zeros when empty."""
        root = self.root_hash
        return EMPTY_ROOT_HEX if root is None else root.hex()

    def node(self, h: bytes) -> bytes | None:
        """Postcard ``Node`` bytes of the node hashing to ``h`` (see the class docstring)."""
        data = self._live.get(h)
        if data is None:
            data = self._pending.get(h)
        if data is None:
            for generation in reversed(self._retired):
                data = generation.get(h)
                if data is not None:
                    break
        return data

    def leaf(self, path: str) -> bytes | None:
        """The leaf hash of ``path`` in the current tree, or None when not live."""
        if path not in self._entries:
            return None
        t = self._shape()
        while t is not None:
            keys = t.keys
            i = bisect_left(keys, path)
            if i < len(keys) and keys[i] == path:
                leaf = t.leaves[i]
                if leaf is None:
                    leaf = t.leaves[i] = leaf_hash(t.changes[i])
                return leaf
            t = t.children[i]
        raise AssertionError(f"{path!r} is live but not in the tree")  # pragma: no cover

    def paths_between(self, lo: str | None, hi: str | None) -> list[str]:
        """Live paths strictly between ``lo`` and ``hi`` (None: unbounded), sorted."""
        out: list[str] = []
        if lo is not None and hi is not None and lo >= hi:
            return out
        _collect(self._shape(), lo, hi, out)
        return out

    def range_hash(self, lo: str | None, hi: str | None) -> bytes | None:
        """``hash(build(live paths strictly between lo and hi))``, None when that is empty.

        Costs O(depth) when the bounds are entries of a higher level in this tree (the
        usual case when comparing with a similar tree); otherwise only the nodes cut by
        the bounds are re-encoded. Used by reconcile to skip equal subtrees.
        """
        if lo is not None and hi is not None and lo >= hi:
            return None
        self._flush()
        return _view_hash(_open_view(self._root, lo, hi, None, None))

    def region(self, lo: str | None, lo_incl: bool, hi: str | None) -> Region:
        """The canonical structure of the key region ``[lo, hi)`` (``(lo, hi)`` when not
        ``lo_incl``; None: unbounded) in this tree, for batched reconcile
        (:mod:`roomsync.core.sketch`).

        Its node is that of ``build(live paths strictly between lo and hi)``: the node of
        this tree when the bounds are entries of a higher level (the usual case), else a
        view re-cut at the bounds, like :meth:`range_hash`. Costs O(depth); the slots and
        sub-regions of the result cost nothing more to reach.
        """
        self._flush()
        root = self._root
        if lo is not None and hi is not None and lo >= hi:
            return Region(lo, lo_incl, None, None, hi)
        lower = self.leaf(lo) if lo_incl and lo is not None else None
        return Region(lo, lo_incl, lower, _open_view(root, lo, hi, None, None), hi)

    def region_entries(
        self, lo: str | None, lo_incl: bool, hi: str | None, limit: int
    ) -> list[tuple[str, bytes, Change]] | None:
        """``(path, leaf, change)`` of the live entries of region ``[lo, hi)`` (see
        :meth:`region`), sorted; None when there are more than ``limit``.

        Stops as soon as the limit is passed, so its cost is bounded by ``limit`` and the
        depth, whatever the size of the region.
        """
        out: list[tuple[str, bytes, Change]] = []
        if lo is not None and hi is not None and lo >= hi:
            return out
        self._flush()
        root = self._root
        if lo_incl and lo is not None:
            change = self._entries.get(lo)
            if change is not None and (hi is None or lo < hi):
                leaf = self.leaf(lo)
                assert leaf is not None
                out.append((lo, leaf, change))
        if not _collect_entries(root, lo, hi, out, limit):
            return None
        return out

    # -- writing ---------------------------------------------------------------------

    def put(self, change: Change) -> None:
        """Mirror an applied change: live inserts or replaces its path, a tombstone removes it.

        No LWW here: call it with the changes :func:`~roomsync.core.merge.merge_into` kept.
        """
        path = change.path
        if change.value is None:
            self.remove(path)
            return
        if self._stale or self._root is None:
            # Empty or not built yet: defer the shape to the first read (bulk load).
            self._entries[path] = change
            self._stale = True
            return
        old = self._entries.get(path)
        self._entries[path] = change
        if (
            old is not None
            and old.ts == change.ts
            and old.counter == change.counter
            and old.actor == change.actor
            and old.value == change.value
        ):
            return  # same leaf (maybe another seq): nothing to re-hash
        self._root = self._insert(self._root, path, change, level(path), old is not None)

    def remove(self, path: str) -> None:
        """Remove ``path`` if it is live (no-op otherwise)."""
        if self._entries.pop(path, None) is None or self._stale:
            return
        self._root = self._remove(self._root, path, level(path))

    def _shape(self) -> _Node | None:
        """The root node, building the deferred shape first (see ``_stale``)."""
        if self._stale:
            self._stale = False
            state = self._entries
            # Python orders str by code point, which is the order of their UTF-8 bytes.
            keys = sorted(state)
            self._root = _bulk(keys, [state[k] for k in keys], [level(k) for k in keys])
        return self._root

    # -- internals -------------------------------------------------------------------

    def _flush(self) -> bytes | None:
        root = self._shape()
        if root is None:
            self._publish()
            return None
        if root.hash is None:
            self._rehash(root)
            self._publish()
        return root.hash

    def _touch(self, t: _Node) -> None:
        """Mark ``t`` dirty before mutating it, keeping its old bytes for retained roots."""
        h = t.hash
        if h is not None:
            t.hash = None
            data = self._live.pop(h, None)
            if data is not None:
                self._pending[h] = data

    def _publish(self) -> None:
        """A root was just computed: nodes dirtied since the previous one become old."""
        if self._pending:
            if self._retired.maxlen:
                self._retired.append(self._pending)
            self._pending = {}

    def _rehash(self, t: _Node) -> bytes:
        left = t.children[0]
        left_hash = None if left is None else (left.hash or self._rehash(left))
        keys, leaves, children, changes = t.keys, t.leaves, t.children, t.changes
        node_entries: list[NodeEntryTuple] = []
        for i, key in enumerate(keys):
            leaf = leaves[i]
            if leaf is None:
                leaf = leaves[i] = _sha256(encode_leaf(changes[i])).digest()
            right = children[i + 1]
            node_entries.append(
                (key, leaf, None if right is None else (right.hash or self._rehash(right)))
            )
        data = encode_node(left_hash, node_entries)
        h = _sha256(data).digest()
        t.hash = h
        self._live[h] = data
        return h

    def _insert(self, t: _Node | None, key: str, change: Change, lvl: int, present: bool) -> _Node:
        if t is None:
            return _Node(lvl, [key], [change], [None], [None, None])
        if t.level < lvl:
            left, right = self._split(t, key)
            return _Node(lvl, [key], [change], [None], [left, right])
        self._touch(t)
        keys = t.keys
        i = bisect_left(keys, key)
        if t.level == lvl:
            if present:
                t.changes[i] = change
                t.leaves[i] = None
                return t
            left, right = self._split(t.children[i], key)
            keys.insert(i, key)
            t.changes.insert(i, change)
            t.leaves.insert(i, None)
            t.children[i : i + 1] = [left, right]
            return t
        t.children[i] = self._insert(t.children[i], key, change, lvl, present)
        return t

    def _split(self, t: _Node | None, key: str) -> tuple[_Node | None, _Node | None]:
        """Split ``t`` (which does not hold ``key``) into the parts below and above it."""
        if t is None:
            return None, None
        self._touch(t)
        keys = t.keys
        i = bisect_left(keys, key)
        below, above = self._split(t.children[i], key)
        if i == 0:
            t.children[0] = above
            return below, t
        if i == len(keys):
            t.children[i] = below
            return t, above
        left = _Node(t.level, keys[:i], t.changes[:i], t.leaves[:i], [*t.children[:i], below])
        del keys[:i], t.changes[:i], t.leaves[:i]
        t.children[: i + 1] = [above]
        return left, t

    def _remove(self, t: _Node | None, key: str, lvl: int) -> _Node | None:
        assert t is not None, "a live path is always in the tree"
        self._touch(t)
        i = bisect_left(t.keys, key)
        if t.level > lvl:
            t.children[i] = self._remove(t.children[i], key, lvl)
            return t
        merged = self._merge(t.children[i], t.children[i + 1])
        del t.keys[i], t.changes[i], t.leaves[i]
        t.children[i : i + 2] = [merged]
        return t if t.keys else merged

    def _merge(self, a: _Node | None, b: _Node | None) -> _Node | None:
        """Join two adjacent subtrees (every key of ``a`` below every key of ``b``)."""
        if a is None:
            return b
        if b is None:
            return a
        if a.level > b.level:
            self._touch(a)
            a.children[-1] = self._merge(a.children[-1], b)
            return a
        if a.level < b.level:
            self._touch(b)
            b.children[0] = self._merge(a, b.children[0])
            return b
        self._touch(a)
        self._touch(b)
        middle = self._merge(a.children[-1], b.children[0])
        a.keys += b.keys
        a.changes += b.changes
        a.leaves += b.leaves
        a.children[-1:] = [middle, *b.children[1:]]
        return a


def _bulk(keys: list[str], changes: list[Change], levels: list[int]) -> _Node | None:
    """Build the tree shape of sorted ``keys`` (hashes are left for :meth:`_rehash`)."""

    def build(lo: int, hi: int) -> _Node | None:
        if lo == hi:
            return None
        top = max(levels[lo:hi])
        if top == 0:
            n = hi - lo
            return _Node(0, keys[lo:hi], changes[lo:hi], [None] * n, [None] * (n + 1))
        splits = [i for i in range(lo, hi) if levels[i] == top]
        children: list[_Node | None] = [build(lo, splits[0])]
        for n, i in enumerate(splits):
            children.append(build(i + 1, splits[n + 1] if n + 1 < len(splits) else hi))
        return _Node(
            top,
            [keys[i] for i in splits],
            [changes[i] for i in splits],
            [None] * len(splits),
            children,
        )

    return build(0, len(keys))


def _collect(t: _Node | None, lo: str | None, hi: str | None, out: list[str]) -> None:
    if t is None:
        return
    keys = t.keys
    i = 0 if lo is None else bisect_right(keys, lo)
    j = len(keys) if hi is None else bisect_left(keys, hi)
    _collect(t.children[i], lo, hi, out)
    for k in range(i, j):
        out.append(keys[k])
        _collect(t.children[k + 1], lo, hi, out)


class _Virtual:
    """A node of ``build(S ∩ (lo, hi))`` that is not a node of the tree: the entries of a
    tree node that lie between the bounds, with its children re-cut at them."""

    __slots__ = ("_hash", "children", "keys", "leaves")

    def __init__(
        self, keys: list[str], leaves: list[bytes], children: list[_Node | _Virtual | None]
    ) -> None:
        self.keys = keys
        self.leaves = leaves
        self.children = children
        self._hash: bytes | None = None

    @property
    def hash(self) -> bytes:
        h = self._hash
        if h is None:
            kids = self.children
            node_entries: list[NodeEntryTuple] = [
                (key, self.leaves[k], _view_hash(kids[k + 1])) for k, key in enumerate(self.keys)
            ]
            h = self._hash = _sha256(encode_node(_view_hash(kids[0]), node_entries)).digest()
        return h


View = _Node | _Virtual
"""A node of the canonical tree of a key range: a clean tree node or a :class:`_Virtual`."""


def _view_hash(view: View | None) -> bytes | None:
    if view is None:
        return None
    h = view.hash
    assert h is not None, "views are taken of hashed trees only"
    return h


def _open_view(
    t: _Node | None, lo: str | None, hi: str | None, tlo: str | None, thi: str | None
) -> View | None:
    """The node of ``build(content(t) ∩ (lo, hi))`` (``content(t)`` lies in ``(tlo, thi)``);
    its hash is that canonical tree's root hash. Requires a clean tree (every node hashed):
    a subtree that lies wholly in the range is itself a node of the result, and only the
    nodes along the two bounds are re-cut (:class:`_Virtual`)."""
    while t is not None:
        if (lo is None or (tlo is not None and tlo >= lo)) and (
            hi is None or (thi is not None and thi <= hi)
        ):
            return t
        keys = t.keys
        i = 0 if lo is None else bisect_right(keys, lo)
        j = len(keys) if hi is None else bisect_left(keys, hi)
        if i >= j:
            if i > 0:
                tlo = keys[i - 1]
            if i < len(keys):
                thi = keys[i]
            t = t.children[i]
            continue
        children = t.children
        leaves = t.leaves[i:j]
        assert all(leaf is not None for leaf in leaves)
        kids: list[View | None] = [
            _open_view(children[i], lo, hi, keys[i - 1] if i > 0 else tlo, keys[i])
        ]
        kids += children[i + 1 : j]
        kids.append(_open_view(children[j], lo, hi, keys[j - 1], keys[j] if j < len(keys) else thi))
        return _Virtual(keys[i:j], leaves, kids)  # type: ignore[arg-type]
    return None


class Region:
    """A key region ``[lo, hi)`` of one tree, with its canonical node
    (:meth:`MerkleSearchTree.region`).

    ``lower`` is the leaf of ``lo`` when the region includes it and it is live. The
    region's *slots* split it: slot 0 is ``[lo, e1)``, slot ``i`` is ``[ei, ei+1)`` (the
    last one ends at ``hi``), where ``e1 < e2 < ...`` are the entries of ``node``; each
    slot is itself a region (:meth:`slot_region`) whose node is the child between its
    bounds. An empty open part has one slot, the whole region.
    """

    __slots__ = ("hi", "lo", "lo_incl", "lower", "node")

    def __init__(
        self,
        lo: str | None,
        lo_incl: bool,
        lower: bytes | None,
        node: View | None,
        hi: str | None,
    ) -> None:
        self.lo = lo
        self.lo_incl = lo_incl
        self.lower = lower
        self.node = node
        self.hi = hi

    @property
    def slot_count(self) -> int:
        node = self.node
        return 1 if node is None else len(node.keys) + 1

    def slot_region(self, s: int) -> Region:
        """Slot ``s`` as a region of its own (its node is the child between its bounds)."""
        node = self.node
        if node is None:
            if s != 0:
                raise IndexError(s)
            return self
        keys = node.keys
        hi = keys[s] if s < len(keys) else self.hi
        child = node.children[s]
        if s == 0:
            return Region(self.lo, self.lo_incl, self.lower, child, hi)
        return Region(keys[s - 1], True, node.leaves[s - 1], child, hi)

    def slot_has_child(self, s: int) -> bool:
        node = self.node
        return node is not None and node.children[s] is not None

    def child_hash(self) -> bytes | None:
        """Hash of the node of the open part (None when it is empty)."""
        return _view_hash(self.node)


def _collect_entries(
    t: View | None,
    lo: str | None,
    hi: str | None,
    out: list[tuple[str, bytes, Change]],
    limit: int,
) -> bool:
    """Append ``(path, leaf, change)`` of ``content(t) ∩ (lo, hi)`` in order; False once
    more than ``limit`` are collected (the caller gives up)."""
    if t is None:
        return True
    if not isinstance(t, _Node):  # pragma: no cover - regions start from tree nodes
        raise TypeError("collect from tree nodes")
    keys = t.keys
    i = 0 if lo is None else bisect_right(keys, lo)
    j = len(keys) if hi is None else bisect_left(keys, hi)
    children = t.children
    if not _collect_entries(children[i], lo, hi, out, limit):
        return False
    for k in range(i, j):
        leaf = t.leaves[k]
        assert leaf is not None
        out.append((keys[k], leaf, t.changes[k]))
        if len(out) > limit:
            return False
        if not _collect_entries(children[k + 1], lo, hi, out, limit):
            return False
    return True


def serve_nodes(
    tree: MerkleSearchTree, hashes: list[bytes], *, limit: int = 256
) -> list[tuple[bytes, bytes]]:
    """Answer ``mst-get``: ``(hash, node bytes)`` for the known ``hashes``, in request order.

    Unknown hashes (never part of a retained root) are skipped, duplicates answered once,
    and at most ``limit`` nodes are returned; the requester treats what is missing as
    "the tree moved on" and starts over from a fresh ``mst-root``.
    """
    out: list[tuple[bytes, bytes]] = []
    seen: set[bytes] = set()
    for h in hashes:
        if len(out) >= limit:
            break
        if h in seen:
            continue
        seen.add(h)
        data = tree.node(h)
        if data is not None:
            out.append((h, data))
    return out
