"""Unit tests of roomsync.core.sketch: batched reconcile's wire format, fingerprints and the
server's bounded answer (``mst-probe`` → ``mst-sketch``)."""

from __future__ import annotations

import base64

import pytest

from roomsync.core import sketch as sk
from roomsync.core.entries import Change
from roomsync.core.errors import MalformedEnvelope, TooLarge
from roomsync.core.mst import MerkleSearchTree, Region, build_root
from roomsync.core.postcard import encode_pack
from roomsync.core.sketch import (
    Deferred,
    Leaves,
    Probe,
    ProbeRequest,
    Sketch,
    decode_answer,
    decode_request,
    encode_request,
    leaf_checksum,
    leaf_digest,
    region_fps,
    serve_probe_message,
    serve_probes,
    slot_fp32,
)


def ch(path: str, ts: int = 1, value: bytes = b"v", actor: str = "a") -> Change:
    return Change(path, ts, 0, actor, value)


def tree_of(n: int, prefix: str = "/p") -> MerkleSearchTree:
    return MerkleSearchTree(ch(f"{prefix}/{i}", i + 1, f"value {i}".encode()) for i in range(n))


def ask(tree: MerkleSearchTree, *probes: Probe, bits: int = 20, leaf_bits: int = 8,
        budget: int = sk.MAX_SLOTS) -> tuple[ProbeRequest, sk.SketchAnswer]:  # fmt: skip
    req = ProbeRequest(bits, leaf_bits, budget, probes)
    return req, decode_answer(serve_probes(tree, encode_request(req)), req)


def digests_of(tree: MerkleSearchTree, lo: str | None, lo_incl: bool, hi: str | None,
               bits: int) -> tuple[int, ...]:  # fmt: skip
    found = tree.region_entries(lo, lo_incl, hi, 10**9)
    assert found is not None
    return tuple(leaf_digest(leaf, bits) for _, leaf, _ in found)


# -- encoding --------------------------------------------------------------------------------


def test_request_round_trips_with_delta_encoded_bounds() -> None:
    req = ProbeRequest(
        20,
        6,
        1024,
        (
            Probe(None, False, "/todos/10", 3),
            Probe("/todos/10", True, "/todos/19", 0, (1, 2, 63, 0)),
            Probe("/todos/19", False, None, 1),
            Probe("/é/ü", True, "/é/üx", 0, ()),
        ),
    )
    data = encode_request(req)
    assert decode_request(data) == req
    # "/todos/19" shares "/todos/1" with the bound before it: only "9" is written.
    assert b"/todos/19" not in data


@pytest.mark.parametrize("bits", [4, 5, 8, 13, 20, 31, 32])
def test_packed_ints_round_trip(bits: int) -> None:
    values = [(i * 2654435761) % (1 << bits) for i in range(37)]
    packed = sk._pack_ints(values, bits)
    assert len(packed) == (37 * bits + 7) // 8
    assert sk._unpack_ints(packed, 37, bits) == values


def test_encode_refuses_bad_widths() -> None:
    with pytest.raises(ValueError):
        encode_request(ProbeRequest(3, 8, 1, ()))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", MalformedEnvelope),
        (bytes([20]), MalformedEnvelope),
        (bytes([33, 8, 0, 0]), MalformedEnvelope),
        (bytes([20, 8, 0, 1, 0x02, 1]), MalformedEnvelope),  # lo inclusive without lo
        (bytes([20, 8, 0, 1, 0x00, 9]), MalformedEnvelope),  # depth 9
        (bytes([20, 8, 0, 1, 0x01, 0, 2, 0xFF, 0xFE, 1]), MalformedEnvelope),  # not UTF-8
        (bytes([20, 8, 0, 1, 0x08, 5, 0]), MalformedEnvelope),  # digests past the end
        (bytes([20, 8, 0, 1, 0x01, 0, 0x81, 0x08]) + b"/" * 1025 + bytes([1]), MalformedEnvelope),
        (bytes([20, 8, 0, 1, 0x08, 0x81, 0x80, 0x04]) + bytes(65_537), TooLarge),
    ],
)
def test_decode_refuses_with_the_session_surviving(data: bytes, error: type) -> None:
    with pytest.raises(error) as info:
        decode_request(data)
    assert info.value.close is None


def test_serve_probe_message_refuses_bad_base64() -> None:
    with pytest.raises(MalformedEnvelope, match="bad base64") as info:
        serve_probe_message(tree_of(3), "not base64!")
    assert info.value.close is None


