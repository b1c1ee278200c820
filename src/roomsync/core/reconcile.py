"""Merkle Search Tree reconcile as a generator flow (SPEC §1, wire types of SPEC §2).

The flow compares a local :class:`~roomsync.core.mst.MerkleSearchTree` with a remote root
and works out which paths differ, fetching only the remote nodes it cannot skip. It does
no I/O: it *yields* :class:`FetchNodes` and is *sent* the nodes the remote returned,
like httpx's ``auth_flow``. The SDK drives it over its connection, and :func:`run_local`
against an in-memory tree (tests, benchmarks)::

    flow = reconcile(tree, remote_root)          # remote_root from mst-root{root, count}
    try:
        fetch = next(flow)
        while True:
            # send mst-get{hashes: [h.hex() for h in fetch.hashes]}, await mst-nodes
            fetch = flow.send({bytes.fromhex(n["hash"]): b64decode(n["data"]) for n in nodes})
    except StopIteration as stop:
        result: ReconcileResult = stop.value

Then exchange the differing paths: ``request{paths}`` for them and send a ``pack`` with
our entries for them; LWW decides on each side. ``pull`` are the paths where the remote
has a live leaf we lack or that differs, ``push`` our live paths the remote lacks or has
differently. The MST only covers live entries, so a path deleted on one side shows up as
a path the other side still has: to converge on deletes too, request and send every path
of ``result.differing`` (``pull`` + ``push``). The ``request{paths}`` answer carries the
remote's tombstones (which beat a stale local live entry) and our pack carries our
tombstones (which beat a stale remote one). Once both sides merged those entries, their
roots are equal (property-tested in ``tests/properties/test_mst_laws.py``).

How traffic stays proportional to the difference: the walk starts at the remote root and
keeps a key range ``(lo, hi)`` for every remote subtree it meets. A subtree is skipped
when the local tree's own subtree for that range hashes the same
(:meth:`MerkleSearchTree.range_hash`); it is expanded from local bytes, without traffic,
when the local tree knows its hash (:meth:`MerkleSearchTree.node`); only the rest is
fetched, all hashes of one tree level in one round (so rounds ≈ depth of the remote
tree), at most ``max_hashes`` per ``mst-get``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Mapping
from dataclasses import dataclass

from .errors import CodecError
from .mst import MerkleSearchTree, serve_nodes
from .postcard import decode_node

DEFAULT_MAX_HASHES = 256
"""Hashes per ``mst-get``: the default ``limit`` of :func:`~roomsync.core.mst.serve_nodes`."""


@dataclass(frozen=True)
class FetchNodes:
    """Ask the remote for these nodes: send ``mst-get{hashes}`` and send back what came."""

    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class ReconcileResult:
    """What a reconcile found. Both path tuples are sorted.

    ``pull``: paths where the remote has a leaf we lack or that differs (request them).
    ``push``: local live paths the remote lacks or has differently (send them).
    A path whose leaves differ is in both; LWW decides on each side. ``complete`` is False
    when the remote no longer had a node it had announced (its tree moved on): the paths
    found so far are real differences, but the driver should start over from a fresh
    ``mst-root`` to find the rest.
    """

    pull: tuple[str, ...]
    push: tuple[str, ...]
    rounds: int
    nodes_fetched: int
    bytes_fetched: int
    complete: bool

    @property
    def differing(self) -> tuple[str, ...]:
        """Every path whose live leaf differs (``pull`` + ``push``), sorted.

        Exchanging the entries of these paths both ways (tombstones included) converges.
        """
        return tuple(sorted({*self.pull, *self.push}))


_EMPTY_ROOT = bytes(32)

# A remote subtree to look at: its hash and the open key range (None = unbounded) it covers.
_Item = tuple[bytes, str | None, str | None]


class _Walk:
    """The state of one reconcile: differing paths found and subtrees still to look at."""

    def __init__(self, local: MerkleSearchTree) -> None:
        self.local = local
        self.pull: set[str] = set()
        self.push: set[str] = set()
        self.frontier: list[_Item] = []

    def expand(self, h: bytes, data: bytes, lo: str | None, hi: str | None) -> None:
        """Compare the entries of remote node ``h`` (covering ``(lo, hi)``) with ours."""
        left, entries = decode_node(data)
        if not entries:
            raise CodecError(f"bad postcard: MST node {h.hex()} has no entries")
        local = self.local
        bound = lo
        child = left
        for path, leaf, right in entries:
            if (bound is not None and path <= bound) or (hi is not None and path >= hi):
                raise CodecError(
                    f"bad postcard: MST node {h.hex()} has entry {path!r} out of order"
                )
            self._child(child, bound, path)
            mine = local.leaf(path)
            if mine != leaf:
                self.pull.add(path)
                if mine is not None:
                    self.push.add(path)
            bound = path
            child = right
        self._child(child, bound, hi)

    def _child(self, h: bytes | None, lo: str | None, hi: str | None) -> None:
        if h is None:
            # The remote has nothing in (lo, hi): whatever we hold there is ours to push.
            self.push.update(self.local.paths_between(lo, hi))
        else:
            self.frontier.append((h, lo, hi))

    def settle_locally(self) -> list[_Item]:
        """Skip equal subtrees and expand locally known ones; return the items to fetch."""
        local = self.local
        to_fetch: list[_Item] = []
        while self.frontier:
            h, lo, hi = item = self.frontier.pop()
            if local.range_hash(lo, hi) == h:
                continue
            data = local.node(h)
            if data is None:
                to_fetch.append(item)
            else:
                self.expand(h, data, lo, hi)
        return to_fetch


def reconcile(
    local: MerkleSearchTree,
    remote_root: bytes | None,
    *,
    max_hashes: int = DEFAULT_MAX_HASHES,
) -> Generator[FetchNodes, Mapping[bytes, bytes], ReconcileResult]:
    """Find the paths where ``local`` and the remote tree of root ``remote_root`` differ.

    ``remote_root`` is None (or 32 zero bytes, the empty root of SPEC §1) for an empty
    remote. Yields :class:`FetchNodes` and expects a mapping ``hash -> node bytes`` back (extra
    nodes are ignored). Every received node must hash to the hash it was asked for and
    decode as a ``Node`` whose entries are ordered and inside the subtree's key range,
    else :class:`CodecError` is raised. Local writes between rounds are allowed; their
    paths reach the remote through the normal ``pack`` flow.
    """
    if max_hashes < 1:
        raise ValueError("max_hashes must be >= 1")
    walk = _Walk(local)
    rounds = nodes_fetched = bytes_fetched = 0
    complete = True
    if remote_root is None or remote_root == _EMPTY_ROOT:
        walk.push.update(local.paths())
    elif remote_root != local.root_hash:
        walk.frontier.append((remote_root, None, None))
    while walk.frontier and complete:
        wanted = walk.settle_locally()
        # One tree level per round: children of this round's nodes wait for the next.
        for start in range(0, len(wanted), max_hashes):
            batch = wanted[start : start + max_hashes]
            reply = yield FetchNodes(tuple(dict.fromkeys(h for h, _, _ in batch)))
            rounds += 1
            for h, lo, hi in batch:
                data = reply.get(h)
                if data is None:
                    complete = False
                    continue
                data = bytes(data)
                if hashlib.sha256(data).digest() != h:
                    raise CodecError(f"bad postcard: MST node {h.hex()} does not match its hash")
                nodes_fetched += 1
                bytes_fetched += len(data)
                walk.expand(h, data, lo, hi)
            if not complete:
                break
        if not complete:
            # Keep what this round found but stop walking: the remote tree changed.
            walk.frontier.clear()
    return ReconcileResult(
        pull=tuple(sorted(walk.pull)),
        push=tuple(sorted(walk.push)),
        rounds=rounds,
        nodes_fetched=nodes_fetched,
        bytes_fetched=bytes_fetched,
        complete=complete,
    )


def run_local(
    local: MerkleSearchTree,
    remote: MerkleSearchTree,
    *,
    max_hashes: int = DEFAULT_MAX_HASHES,
) -> ReconcileResult:
    """Drive :func:`reconcile` against an in-memory ``remote`` (tests, benchmarks).

    Answers each :class:`FetchNodes` as a server would, with
    :func:`~roomsync.core.mst.serve_nodes`.
    """
    flow = reconcile(local, remote.root_hash, max_hashes=max_hashes)
    try:
        fetch = next(flow)
        while True:
            served = serve_nodes(remote, list(fetch.hashes), limit=max_hashes)
            fetch = flow.send(dict(served))
    except StopIteration as stop:
        result: ReconcileResult = stop.value
        return result
