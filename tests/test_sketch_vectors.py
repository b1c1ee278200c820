"""Golden vectors for batched reconcile (``mst-probe``/``mst-sketch``, ``docs/protocol.md``).

``vectors/sketch.json`` is what other implementations test their batched reconcile
against: slot fingerprints, ``ProbeRequest`` bodies, the server's ``SketchAnswer`` for a
small tree, and requests the server refuses. The cases are defined here and the file is
generated from them with the code under test::

    python tests/test_sketch_vectors.py     # rewrites vectors/sketch.json

One slot fingerprint and one request are also written by hand below, so the file does not
only check the code against itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from roomsync.core.entries import Change
from roomsync.core.errors import RoomsyncError
from roomsync.core.mst import MerkleSearchTree, Region
from roomsync.core.sketch import (
    Deferred,
    Leaves,
    Probe,
    ProbeRequest,
    Sketch,
    SketchNode,
    decode_answer,
    decode_request,
    encode_request,
    leaf_digest,
    serve_probes,
    slot_fp32,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
SKETCH_FILE = VECTORS / "sketch.json"

#: The tree of the answers: 40 entries (some of a higher level), as mst.json spells them.
ENTRIES = [Change(f"/k/{i}", 1000 + i, 0, "a", f"v{i}".encode()) for i in range(40)]
TREE = MerkleSearchTree(ENTRIES)
LEAVES = {c.path: TREE.leaf(c.path) for c in ENTRIES}


def _digests(paths: list[str], bits: int) -> tuple[int, ...]:
    out = []
    for p in paths:
        leaf = LEAVES[p]
        assert leaf is not None
        out.append(leaf_digest(leaf, bits))
    return tuple(out)


def _region_paths(lo: str | None, lo_incl: bool, hi: str | None) -> list[str]:
    found = TREE.region_entries(lo, lo_incl, hi, 1000)
    assert found is not None
    return [p for p, _, _ in found]


_STALE = [p for p in _region_paths("/k/2", True, "/k/3")]
_STALE_DIGESTS = list(_digests(_STALE, 6))
_STALE_DIGESTS[1] ^= 0x3F  # the prober holds another version of its second entry

REQUESTS: list[tuple[str, str, ProbeRequest]] = [
    (
        "sketch-everything",
        "round 1: the whole room, as deep as 1,024 slots go",
        ProbeRequest(20, 6, 1024, (Probe(None, False, None, 8),)),
    ),
    (
        "sketch-two-regions",
        "two regions, one including its lower bound (bounds share a prefix: delta-encoded)",
        ProbeRequest(20, 6, 16384, (Probe(None, False, "/k/2", 1), Probe("/k/2", True, "/k/3", 2))),
    ),
    (
        "leaves-one-stale",
        "leaves probe: 6-bit digests of the prober's entries of [/k/2, /k/3); one differs",
        ProbeRequest(20, 6, 16384, (Probe("/k/2", True, "/k/3", 0, tuple(_STALE_DIGESTS)),)),
    ),
    (
        "leaves-empty-prober",
        "a prober with nothing in [/k/1, /k/2) sends no digests: the server sends it all",
        ProbeRequest(20, 32, 16384, (Probe("/k/1", True, "/k/2", 0, ()),)),
    ),
    (
        "budget-defers",
        "a budget of 4 slots: the first probe is answered, the second one deferred",
        ProbeRequest(16, 8, 4, (Probe(None, False, None, 1), Probe("/k/1", False, "/k/2", 1))),
    ),
]

INVALID: list[tuple[str, str, str, str, str]] = [
    # (name, doc, hex, error class, message prefix)
    ("empty", "no bytes at all", "", "MalformedEnvelope", "mst-probe.data: bad postcard"),
    ("bits-too-small", "bits 3", "03060000", "MalformedEnvelope", "mst-probe.data: widths"),
    (
        "reserved-flag",
        "probe flags 0x10 (reserved)",
        "140600" + "01" + "10" + "01",
        "MalformedEnvelope",
        "mst-probe.data: bad postcard: probe flags",
    ),
    (
        "depth-zero",
        "a sketch probe of depth 0",
        "140600" + "01" + "00" + "00",
        "MalformedEnvelope",
        "mst-probe.data: depth 0",
    ),
    (
        "bound-shares-too-much",
        "the first bound claims 3 bytes of a previous bound that is empty",
        "140600" + "01" + "01" + "03" + "00" + "01",
        "MalformedEnvelope",
        "mst-probe.data: bad postcard: bound shares",
    ),
    (
        "trailing-bytes",
        "a valid request followed by one more byte",
        "140600" + "01" + "00" + "01" + "ff",
        "MalformedEnvelope",
        "mst-probe.data: bad postcard: 1 trailing bytes",
    ),
    (
        "too-many-probes",
        "4,097 probes",
        "140600" + "8120" + "0001" * 4097,
        "TooLarge",
        "mst-probe: 4097 probes",
    ),
]


def _probe_json(p: Probe) -> dict[str, Any]:
    out: dict[str, Any] = {"lo": p.lo, "lo_incl": p.lo_incl, "hi": p.hi}
    if p.digests is None:
        out["depth"] = p.depth
    else:
        out["digests"] = list(p.digests)
    return out


def _node_json(node: SketchNode) -> dict[str, Any]:
    out: dict[str, Any] = {"fps": list(node.fps)}
    if node.children is not None:
        out["children"] = [None if c is None else _node_json(c) for c in node.children]
    return out


def _change_json(c: Change) -> dict[str, Any]:
    return {"path": c.path, "ts": c.ts, "counter": c.counter, "actor": c.actor,
            "value": None if c.value is None else c.value.hex(), "seq": c.seq}  # fmt: skip


def _result_json(result: object) -> dict[str, Any]:
    if isinstance(result, Deferred):
        return {"deferred": True}
    if isinstance(result, Sketch):
        out: dict[str, Any] = {"sketch": _node_json(result.node)}
        if result.names is not None:
            out["names"] = list(result.names)
        return out
    assert isinstance(result, Leaves)
    return {
        "unmatched": list(result.unmatched),
        "checksum": result.checksum,
        "entries": [_change_json(c) for c in result.entries],
        "more": list(result.more),
    }


_SLOTS: list[tuple[str, str, Region]] = [
    ("whole-empty", "the unbounded region of an empty tree", Region(None, False, None, None, None)),
    (
        "bounded-with-leaf",
        "[/k/1, /k/2) of the tree: the leaf of /k/1 and the node strictly between",
        TREE.region("/k/1", True, "/k/2"),
    ),
    ("open-top", "(None, /k/2) of the tree", TREE.region(None, False, "/k/2")),
]


def build() -> dict[str, Any]:
    requests = []
    for name, doc, req in REQUESTS:
        data = encode_request(req)
        answer = serve_probes(TREE, data)
        decoded = decode_answer(answer, req)
        requests.append(
            {
                "name": name,
                "doc": doc,
                "request": {
                    "bits": req.bits,
                    "leaf_bits": req.leaf_bits,
                    "budget": req.budget,
                    "probes": [_probe_json(p) for p in req.probes],
                },
                "request_hex": data.hex(),
                "answer_hex": answer.hex(),
                "answer": {
                    "root": None if decoded.root is None else decoded.root.hex(),
                    "results": [_result_json(r) for r in decoded.results],
                },
            }
        )
    return {
        "about": "batched MST reconcile: mst-probe / mst-sketch bodies (docs/protocol.md, "
        "'Batched reconcile'); answers are served from the tree of `entries`",
        "entries": [_change_json(c) for c in ENTRIES],
        "root": TREE.root_hex,
        "slots": [
            {
                "name": name,
                "doc": doc,
                "lo": r.lo,
                "lo_incl": r.lo_incl,
                "leaf": None if r.lower is None else r.lower.hex(),
                "child": None if r.child_hash() is None else r.child_hash().hex(),  # type: ignore[union-attr]
                "hi": r.hi,
                "fp32": slot_fp32(r),
            }
            for name, doc, r in _SLOTS
        ],
        "requests": requests,
        "invalid": [
            {"name": n, "doc": d, "hex": h, "error": {"class": c, "message_prefix": p}}
            for n, d, h, c, p in INVALID
        ],
    }


def write() -> None:
    SKETCH_FILE.write_text(json.dumps(build(), indent=1) + "\n")


FILE = json.loads(SKETCH_FILE.read_text()) if SKETCH_FILE.exists() else {"requests": []}


def test_file_is_up_to_date() -> None:
    assert json.loads(SKETCH_FILE.read_text()) == build()


@pytest.mark.parametrize("case", FILE["requests"], ids=lambda c: c["name"])
def test_requests_and_answers(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["request_hex"])
    req = decode_request(data)
    assert encode_request(req) == data
    assert req.bits == case["request"]["bits"] and req.budget == case["request"]["budget"]
    assert serve_probes(TREE, data).hex() == case["answer_hex"]


@pytest.mark.parametrize("case", FILE.get("invalid", []), ids=lambda c: c["name"])
def test_invalid_requests(case: dict[str, Any]) -> None:
    with pytest.raises(RoomsyncError) as info:
        serve_probes(TREE, bytes.fromhex(case["hex"]))
    assert type(info.value).__name__ == case["error"]["class"]
    assert info.value.message.startswith(case["error"]["message_prefix"])
    assert info.value.close is None  # the session survives


def test_one_fingerprint_and_one_request_by_hand() -> None:
    # SlotDigest{lo: None, lo_incl: false, leaf: None, child: None, hi: None}
    digest = hashlib.sha256(bytes([0, 0, 0, 0, 0])).digest()
    assert slot_fp32(Region(None, False, None, None, None)) == int.from_bytes(digest[:4], "big")
    # bits 20, leaf_bits 6, budget 1024 (varint 80 08), 1 probe: flags 0 (sketch), depth 8
    assert encode_request(ProbeRequest(20, 6, 1024, (Probe(None, False, None, 8),))) == bytes(
        [20, 6, 0x80, 0x08, 1, 0, 8]
    )
    # lo "/k/2" (shared 0), hi "/k/3" (shares "/k/" with it: 3 bytes, suffix "3")
    assert encode_request(ProbeRequest(20, 6, 1, (Probe("/k/2", True, "/k/3", 1),))) == (
        bytes([20, 6, 1, 1, 0x07, 0, 4]) + b"/k/2" + bytes([3, 1]) + b"3" + bytes([1])
    )


if __name__ == "__main__":
    write()