def test_serve_probe_message_is_base64_both_ways() -> None:
    tree = tree_of(30)
    data = encode_request(ProbeRequest(20, 8, 64, (Probe(None, False, None, 1),)))
    answer = serve_probe_message(tree, base64.b64encode(data).decode())
    assert base64.b64decode(answer) == serve_probes(tree, data)


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        bytes(32) + bytes([2]),  # two results for one probe
        bytes(32) + bytes([1, 9]),  # unknown tag
        bytes(32) + bytes([1, 0, 0]),  # no entries field
        bytes(32) + bytes([1, 0, 2, 0]),  # reserved entries flag
        bytes(32) + bytes([1, 0, 0, 2, 5, 0]),  # an entries pack of nonsense
    ],
)
def test_decode_answer_refuses_what_does_not_fit(answer: bytes) -> None:
    req = ProbeRequest(20, 8, 1, (Probe(None, False, None, 1),))
    with pytest.raises(sk.CodecError):
        decode_answer(answer, req)


def test_decode_answer_refuses_a_leaves_result_for_a_sketch_probe() -> None:
    req = ProbeRequest(20, 8, 1, (Probe(None, False, None, 1),))
    with pytest.raises(sk.CodecError, match="result tag 2"):
        decode_answer(bytes(32) + bytes([1, 2, 0, 0, 0, 0, 0, 0, 0]), req)


def test_decode_answer_refuses_a_deflate_bomb() -> None:
    import zlib

    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = z.compress(bytes(sk.MAX_INFLATED_BYTES + 10)) + z.flush()
    req = ProbeRequest(20, 8, 1, (Probe(None, False, None, 1),))
    w = bytes(32) + bytes([1, 0, 1]) + sk._varint(len(bomb)) + bomb
    with pytest.raises(sk.CodecError, match="inflate"):
        decode_answer(w, req)


# -- fingerprints and regions ----------------------------------------------------------------


def test_slot_fingerprints_name_bounds_and_content() -> None:
    a, b = tree_of(200), tree_of(200)

    def fps(t: MerkleSearchTree) -> list[int]:
        return region_fps(t.region(None, False, None), 32)

    assert fps(a) == fps(b)
    b.put(ch("/p/150", 999, b"changed"))
    fa, fb = fps(a), fps(b)
    assert len(fa) == len(fb) and sum(x != y for x, y in zip(fa, fb, strict=True)) == 1
    # The same content under other bounds is another fingerprint.
    bounds = [(None, False, None), ("/a", False, None), ("/a", True, None), (None, False, "/a")]
    empty = [Region(lo, incl, None, None, hi) for lo, incl, hi in bounds]
    assert len({slot_fp32(r) for r in empty}) == 4


def test_the_slots_of_a_region_partition_it() -> None:
    tree = tree_of(500)
    region = tree.region("/p/1", True, "/p/3")
    found = tree.region_entries("/p/1", True, "/p/3", 10**9)
    assert found is not None
    parts: list[str] = []
    for s in range(region.slot_count):
        sub = region.slot_region(s)
        got = tree.region_entries(sub.lo, sub.lo_incl, sub.hi, 10**9)
        assert got is not None
        parts += [p for p, _, _ in got]
        assert sub.child_hash() == tree.range_hash(sub.lo, sub.hi)
    assert parts == [p for p, _, _ in found]


def test_region_node_is_the_canonical_node_of_the_range() -> None:
    tree = tree_of(300)
    ranges = [(None, None), ("/p/12", "/p/200"), ("/p/5", None), (None, "/p/77"), ("/p/3", "/p/3")]
    for lo, hi in ranges:
        region = tree.region(lo, False, hi)
        assert region.child_hash() == tree.range_hash(lo, hi)


def test_region_entries_stops_at_the_limit() -> None:
    tree = tree_of(1000)
    assert tree.region_entries(None, False, None, 999) is None
    got = tree.region_entries(None, False, None, 1000)
    assert got is not None and len(got) == 1000
    assert tree.region_entries("/p/5", True, "/p/5", 10) == []


def test_leaf_checksum_is_order_free() -> None:
    leaves = [bytes([i]) * 32 for i in range(10)]
    assert leaf_checksum(leaves) == leaf_checksum(list(reversed(leaves)))
    assert leaf_checksum([]) == 0


# -- the server's answers --------------------------------------------------------------------


