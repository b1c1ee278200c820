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

:func:`reconcile_batched` is the same search over ``mst-probe``/``mst-sketch``
(:mod:`roomsync.core.sketch`): it yields :class:`SendProbes` (the ``data`` of one or more
``mst-probe`` to send at once) and is sent the ``data`` of their ``mst-sketch`` answers.
It asks about key regions rather than nodes, gets truncated fingerprints several levels
deep per round, and at the bottom sends its own short leaf digests, so the remote answers
with the differing entries themselves (:attr:`ReconcileResult.entries`). Its fingerprints
are truncated: the driver checks the roots after the merge and runs :func:`reconcile` when
they differ. The SDK uses it by default (``client/reconciler.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass

from .entries import Change
from .errors import CodecError
from .mst import MerkleSearchTree, Region, leaf_hash, serve_nodes
from .postcard import decode_node
from .sketch import (
    BITS_MAX,
    BITS_MIN,
    DEFAULT_BITS,
    DEFAULT_LEAF_BITS,
    MAX_DEPTH,
    MAX_DIGESTS,
    MAX_LEAVES,
    MAX_PROBES,
    MAX_SLOTS,
    Deferred,
    Leaves,
    Probe,
    ProbeRequest,
    Sketch,
    SketchNode,
    decode_answer,
    encode_request,
    leaf_checksum,
    leaf_digest,
    region_fps,
    serve_probes,
    slot_fp32,
)

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
    #: Batched flow only: the remote's entries it sent inline (the remote's side of those
    #: ``pull`` paths), and the remote root its last answer was computed at.
    entries: tuple[Change, ...] = ()
    remote_root: bytes | None = None

    @property
    def differing(self) -> tuple[str, ...]:
        """Every path whose live leaf differs (``pull`` + ``push``), sorted.

        Exchanging the entries of these paths both ways (tombstones included) converges.
        """
        return tuple(sorted({*self.pull, *self.push}))

    @property
    def to_request(self) -> tuple[str, ...]:
        """The differing paths whose remote side did not come inline (``entries``), sorted:
        what ``request{paths}`` must still fetch (the remote may hold tombstones there)."""
        inline = {c.path for c in self.entries}
        return tuple(p for p in self.differing if p not in inline)


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


# -- the batched flow (mst-probe / mst-sketch) ---------------------------------------------------

DEFAULT_FIRST_BUDGET = 1024
"""Slot fingerprints the first probe asks for: the top levels of the remote tree."""
DEFAULT_LEAF_MAX = 32
"""A region holding at most this many local entries is probed with their leaf digests."""
MAX_REQUEST_BYTES = 192 * 1024
"""Postcard bytes of one ``mst-probe`` (base64 in a JSON frame stays under 256 KiB)."""
MAX_BATCHED_ROUNDS = 64


@dataclass(frozen=True)
class SendProbes:
    """Send one ``mst-probe{data}`` per request, in order (all at once: one round trip),
    and send back the ``data`` of the ``mst-sketch`` answers, in the same order."""

    requests: tuple[bytes, ...]


# A region to probe: (lo, lo_incl, hi).
_Bounds = tuple[str | None, bool, str | None]


@dataclass
class _Ask:
    """A probe to send, with what we sent about the region (leaves probes)."""

    probe: Probe
    leaf_bits: int
    paths: list[str]
    leaves: list[bytes]


class _Batch:
    """The state of one batched reconcile (see :func:`reconcile_batched`)."""

    def __init__(self, local: MerkleSearchTree, bits: int, leaf_bits: int, leaf_max: int) -> None:
        self.local = local
        self.bits = bits
        self.leaf_bits = leaf_bits
        self.leaf_max = leaf_max
        self.pull: set[str] = set()
        self.push: set[str] = set()
        self.entries: dict[str, Change] = {}
        self.pending: list[_Ask] = []

    def probe(self, bounds: _Bounds, leaf_bits: int | None = None) -> None:
        """Queue ``bounds``: a leaves probe when we hold few entries there, else a sketch."""
        lo, lo_incl, hi = bounds
        local = self.local
        mine = local.region_entries(lo, lo_incl, hi, MAX_LEAVES)
        if mine is not None and len(mine) > self.leaf_max:
            # A node of the lowest level sketches into one slot per entry: no cheaper
            # than the digests, and a round trip more.
            node = local.region(lo, lo_incl, hi).node
            if node is None or any(node.children):
                mine = None
        if mine is None:
            self.pending.append(_Ask(Probe(lo, lo_incl, hi, 1), self.leaf_bits, [], []))
            return
        width = self.leaf_bits if leaf_bits is None else leaf_bits
        leaves = [leaf for _, leaf, _ in mine]
        digests = tuple(leaf_digest(leaf, width) for leaf in leaves)
        self.pending.append(
            _Ask(Probe(lo, lo_incl, hi, 0, digests), width, [p for p, _, _ in mine], leaves)
        )

    def take(self, ask: _Ask, result: object) -> int:
        """Fold one probe's result in; returns the sketch nodes it carried."""
        probe = ask.probe
        if isinstance(result, Deferred):
            self.pending.append(ask)
            return 0
        if isinstance(result, Leaves):
            paths = ask.paths
            unmatched = set(result.unmatched)
            merged = {p: ask.leaves[i] for i, p in enumerate(paths) if i not in unmatched}
            for i in unmatched:
                self.push.add(paths[i])
            for change in result.entries:
                if change.value is None:
                    raise CodecError(f"bad postcard: inline entry {change.path!r} is a tombstone")
                self.pull.add(change.path)
                self.entries[change.path] = change
                merged[change.path] = leaf_hash(change)
            self.pull.update(result.more)
            if (
                not result.more
                and leaf_checksum(list(merged.values())) != result.checksum
                and ask.leaf_bits < 32
            ):
                # A short digest matched a differing entry: ask again with full ones.
                self.probe((probe.lo, probe.lo_incl, probe.hi), 32)
            return 0
        assert isinstance(result, Sketch)
        region = self.local.region(probe.lo, probe.lo_incl, probe.hi)
        if result.names is not None:
            return self._split_at(region, result.node, result.names)
        return self._compare(result.node, region)

    def _compare(self, node: SketchNode, region: Region) -> int:
        """Match the remote's slots of ``region`` against ours; queue what differs."""
        bits = self.bits
        shift = 32 - bits
        theirs = node.fps
        if len(theirs) == 1 and theirs[0] == _empty_fp(region) >> shift:
            # The remote holds nothing in the region: all we hold there is ours to push.
            self.push.update(p for p, _, _ in self._all_entries(region))
            return 1
        ours = region_fps(region, bits)
        loose = set(theirs) if len(theirs) != len(ours) else None
        nodes = 1
        for s, fp in enumerate(ours):
            if (s < len(theirs) and theirs[s] == fp) or (loose is not None and fp in loose):
                continue  # the same slot bounds and content on both sides
            sub = region.slot_region(s)
            kids = node.children
            kid = kids[s] if kids is not None and s < len(kids) else None
            if kid is not None and sub.node is not None:
                nodes += self._compare(kid, sub)
            else:
                self.probe((sub.lo, sub.lo_incl, sub.hi))
        return nodes

    def _split_at(self, region: Region, node: SketchNode, names: tuple[str, ...]) -> int:
        """The remote's region is large: probe it slot by slot, cut at its own entries."""
        cuts: list[str | None] = [region.lo, *names, region.hi]
        shift = 32 - self.bits
        for s, fp in enumerate(node.fps):
            if s == 0:
                bounds: _Bounds = (region.lo, region.lo_incl, cuts[1])
            else:
                bounds = (cuts[s], True, cuts[s + 1])
            ours = self.local.region(*bounds)
            if slot_fp32(ours) >> shift != fp:
                self.probe(bounds)
        return 1

    def _all_entries(self, region: Region) -> list[tuple[str, bytes, Change]]:
        found = self.local.region_entries(region.lo, region.lo_incl, region.hi, 1 << 62)
        assert found is not None
        return found


def _empty_fp(region: Region) -> int:
    return slot_fp32(Region(region.lo, region.lo_incl, None, None, region.hi))


def _requests(pending: list[_Ask], bits: int, budget: int) -> list[tuple[ProbeRequest, list[_Ask]]]:
    """Cut the queued probes into requests within the server's limits (one leaf digest
    width a request)."""
    out: list[tuple[ProbeRequest, list[_Ask]]] = []
    for width in sorted({ask.leaf_bits for ask in pending}):
        asks: list[_Ask] = []
        digests = size = 0
        for ask in sorted((a for a in pending if a.leaf_bits == width), key=_probe_order):
            probe = ask.probe
            n = len(probe.digests) if probe.digests is not None else 0
            cost = 8 + (len(probe.lo or "") + len(probe.hi or "")) // 2 + (n * width + 7) // 8
            if asks and (
                len(asks) >= MAX_PROBES
                or digests + n > MAX_DIGESTS
                or size + cost > MAX_REQUEST_BYTES
            ):
                out.append((ProbeRequest(bits, width, budget, tuple(a.probe for a in asks)), asks))
                asks, digests, size = [], 0, 0
            asks.append(ask)
            digests += n
            size += cost
        if asks:
            out.append((ProbeRequest(bits, width, budget, tuple(a.probe for a in asks)), asks))
    return out


def _probe_order(ask: _Ask) -> tuple[bool, str]:
    # Sorted by lower bound, so that delta-encoded bounds share long prefixes.
    lo = ask.probe.lo
    return (lo is not None, lo or "")


def reconcile_batched(
    local: MerkleSearchTree,
    remote_root: bytes | None,
    *,
    bits: int = DEFAULT_BITS,
    leaf_bits: int = DEFAULT_LEAF_BITS,
    first_budget: int = DEFAULT_FIRST_BUDGET,
    leaf_max: int = DEFAULT_LEAF_MAX,
    max_rounds: int = MAX_BATCHED_ROUNDS,
) -> Generator[SendProbes, Sequence[bytes], ReconcileResult]:
    """Find the paths where ``local`` and the remote tree differ, with ``mst-probe``.

    The first round sketches the top of the remote tree (``first_budget`` slots); then
    every round sends, for each region still in doubt, either a sketch probe (we hold
    many entries there) or our leaf digests (few); the remote answers the latter with its
    differing entries inline (:attr:`ReconcileResult.entries`). Rounds ≈ 2 + depth/…:
    three for a room of 100,000 entries with a 1% random divergence.

    The answers reflect the remote's tree as it is when it answers (no root pinning), and
    fingerprints are truncated to ``bits`` bits, so the result is only *probably* all the
    difference: after merging ``entries`` and the ``request{paths}`` answer for
    :attr:`ReconcileResult.to_request`, the driver compares its root with
    :attr:`ReconcileResult.remote_root` (or a fresh ``mst-root``) and falls back to
    :func:`reconcile` when they differ. ``complete`` is False when ``max_rounds`` ran out.
    Answers that do not decode raise :class:`CodecError`.
    """
    if not (BITS_MIN <= bits <= BITS_MAX and BITS_MIN <= leaf_bits <= BITS_MAX):
        raise ValueError(f"bits and leaf_bits must be {BITS_MIN}..{BITS_MAX}")
    batch = _Batch(local, bits, leaf_bits, leaf_max)
    rounds = nodes = nbytes = 0
    complete = True
    remote_at = remote_root
    if remote_root is None or remote_root == _EMPTY_ROOT:
        batch.push.update(local.paths())
        remote_at = None
    elif remote_root != local.root_hash:
        batch.pending.append(_Ask(Probe(None, False, None, MAX_DEPTH), leaf_bits, [], []))
    budget = first_budget
    while batch.pending:
        if rounds >= max_rounds:
            complete = False
            break
        pending, batch.pending = batch.pending, []
        cut = _requests(pending, bits, budget)
        answers = yield SendProbes(tuple(encode_request(req) for req, _ in cut))
        rounds += 1
        budget = MAX_SLOTS
        if len(answers) != len(cut):
            raise CodecError(f"bad postcard: {len(answers)} answers for {len(cut)} requests")
        for (request, asks), data in zip(cut, answers, strict=True):
            data = bytes(data)
            nbytes += len(data)
            answer = decode_answer(data, request)
            remote_at = answer.root
            for ask, result in zip(asks, answer.results, strict=True):
                nodes += batch.take(ask, result)
    return ReconcileResult(
        pull=tuple(sorted(batch.pull)),
        push=tuple(sorted(batch.push)),
        rounds=rounds,
        nodes_fetched=nodes,
        bytes_fetched=nbytes,
        complete=complete,
        entries=tuple(batch.entries[p] for p in sorted(batch.entries)),
        remote_root=remote_at,
    )


def run_local_batched(
    local: MerkleSearchTree, remote: MerkleSearchTree, **options: int
) -> ReconcileResult:
    """Drive :func:`reconcile_batched` against an in-memory ``remote`` (tests, benchmarks),
    answering as a server would (:func:`~roomsync.core.sketch.serve_probes`)."""
    flow = reconcile_batched(local, remote.root_hash, **options)
    try:
        step = next(flow)
        while True:
            step = flow.send([serve_probes(remote, data) for data in step.requests])
    except StopIteration as stop:
        result: ReconcileResult = stop.value
        return result
