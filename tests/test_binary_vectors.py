"""Golden vectors for binary ``pack`` frames (SPEC §2 cap ``binary``, ``docs/protocol.md``).

``vectors/binary.json`` is what other implementations (the TypeScript client) test
their binary frames against. The cases are defined here and the file is generated from
them with the code under test::

    python tests/test_binary_vectors.py     # rewrites vectors/binary.json

One frame is also written by hand below (tag, varint, flags, then the ``Pack`` bytes of
``postcard.json``), so the file does not only check the code against itself.
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from roomsync.core import messages as m
from roomsync.core.binpack import (
    MAX_INFLATED_BYTES,
    client_frame,
    deflate,
    parse_client_frame,
    parse_server_frame,
    server_frame,
)
from roomsync.core.codec import unpack_data
from roomsync.core.entries import Change
from roomsync.core.errors import MalformedEnvelope
from roomsync.core.postcard import encode_pack

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
BINARY_FILE = VECTORS / "binary.json"

TITLE = Change("/todos/42/title", 1_700_000_000_000, 0, "alice", b'"buy milk"')
DELETE = Change("/todos/41", 1_700_000_000_001, 2, "bob", None, 300)


#: 40 similar changes: deflate saves more than a tenth, so the server sends them deflated.
BLOCK = [
    Change(f"/todos/{i}/title", 1_700_000_000_000 + i, 0, "alice", b'"todo"', i + 1)
    for i in range(40)
]
ZIPPED = deflate(encode_pack(BLOCK)) or b""


def _json(c: Change) -> dict[str, Any]:
    return {
        "path": c.path,
        "ts": c.ts,
        "counter": c.counter,
        "actor": c.actor,
        "op": {"Delete": None} if c.value is None else {"Set": c.value.hex()},
        "seq": c.seq,
    }


def _with_seq(c: Change, seq: int) -> Change:
    return Change(c.path, c.ts, c.counter, c.actor, c.value, seq)


def build() -> dict[str, Any]:
    """Every case, computed by the code under test."""
    client = [
        ("client-one-set", "one Set change, as a client sends it", [TITLE]),
        ("client-empty", "an empty pack (nothing to apply; still acked)", []),
    ]
    server = [
        (
            "server-broadcast",
            "a broadcast: head = the last seq, not done",
            [_with_seq(TITLE, 7), DELETE],
            300,
            False,
        ),
        ("server-done-empty", "the done chunk of an empty catch-up at head 0", [], 0, True),
        (
            "server-done-head-128",
            "the last chunk of an answer: done, a head of two varint bytes",
            [_with_seq(TITLE, 5)],
            128,
            True,
        ),
        (
            "server-deflated",
            "a catch-up block, deflated (flags bit 1): the Pack bytes are raw DEFLATE",
            BLOCK,
            40,
            False,
        ),
    ]
    valid: list[dict[str, Any]] = []
    for name, doc, changes in client:
        frame = client_frame(changes)
        valid.append(
            {
                "name": name,
                "direction": "client",
                "doc": doc,
                "hex": frame.hex(),
                "changes": [_json(c) for c in changes],
                "json": m.PackMsg(data=encode_pack(changes)).to_wire(),
            }
        )
    for name, doc, changes, head, done in server:
        pack = encode_pack(changes)
        zipped = deflate(pack)
        if zipped is None:
            frame = server_frame(pack, head=head, done=done)
        else:
            frame = server_frame(zipped, head=head, done=done, deflated=True)
        valid.append(
            {
                "name": name,
                "direction": "server",
                "doc": doc,
                "hex": frame.hex(),
                "head": head,
                "done": done,
                "changes": [_json(c) for c in changes],
                "json": m.PackMsg(
                    data=encode_pack(changes), head=head, done=True if done else None
                ).to_wire(),
            }
        )
    invalid = [
        ("client-empty-frame", "client", "", "empty binary frame"),
        ("client-server-tag", "client", "020000" + "00", "unknown binary frame tag 0x02"),
        ("client-unknown-tag", "client", "7b2274797065223a2270616e6b227d", "tag 0x7b"),
        ("server-empty-frame", "server", "", "empty binary frame"),
        ("server-client-tag", "server", "0100", "unknown binary frame tag 0x01"),
        ("server-reserved-flag", "server", "02070400", "reserved flag bits 0x04"),
        ("server-bad-deflate", "server", "020703" + "ff" * 4, "bad deflate data"),
        ("server-deflate-truncated", "server", "020702" + ZIPPED[:-4].hex(), "truncated"),
        ("server-no-flags", "server", "0207", "ends before its flags byte"),
        ("server-truncated-head", "server", "0280", "truncated head"),
    ]
    return {
        "about": (
            "Binary pack frames (SPEC §2 cap binary): client 01|Pack, server "
            "02|head varint|flags u8 (bit 0 done)|Pack. Byte strings are lowercase hex; "
            "`json` is the JSON envelope the frame stands for. See vectors/README.md."
        ),
        "valid": valid,
        "invalid": [
            {
                "name": n,
                "direction": d,
                "hex": h,
                "error": {
                    "class": "MalformedEnvelope",
                    "code": "malformed-envelope",
                    "message_contains": e,
                },
            }
            for n, d, h, e in invalid
        ],
    }


BINARY: dict[str, Any] = (
    json.loads(BINARY_FILE.read_text(encoding="utf-8"))
    if BINARY_FILE.exists()
    else {"valid": [], "invalid": []}  # being generated; test_file_is_up_to_date fails
)


def test_file_is_up_to_date() -> None:
    assert build() == BINARY, (
        "vectors/binary.json is stale: run python tests/test_binary_vectors.py"
    )


@pytest.mark.parametrize("case", BINARY["valid"], ids=lambda c: c["name"])
def test_valid_frames(case: dict[str, Any]) -> None:
    frame = bytes.fromhex(case["hex"])
    envelope = case["json"]
    if case["direction"] == "client":
        pack = parse_client_frame(frame)
    else:
        msg = parse_server_frame(frame)
        assert (msg.head, bool(msg.done)) == (case["head"], case["done"])
        assert (envelope["head"], envelope.get("done", False)) == (case["head"], case["done"])
        assert isinstance(msg.data, bytes)
        pack = msg.data
    # The frame holds exactly the Pack of its JSON twin, and that Pack the case's changes.
    assert base64.b64decode(envelope["data"]) == pack
    assert [_json(c) for c in unpack_data(pack)] == case["changes"]


@pytest.mark.parametrize("case", BINARY["invalid"], ids=lambda c: c["name"])
def test_invalid_frames(case: dict[str, Any]) -> None:
    parse = parse_client_frame if case["direction"] == "client" else parse_server_frame
    with pytest.raises(MalformedEnvelope) as info:
        parse(bytes.fromhex(case["hex"]))
    assert case["error"]["message_contains"] in info.value.message
    assert str(info.value.code) == case["error"]["code"]


def test_one_frame_by_hand() -> None:
    """``server-done-head-128`` from the layout alone: 02, varint 128 = 80 01, flags 01,
    then the Pack of ``pack-one-set`` in ``postcard.json`` with seq Some(5)."""
    pack = bytes.fromhex(
        "01" "0f2f746f646f732f34322f7469746c65" "80d095ffbc31" "00" "05616c696365"
        "00" "0a22627579206d696c6b22" "0105"
    )  # fmt: skip
    (case,) = [c for c in BINARY["valid"] if c["name"] == "server-done-head-128"]
    assert case["hex"] == "02" + "8001" + "01" + pack.hex()
    # and the deflated case inflates, with zlib alone, to the Pack of its JSON twin.
    (zipped,) = [c for c in BINARY["valid"] if c["name"] == "server-deflated"]
    frame = bytes.fromhex(zipped["hex"])
    assert frame[:3] == bytes((0x02, 40, 0x02))
    inflated = zlib.decompress(frame[3:], -15)
    assert inflated == base64.b64decode(zipped["json"]["data"]) and len(frame) < len(inflated)


def test_inflating_is_bounded() -> None:
    """A deflated pack that inflates past MAX_INFLATED_BYTES is refused, not inflated."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = z.compress(bytes(MAX_INFLATED_BYTES + 1)) + z.flush()
    assert len(bomb) < MAX_INFLATED_BYTES // 500  # small on the wire, huge inflated
    with pytest.raises(MalformedEnvelope, match="inflates past"):
        parse_server_frame(server_frame(bomb, head=1, deflated=True))


if __name__ == "__main__":
    BINARY_FILE.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", "utf-8")
    print(f"wrote {BINARY_FILE}")