def test_sketch_probe_goes_as_deep_as_the_budget() -> None:
    tree = tree_of(3000)
    _, answer = ask(tree, Probe(None, False, None, 8), budget=1000)
    (result,) = answer.results
    assert isinstance(result, Sketch)
    total = depth = 0
    level = [result.node]
    while level:
        depth += 1
        total += sum(len(n.fps) for n in level)
        level = [c for n in level for c in (n.children or ()) if c is not None]
    assert total <= 1000 and depth >= 2
    assert answer.root == tree.root_hash


def test_leaves_probe_sends_the_differing_entries() -> None:
    server, client = tree_of(100), tree_of(100)
    client.put(ch("/p/42", 5000, b"stale?"))
    client.put(ch("/p/9999", 5000, b"mine"))
    server.remove("/p/44")
    d = digests_of(client, "/p/4", True, "/p/5", 8)
    _, answer = ask(server, Probe("/p/4", True, "/p/5", 0, d))
    (result,) = answer.results
    assert isinstance(result, Leaves)
    found = client.region_entries("/p/4", True, "/p/5", 10**9)
    assert found is not None
    paths = [p for p, _, _ in found]
    assert sorted(paths[i] for i in result.unmatched) == ["/p/42", "/p/44"]
    assert [c.path for c in result.entries] == ["/p/42"]
    assert result.entries[0].value == b"value 42"
    theirs = server.region_entries("/p/4", True, "/p/5", 10**9)
    assert theirs is not None and result.checksum == leaf_checksum([lf for _, lf, _ in theirs])


def test_a_large_region_gets_a_named_sketch_instead_of_entries() -> None:
    server = tree_of(2000)
    _, answer = ask(server, Probe(None, False, None, 0, ()))
    (result,) = answer.results
    assert isinstance(result, Sketch) and result.names is not None
    root = server.region(None, False, None)
    assert root.node is not None
    assert list(result.names) == root.node.keys
    assert len(result.node.fps) == len(result.names) + 1


def test_probes_past_the_slot_budget_are_deferred() -> None:
    tree = tree_of(3000)
    probes = [
        Probe(None, False, None, 1),
        Probe("/p/1", False, "/p/2", 1),
        Probe("/p/3", False, None, 1),
    ]
    _, answer = ask(tree, *probes, budget=3)
    assert isinstance(answer.results[0], Sketch)  # the first is always answered
    assert all(isinstance(r, Deferred) for r in answer.results[1:])


def test_a_first_node_past_the_hard_cap_is_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sk, "MAX_SLOTS", 2)
    tree = tree_of(500)
    with pytest.raises(TooLarge) as info:
        ask(tree, Probe(None, False, None, 1))
    assert info.value.close is None


def test_inline_entries_are_bounded_then_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sk, "MAX_INLINE_BYTES", 200)
    server = MerkleSearchTree(ch(f"/b/{i}", 1, b"x" * 60) for i in range(10))
    _, answer = ask(server, Probe(None, False, None, 0, ()))
    (result,) = answer.results
    assert isinstance(result, Leaves)
    assert 1 <= len(result.entries) < 10
    assert sorted([c.path for c in result.entries] + list(result.more)) == sorted(
        f"/b/{i}" for i in range(10)
    )


def test_leaves_probes_past_the_scan_budget_are_deferred(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sk, "MAX_SCAN", 10)
    server = tree_of(200)
    probes = [Probe(f"/p/{i}", True, f"/p/{i + 1}", 0, ()) for i in range(1, 5)]
    _, answer = ask(server, *probes)
    assert isinstance(answer.results[0], Leaves)
    assert isinstance(answer.results[-1], Deferred)


def test_entries_deflate_when_it_pays() -> None:
    server = MerkleSearchTree(ch(f"/d/{i}", 1, b"y" * 200) for i in range(100))
    req = ProbeRequest(20, 8, 1, (Probe(None, False, None, 0, ()),))
    data = serve_probes(server, encode_request(req))
    assert len(data) < len(encode_pack(list(server._entries.values()))) // 2
    (result,) = decode_answer(data, req).results
    assert isinstance(result, Leaves) and len(result.entries) == 100
    assert build_root(result.entries) == server.root_hex


def test_empty_tree_answers() -> None:
    empty = MerkleSearchTree()
    _, answer = ask(empty, Probe(None, False, None, 8), Probe("/a", True, None, 0, (1, 2)))
    assert answer.root is None
    sketch, leaves = answer.results
    assert isinstance(sketch, Sketch) and sketch.node.fps == (
        slot_fp32(Region(None, False, None, None, None)) >> 12,
    )
    assert isinstance(leaves, Leaves) and leaves.unmatched == (0, 1) and leaves.entries == ()
