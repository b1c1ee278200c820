"""Unit tests of roomsync.core.reconcile: the MST reconcile generator flow (SPEC §1)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Generator, Mapping

import pytest

from roomsync.core.entries import Change
from roomsync.core.errors import CodecError
from roomsync.core.mst import MerkleSearchTree, serve_nodes
from roomsync.core.postcard import encode_node, encode_pack
from roomsync.core.reconcile import (
    DEFAULT_MAX_HASHES,
    FetchNodes,
    ReconcileResult,
    reconcile,
    run_local,
)


def ch(path: str, ts: int = 1, value: bytes | None = b"v", actor: str = "a") -> Change:
    return Change(path, ts, 0, actor, value)


def base(n: int, prefix: str = "/p") -> list[Change]:
    return [ch(f"{prefix}/{i}", ts=i, value=f"value {i}".encode()) for i in range(n)]


Flow = Generator[FetchNodes, Mapping[bytes, bytes], ReconcileResult]


def drive(flow: Flow, answer: Callable[[FetchNodes], Mapping[bytes, bytes]]) -> ReconcileResult:
    try:
        fetch = next(flow)
        while True:
            fetch = flow.send(answer(fetch))
    except StopIteration as stop:
        result: ReconcileResult = stop.value
        return result


def test_equal_roots_need_no_round() -> None:
    a = MerkleSearchTree(base(500))
    b = MerkleSearchTree(base(500))
    result = run_local(a, b)
    assert result == ReconcileResult((), (), 0, 0, 0, True)


def test_both_empty() -> None:
    assert run_local(MerkleSearchTree(), MerkleSearchTree()).rounds == 0


@pytest.mark.parametrize("remote_root", [None, bytes(32)])
def test_empty_remote_means_push_everything(remote_root: bytes | None) -> None:
    local = MerkleSearchTree(base(40))
    result = drive(reconcile(local, remote_root), lambda f: pytest.fail("no fetch expected"))
    assert result.pull == ()
    assert result.push == tuple(local.paths())
    assert result.rounds == 0
    assert result.complete


def test_empty_local_pulls_everything() -> None:
    remote = MerkleSearchTree(base(3000))
    result = run_local(MerkleSearchTree(), remote)
    assert result.pull == tuple(remote.paths())
    assert result.push == ()
    assert result.complete
    assert result.nodes_fetched > result.rounds > 0
    assert result.bytes_fetched > 0


def test_kinds_of_difference() -> None:
    shared = base(2000)
    local = MerkleSearchTree(shared)
    remote = MerkleSearchTree(shared)
    remote.put(ch("/p/10", ts=99, value=b"remote"))  # differs: both lists
    local.put(ch("/p/20", ts=99, value=b"local"))  # differs: both lists
    remote.put(ch("/p/30", ts=99, value=None))  # remote deleted: local pushes it
    local.put(ch("/p/40", ts=99, value=None))  # local deleted: remote has it, pull
    remote.put(ch("/only/remote"))
    local.put(ch("/only/local"))
    result = run_local(local, remote)
    assert result.pull == ("/only/remote", "/p/10", "/p/20", "/p/40")
    assert result.push == ("/only/local", "/p/10", "/p/20", "/p/30")
    assert result.complete
    assert result.differing == (
        "/only/local",
        "/only/remote",
        "/p/10",
        "/p/20",
        "/p/30",
        "/p/40",
    )
    mirror = run_local(remote, local)
    assert mirror.pull == result.push
    assert mirror.push == result.pull


def test_rounds_follow_tree_depth_and_batches_are_bounded() -> None:
    remote = MerkleSearchTree(base(5000))
    local = MerkleSearchTree()
    sizes: list[int] = []

    def answer(fetch: FetchNodes) -> Mapping[bytes, bytes]:
        sizes.append(len(fetch.hashes))
        assert len(set(fetch.hashes)) == len(fetch.hashes)
        return dict(serve_nodes(remote, list(fetch.hashes), limit=len(fetch.hashes)))

    result = drive(reconcile(local, remote.root_hash, max_hashes=50), answer)
    assert max(sizes) <= 50
    assert result.rounds == len(sizes)
    assert result.complete
    assert len(result.pull) == 5000
    # with a big batch, one round per tree level
    unbatched = drive(
        reconcile(MerkleSearchTree(), remote.root_hash, max_hashes=10_000),
        lambda f: dict(serve_nodes(remote, list(f.hashes), limit=10_000)),
    )
    assert unbatched.rounds <= 6
    assert unbatched.nodes_fetched == result.nodes_fetched


def test_max_hashes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_hashes"):
        next(reconcile(MerkleSearchTree(), bytes(31) + b"\x01", max_hashes=0))


def test_default_batch_matches_the_server_limit() -> None:
    assert DEFAULT_MAX_HASHES == 256


def test_a_known_remote_root_is_expanded_without_traffic() -> None:
    # The remote is behind: its root is one we computed earlier and still retain.
    local = MerkleSearchTree(base(1000))
    remote = MerkleSearchTree(base(1000))
    assert local.root_hash == remote.root_hash
    local.put(ch("/p/5", ts=500, value=b"newer"))
    local.put(ch("/new"))
    result = run_local(local, remote)
    assert result.nodes_fetched == 0
    assert result.rounds == 0
    assert result.pull == ("/p/5",)
    assert result.push == ("/new", "/p/5")


def test_writes_on_the_remote_during_reconcile_are_tolerated() -> None:
    local = MerkleSearchTree(base(3000))
    remote = MerkleSearchTree(base(3000))
    remote.put(ch("/p/1", ts=77, value=b"x"))
    flow = reconcile(local, remote.root_hash)
    fetch = next(flow)
    # the remote keeps writing (and computing roots) between rounds
    for i in range(2):
        remote.put(ch(f"/p/{100 + i}", ts=88, value=b"y"))
        assert remote.root_hash is not None
    result = drive_from(flow, fetch, remote)
    assert result.complete
    assert result.pull == ("/p/1",)


def drive_from(flow: Flow, fetch: FetchNodes, remote: MerkleSearchTree) -> ReconcileResult:
    try:
        while True:
            fetch = flow.send(dict(serve_nodes(remote, list(fetch.hashes))))
    except StopIteration as stop:
        result: ReconcileResult = stop.value
        return result


def test_a_missing_node_ends_incomplete_with_what_was_found() -> None:
    local = MerkleSearchTree(base(3000))
    remote = MerkleSearchTree(base(3000))
    remote.put(ch("/p/1", ts=77, value=b"x"))
    remote.put(ch("/p/2999", ts=77, value=b"x"))
    rounds = 0

    def answer(fetch: FetchNodes) -> Mapping[bytes, bytes]:
        nonlocal rounds
        rounds += 1
        served = dict(serve_nodes(remote, list(fetch.hashes)))
        if rounds == 2:
            served.pop(fetch.hashes[0])  # the remote forgot one node
        return served

    result = drive(reconcile(local, remote.root_hash), answer)
    assert not result.complete
    assert result.rounds == 2
    assert result.nodes_fetched >= 2
    assert set(result.pull) <= {"/p/1", "/p/2999"}


def test_retention_exhausted_ends_incomplete() -> None:
    local = MerkleSearchTree(base(2000))
    remote = MerkleSearchTree(base(2000), retain_roots=0)
    remote.put(ch("/p/1", ts=77, value=b"x"))
    flow = reconcile(local, remote.root_hash)
    fetch = next(flow)
    for i in range(2000):
        remote.put(ch(f"/p/{i}", ts=99, value=b"z"))
    assert remote.root_hash is not None
    result = drive_from(flow, fetch, remote)
    assert not result.complete
    assert result.nodes_fetched == 0


def test_extra_nodes_in_a_reply_are_ignored() -> None:
    local = MerkleSearchTree(base(100))
    remote = MerkleSearchTree(base(100))
    remote.put(ch("/p/1", ts=9, value=b"x"))
    junk = b"\x00\x00"
    result = drive(
        reconcile(local, remote.root_hash),
        lambda f: {
            **dict(serve_nodes(remote, list(f.hashes))),
            hashlib.sha256(junk).digest(): junk,
        },
    )
    assert result.complete
    assert result.pull == ("/p/1",)


def test_a_node_that_does_not_match_its_hash_is_refused() -> None:
    remote = MerkleSearchTree(base(10))
    root = remote.root_hash
    assert root is not None
    data = remote.node(root)
    assert data is not None
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(CodecError, match="does not match its hash"):
        drive(reconcile(MerkleSearchTree(), root), lambda f: {root: tampered})


def _serve_one(data: bytes) -> ReconcileResult:
    h = hashlib.sha256(data).digest()
    return drive(reconcile(MerkleSearchTree(), h), lambda f: {h: data})


def test_an_undecodable_node_is_refused() -> None:
    with pytest.raises(CodecError, match="bad postcard"):
        _serve_one(b"\x02garbage")


def test_a_node_without_entries_is_refused() -> None:
    with pytest.raises(CodecError, match="no entries"):
        _serve_one(encode_node(None, []))


def test_a_node_with_entries_out_of_order_is_refused() -> None:
    leaf = bytes(32)
    with pytest.raises(CodecError, match="out of order"):
        _serve_one(encode_node(None, [("/b", leaf, None), ("/a", leaf, None)]))


def test_a_child_outside_its_range_is_refused() -> None:
    leaf = bytes(32)
    child = encode_node(None, [("/z", leaf, None)])  # must lie below "/m"
    parent = encode_node(hashlib.sha256(child).digest(), [("/m", leaf, None)])
    nodes = {hashlib.sha256(d).digest(): d for d in (child, parent)}
    flow = reconcile(MerkleSearchTree(), hashlib.sha256(parent).digest())
    with pytest.raises(CodecError, match="out of order"):
        drive(flow, lambda f: {h: nodes[h] for h in f.hashes})


def test_traffic_grows_with_the_difference_not_the_state() -> None:
    rnd = random.Random(2024)
    entries = [
        Change(
            f"/docs/{i % 997}/items/{i}",
            1_700_000_000_000 + i,
            i % 7,
            f"actor-{i % 13}",
            rnd.randbytes(24),
        )
        for i in range(100_000)
    ]
    local = MerkleSearchTree(entries)
    remote = MerkleSearchTree(entries)
    picked = rnd.sample(entries, 10)
    for k, c in enumerate(picked):
        if k < 4:
            remote.put(Change(c.path, c.ts + 1, 0, "r", b"changed"))
        elif k < 7:
            remote.remove(c.path)
        else:
            remote.put(Change(f"/fresh/{k}", 1, 0, "r", b"new"))
    full_state = len(encode_pack(entries))
    result = run_local(local, remote)
    assert result.complete
    assert len(result.pull) == 7
    assert len(result.push) == 7
    assert result.nodes_fetched < 200
    assert result.bytes_fetched < full_state * 0.02
    assert result.rounds <= 8


# -- the batched flow (mst-probe / mst-sketch) ---------------------------------------------------

from roomsync.core.reconcile import SendProbes, reconcile_batched, run_local_batched  # noqa: E402
from roomsync.core.sketch import serve_probes  # noqa: E402


def exchange(local: MerkleSearchTree, remote: MerkleSearchTree, result: ReconcileResult) -> None:
    """What a driver does with a batched result: inline entries, then the rest."""
    for c in result.entries:
        local.put(c)
    for p in result.to_request:
        c = remote.get(p)
        if c is None:
            local.remove(p)
        else:
            local.put(c)


def test_batched_equal_roots_need_no_round() -> None:
    result = run_local_batched(MerkleSearchTree(base(500)), MerkleSearchTree(base(500)))
    assert (result.pull, result.push, result.rounds, result.complete) == ((), (), 0, True)


def test_batched_empty_remote_means_push_everything() -> None:
    local = MerkleSearchTree(base(40))
    flow = reconcile_batched(local, None)
    with pytest.raises(StopIteration) as stop:
        next(flow)
    result: ReconcileResult = stop.value.value
    assert len(result.push) == 40 and result.rounds == 0 and result.remote_root is None


def test_batched_empty_local_pulls_everything_inline() -> None:
    remote = MerkleSearchTree(base(3000))
    local = MerkleSearchTree()
    result = run_local_batched(local, remote)
    assert result.complete and len(result.entries) == 3000 and result.push == ()
    exchange(local, remote, result)
    assert local.root_hash == remote.root_hash


def test_batched_disjoint_sets() -> None:
    local = MerkleSearchTree(base(300, "/a"))
    remote = MerkleSearchTree(base(300, "/b"))
    result = run_local_batched(local, remote)
    assert set(result.push) == set(local.paths()) and set(result.pull) == set(remote.paths())
    exchange(local, remote, result)
    assert local.root_hash == remote.root_hash


def test_batched_inserts_deletes_and_edits() -> None:
    remote = MerkleSearchTree(base(5000))
    local = MerkleSearchTree(base(5000))
    rnd = random.Random(7)
    for i in rnd.sample(range(5000), 60):
        local.put(ch(f"/p/{i}", ts=10_000, value=b"edit"))
    for i in rnd.sample(range(5000), 30):
        remote.remove(f"/p/{i}")
    for i in range(40):
        remote.put(ch(f"/p/new{i}", ts=3))
        local.put(ch(f"/q/{i}", ts=3))
    result = run_local_batched(local, remote)
    assert result.complete and result.rounds <= 5
    exchange(local, remote, result)
    assert local.root_hash == remote.root_hash


def test_batched_rounds_and_bytes_at_one_percent() -> None:
    """Scenario (d) in small: 1% of 20,000 values stale, key sets equal."""
    n = 20_000
    remote = MerkleSearchTree(base(n))
    local = MerkleSearchTree(base(n))
    for i in range(0, n, 100):
        remote.put(ch(f"/p/{i}", ts=10**6 + i, value=f"new {i}".encode()))
    sent = received = 0
    flow = reconcile_batched(local, remote.root_hash)
    try:
        step = next(flow)
        while True:
            sent += sum(len(r) for r in step.requests)
            answers = [serve_probes(remote, r) for r in step.requests]
            received += sum(len(a) for a in answers)
            step = flow.send(answers)
    except StopIteration as stop:
        result: ReconcileResult = stop.value
    assert result.complete and result.rounds <= 4 and len(result.entries) == n // 100
    assert result.to_request == ()
    # Traffic grows with the difference: under 100 bytes both ways per differing path,
    # entries included (the exact walk needs about 2,000 here).
    assert sent + received < 100 * (n // 100)
    exchange(local, remote, result)
    assert local.root_hash == remote.root_hash == result.remote_root


def test_batched_truncation_miss_is_caught_by_the_root_check() -> None:
    """With 4-bit slot fingerprints some differences hide; the root check says so and the
    exact walk finishes the job (what the SDK and the bench driver do)."""
    missed = 0
    for seed in range(20):
        remote = MerkleSearchTree(base(400))
        local = MerkleSearchTree(base(400))
        for i in random.Random(seed).sample(range(400), 40):
            remote.put(ch(f"/p/{i}", ts=10_000 + i, value=b"new"))
        result = run_local_batched(local, remote, bits=4, leaf_bits=4)
        exchange(local, remote, result)
        if local.root_hash != result.remote_root:
            missed += 1
            exact = run_local(local, remote)
            for p in exact.differing:
                c = remote.get(p)
                local.put(c) if c is not None else local.remove(p)
        assert local.root_hash == remote.root_hash
    assert missed > 0  # the check did have something to catch


def test_batched_refuses_bad_answers() -> None:
    local, remote = MerkleSearchTree(base(50)), MerkleSearchTree(base(60))
    flow = reconcile_batched(local, remote.root_hash)
    step = next(flow)
    assert isinstance(step, SendProbes)
    with pytest.raises(CodecError):
        flow.send([b"nonsense"])
    flow = reconcile_batched(local, remote.root_hash)
    next(flow)
    with pytest.raises(CodecError, match="answers for"):
        flow.send([])


def test_batched_refuses_inline_tombstones() -> None:
    from roomsync.core.postcard import varint_bytes
    from roomsync.core.sketch import decode_request

    local, remote = MerkleSearchTree(), MerkleSearchTree(base(5))
    flow = reconcile_batched(local, remote.root_hash)
    step = next(flow)  # round 1: the sketch of the room, answered truthfully
    step = flow.send([serve_probes(remote, r) for r in step.requests])
    (request,) = (decode_request(r) for r in step.requests)
    assert [p.digests for p in request.probes] == [()]  # round 2: one leaves probe
    pack = encode_pack([Change("/p/1", 9, 0, "a", None)])
    answer = (
        bytes(32)
        + bytes([1, 2, 0, 0, 0, 1, 0, 0])  # one Leaves: no unmatched, checksum, 1 entry
        + varint_bytes(len(pack))
        + pack
    )
    with pytest.raises(CodecError, match="tombstone"):
        flow.send([answer])


def test_batched_gives_up_after_max_rounds() -> None:
    remote = MerkleSearchTree(base(3000))
    result = run_local_batched(MerkleSearchTree(), remote, max_rounds=1)
    assert not result.complete and result.rounds == 1
