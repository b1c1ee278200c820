"""Golden vectors for postcard (SPEC §2) and the Merkle Search Tree (SPEC §1).

``vectors/postcard.json`` and ``vectors/mst.json`` (at the top of the repository) are what
other implementations (the TypeScript client, JS, Rust) test against;
``vectors/README.md`` explains them byte by byte. The cases are defined here and the files
are generated from them with the code under test::

    python tests/test_vectors.py     # rewrites vectors/postcard.json and vectors/mst.json

To keep the vectors from being only self-referential, one MST root and its levels are
also computed by hand below with hashlib and hand-written bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from roomsync.core.entries import Change
from roomsync.core.errors import CodecError
from roomsync.core.mst import MerkleSearchTree, build_root, leaf_hash, level
from roomsync.core.postcard import (
    Reader,
    Writer,
    decode_node,
    decode_pack,
    encode_leaf,
    encode_node,
    encode_pack,
    read_change,
    write_change,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
POSTCARD_FILE = VECTORS / "postcard.json"
MST_FILE = VECTORS / "mst.json"

U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

# -- JSON mapping of a Change ------------------------------------------------------------


def change_to_json(c: Change) -> dict[str, Any]:
    return {
        "path": c.path,
        "ts": c.ts,
        "counter": c.counter,
        "actor": c.actor,
        "op": {"Delete": None} if c.value is None else {"Set": c.value.hex()},
        "seq": c.seq,
    }


def change_from_json(d: dict[str, Any]) -> Change:
    op = d["op"]
    value = bytes.fromhex(op["Set"]) if "Set" in op else None
    return Change(d["path"], d["ts"], d["counter"], d["actor"], value, d["seq"])


def encode_change(c: Change) -> bytes:
    w = Writer()
    write_change(w, c)
    return w.getvalue()


def decode_change(data: bytes) -> Change:
    r = Reader(data)
    c = read_change(r)
    r.finish()
    return c


# An Op is checked inside this fixed Change: its bytes sit between the prefix and the
# trailing `00` (seq: None). The prefix is path "/o", ts 1, counter 0, actor "a".
OP_PREFIX = bytes.fromhex("022f6f01000161")


def encode_op(value: bytes | None) -> bytes:
    whole = encode_change(Change("/o", 1, 0, "a", value))
    assert whole.startswith(OP_PREFIX) and whole.endswith(b"\x00")
    return whole[len(OP_PREFIX) : -1]


# -- case definitions ---------------------------------------------------------------------

TITLE_CHANGE = Change("/todos/42/title", 1_700_000_000_000, 0, "alice", b'"buy milk"')

VALID_PACKS: list[tuple[str, str, list[Change]]] = [
    ("pack-empty", "Pack with no changes", []),
    ("pack-one-set", "one Set change as a client sends it (seq None)", [TITLE_CHANGE]),
    (
        "pack-set-and-delete",
        "a Set with seq Some(7) and a Delete with seq Some(300) (two-byte varint)",
        [
            TITLE_CHANGE.with_seq(7),
            Change("/todos/41", 1_700_000_000_001, 2, "bob", None, 300),
        ],
    ),
]

VALID_CHANGES: list[tuple[str, str, Change]] = [
    (
        "change-non-ascii-empty-value",
        "non-ASCII path, counter 300, empty value",
        Change("/notes/é", 5, 300, "zoë", b""),
    ),
    (
        "change-max-integers",
        "Delete with ts = u64::MAX, counter = u32::MAX, seq = Some(u64::MAX)",
        Change("/m", U64_MAX, U32_MAX, "", None, U64_MAX),
    ),
]

VALID_OPS: list[tuple[str, str, bytes | None]] = [
    ("op-set", "Set(b'hi')", b"hi"),
    ("op-set-empty", "Set(b'') (an empty value is not a delete)", b""),
    ("op-delete", "Delete", None),
]

_PATH15 = b"/todos/42/title".hex()
INVALID_PACKS: list[tuple[str, str, str]] = [
    ("empty-input", "", "bad postcard: truncated changes count at byte 0"),
    ("truncated", "010f" + _PATH15 + "80", "bad postcard: truncated ts at byte 18"),
    ("overlong-varint", "8000", "bad postcard: overlong changes count at byte 0"),
    (
        "overlong-u64",
        "01022f61" + "ff" * 10 + "01",
        "bad postcard: overlong ts at byte 4",
    ),
    (
        "u32-overflow",
        "01022f6101" + "8080808010" + "016101" + "0000",
        "bad postcard: counter overflows at byte 5",
    ),
    (
        "u64-overflow",
        "01022f61" + "ff" * 9 + "02" + "00016101" + "0000",
        "bad postcard: ts overflows at byte 4",
    ),
    ("trailing-bytes", "0000", "bad postcard: 1 trailing bytes at byte 1"),
    (
        "invalid-utf8",
        "01022fff0100016101" + "0000",
        "bad postcard: invalid UTF-8 in path at byte 1",
    ),
    (
        "unknown-op-tag",
        "01022f61010001610200",
        "bad postcard: unknown Op tag 2 at byte 8",
    ),
    (
        "bad-option-tag",
        "01022f61010001610102",
        "bad postcard: invalid option tag 2 for seq at byte 9",
    ),
    (
        "length-past-end",
        "0164" + "2f6162636465666768",
        "bad postcard: path length 100 past end of input at byte 2",
    ),
    (
        "count-past-end",
        "e807000000",
        "bad postcard: changes count 1000 past end of input at byte 2",
    ),
]

INVALID_NODES: list[tuple[str, str, str]] = [
    ("node-bad-left-tag", "02", "bad postcard: invalid option tag 2 for left at byte 0"),
    ("node-truncated-left", "01" + "00" * 31, "bad postcard: truncated left at byte 1"),
    (
        "node-bad-right-tag",
        "0001022f61" + "00" * 32 + "02",
        "bad postcard: invalid option tag 2 for right at byte 37",
    ),
]


def _c(path: str, i: int, value: bytes | None) -> Change:
    return Change(path, 1_000 + i, i % 3, "ab"[i % 2], value)


MST_SETS: list[tuple[str, str, list[Change]]] = [
    ("empty", "no live entry: the root is 64 zeros and there is no node", []),
    (
        "one-entry",
        "a single entry: one node, no children",
        [Change("/todos/1/title", 1_700_000_000_000, 0, "alice", b'"milk"')],
    ),
    (
        "empty-value-and-tombstone",
        "an empty value is live; the tombstone /flags/b is not in the tree",
        [_c("/flags/a", 0, b""), _c("/flags/b", 1, None), _c("/flags/c", 2, b"x")],
    ),
    (
        "non-ascii",
        "sorted by UTF-8 bytes: /\uff21 (ef bc a1) before /\U0001f600 (f0 9f 98 80), "
        "the reverse of UTF-16 order",
        [
            _c(p, i, f"v{i}".encode())
            for i, p in enumerate(["/z", "/é", "/日本/語", "/\uff21", "/\U0001f600", "/e"])
        ],
    ),
    (
        "two-levels-small",
        "/k/22 has level 1: root [/k/22] with left [/k/1] and right [/k/3]",
        [_c("/k/1", 0, b"1"), _c("/k/22", 1, b"22"), _c("/k/3", 2, b"3")],
    ),
    (
        "multi-level",
        "/k/0../k/119 plus /k/214 and /k/524 (level 2) and /k/9479 (level 3)",
        [_c(f"/k/{i}", i, f'{{"n":{i}}}'.encode()) for i in range(120)]
        + [_c(p, 120 + n, b"hi") for n, p in enumerate(["/k/214", "/k/524", "/k/9479"])],
    ),
]


# -- generation ---------------------------------------------------------------------------


def generate_postcard() -> dict[str, Any]:
    valid: list[dict[str, Any]] = []
    for name, doc, changes in VALID_PACKS:
        valid.append(
            {
                "name": name,
                "type": "Pack",
                "doc": doc,
                "value": {"changes": [change_to_json(c) for c in changes]},
                "hex": encode_pack(changes).hex(),
            }
        )
    for name, doc, change in VALID_CHANGES:
        valid.append(
            {
                "name": name,
                "type": "Change",
                "doc": doc,
                "value": change_to_json(change),
                "hex": encode_change(change).hex(),
            }
        )
    for name, doc, value in VALID_OPS:
        valid.append(
            {
                "name": name,
                "type": "Op",
                "doc": doc,
                "value": {"Delete": None} if value is None else {"Set": value.hex()},
                "hex": encode_op(value).hex(),
            }
        )
    valid.append(
        {
            "name": "leaf",
            "type": "Leaf",
            "doc": "the MST Leaf of the change of pack-one-set",
            "value": {
                k: v for k, v in change_to_json(TITLE_CHANGE).items() if k not in ("op", "seq")
            }
            | {"value": b'"buy milk"'.hex()},
            "hex": encode_leaf(TITLE_CHANGE).hex(),
        }
    )
    invalid = [{"name": n, "type": "Pack", "hex": h, "error": e} for n, h, e in INVALID_PACKS] + [
        {"name": n, "type": "Node", "hex": h, "error": e} for n, h, e in INVALID_NODES
    ]
    return {
        "about": "postcard golden vectors for roomsync (SPEC §2); see README.md. Byte "
        "values are hex. Op values: {'Set': hex} or {'Delete': null}.",
        "valid": valid,
        "invalid": invalid,
    }


def tree_nodes(tree: MerkleSearchTree) -> list[dict[str, str]]:
    """Every node of ``tree`` in pre-order (node, left subtree, entries' right subtrees)."""
    out: list[dict[str, str]] = []

    def visit(h: bytes | None) -> None:
        if h is None:
            return
        data = tree.node(h)
        assert data is not None
        out.append({"hash": h.hex(), "data": data.hex()})
        left, entries = decode_node(data)
        visit(left)
        for _, _, right in entries:
            visit(right)

    visit(tree.root_hash)
    return out


def generate_mst() -> dict[str, Any]:
    sets: list[dict[str, Any]] = []
    for name, doc, changes in MST_SETS:
        tree = MerkleSearchTree(changes)
        live = [c for c in changes if c.value is not None]
        sets.append(
            {
                "name": name,
                "doc": doc,
                "entries": [change_to_json(c) for c in changes],
                "levels": {c.path: level(c.path) for c in live},
                "leaves": {c.path: leaf_hash(c).hex() for c in live},
                "root": build_root(changes),
                "nodes": tree_nodes(tree),
            }
        )
    return {
        "about": "Merkle Search Tree vectors for roomsync (SPEC §1); see README.md. "
        "entries use the Change JSON of postcard.json (tombstones are ignored); nodes are "
        "postcard Node bytes in pre-order, hash = SHA-256(data).",
        "sets": sets,
    }


def write_vectors() -> None:
    for path, content in ((POSTCARD_FILE, generate_postcard()), (MST_FILE, generate_mst())):
        path.write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n", "utf-8")


if __name__ == "__main__":
    write_vectors()
    raise SystemExit(0)


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return loaded


POSTCARD = _load(POSTCARD_FILE)
MST = _load(MST_FILE)


# -- postcard -----------------------------------------------------------------------------


def test_files_match_the_case_definitions() -> None:
    assert generate_postcard() == POSTCARD
    assert generate_mst() == MST


@pytest.mark.parametrize("case", POSTCARD["valid"], ids=lambda c: c["name"])
def test_postcard_valid(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    value = case["value"]
    if case["type"] == "Pack":
        changes = [change_from_json(c) for c in value["changes"]]
        assert encode_pack(changes) == data
        assert decode_pack(data) == changes
    elif case["type"] == "Change":
        change = change_from_json(value)
        assert encode_change(change) == data
        assert decode_change(data) == change
    elif case["type"] == "Op":
        op_value = bytes.fromhex(value["Set"]) if "Set" in value else None
        assert encode_op(op_value) == data
        assert decode_change(OP_PREFIX + data + b"\x00").value == op_value
    else:
        assert case["type"] == "Leaf"
        leaf = Change(
            value["path"],
            value["ts"],
            value["counter"],
            value["actor"],
            bytes.fromhex(value["value"]),
        )
        assert encode_leaf(leaf) == data


@pytest.mark.parametrize("case", POSTCARD["invalid"], ids=lambda c: c["name"])
def test_postcard_invalid(case: dict[str, Any]) -> None:
    decode = decode_pack if case["type"] == "Pack" else decode_node
    with pytest.raises(CodecError) as info:
        decode(bytes.fromhex(case["hex"]))
    assert info.value.message == case["error"]
    assert str(info.value) == case["error"]


def test_postcard_vectors_cover_the_documented_failures() -> None:
    names = {c["name"] for c in POSTCARD["invalid"]}
    assert {
        "truncated",
        "overlong-varint",
        "u32-overflow",
        "trailing-bytes",
        "invalid-utf8",
        "unknown-op-tag",
        "bad-option-tag",
        "length-past-end",
    } <= names


# -- MST ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MST["sets"], ids=lambda c: c["name"])
def test_mst_vectors(case: dict[str, Any]) -> None:
    changes = [change_from_json(c) for c in case["entries"]]
    live = [c for c in changes if c.value is not None]
    assert build_root(changes) == case["root"]
    tree = MerkleSearchTree(changes)
    assert tree.root_hex == case["root"]
    assert tree.count == len(live)
    assert {c.path: level(c.path) for c in live} == case["levels"]
    assert {c.path: leaf_hash(c).hex() for c in live} == case["leaves"]
    nodes = {bytes.fromhex(n["hash"]): bytes.fromhex(n["data"]) for n in case["nodes"]}
    assert len(nodes) == len(case["nodes"])
    for h, data in nodes.items():
        assert hashlib.sha256(data).digest() == h
        assert tree.node(h) == data
        left, entries = decode_node(data)
        assert encode_node(left, entries) == data
    assert tree_nodes(tree) == case["nodes"]
    # Every live entry is in exactly one node.
    in_nodes = sorted(p for data in nodes.values() for p, _, _ in decode_node(data)[1])
    assert in_nodes == sorted(c.path for c in live)


def test_mst_vectors_cover_levels_and_unicode() -> None:
    levels = [lvl for case in MST["sets"] for lvl in case["levels"].values()]
    assert max(levels) >= 3
    assert any(ord(ch) > 0xFFFF for case in MST["sets"] for p in case["levels"] for ch in p)
    assert any(c["op"] == {"Set": ""} for case in MST["sets"] for c in case["entries"])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _text(s: str) -> bytes:
    raw = s.encode("utf-8")
    return _varint(len(raw)) + raw


def test_small_root_by_hand() -> None:
    """Recompute ``two-levels-small`` from SPEC §1 with hashlib only (no roomsync code)."""

    def sha(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    # level: leading zero hex digits of sha256(path)
    assert hashlib.sha256(b"/k/22").hexdigest()[0] == "0"
    assert hashlib.sha256(b"/k/22").hexdigest()[1] != "0"
    assert hashlib.sha256(b"/k/1").hexdigest()[0] != "0"
    assert hashlib.sha256(b"/k/3").hexdigest()[0] != "0"

    # Leaf { path, ts, counter, actor, value }: ts 1000/1001/1002 = e8 07 / e9 07 / ea 07.
    leaf_1 = sha(_text("/k/1") + bytes([0xE8, 0x07, 0x00]) + _text("a") + _text("1"))
    leaf_22 = sha(_text("/k/22") + bytes([0xE9, 0x07, 0x01]) + _text("b") + _text("22"))
    leaf_3 = sha(_text("/k/3") + bytes([0xEA, 0x07, 0x02]) + _text("a") + _text("3"))

    # Node { left: Option<[u8;32]>, entries: Vec<NodeEntry{path, leaf, right}> }
    none, some = b"\x00", b"\x01"
    node_1 = b"".join([none, b"\x01", _text("/k/1"), leaf_1, none])
    node_3 = b"".join([none, b"\x01", _text("/k/3"), leaf_3, none])
    root = b"".join([some, sha(node_1), b"\x01", _text("/k/22"), leaf_22, some, sha(node_3)])

    (case,) = [c for c in MST["sets"] if c["name"] == "two-levels-small"]
    assert case["root"] == sha(root).hex()
    assert [n["data"] for n in case["nodes"]] == [root.hex(), node_1.hex(), node_3.hex()]
    assert case["leaves"] == {"/k/1": leaf_1.hex(), "/k/22": leaf_22.hex(), "/k/3": leaf_3.hex()}


def test_empty_root_is_64_zeros() -> None:
    (case,) = [c for c in MST["sets"] if c["name"] == "empty"]
    assert case["root"] == "0" * 64
    assert case["nodes"] == []
