"""Golden vectors for the JSON envelopes of every message type (SPEC §2).

``vectors/envelopes.json`` is what other implementations (the TypeScript client first)
test their envelope parser and encoder against; ``vectors/README.md`` documents its
format. The cases are defined here and the file is generated from them with the code
under test::

    python tests/test_envelope_vectors.py     # rewrites vectors/envelopes.json

Each valid case is checked in both directions against :mod:`roomsync.core.codec`: the
envelope parses to the expected message, and the message's ``to_wire()`` gives the
envelope back. Each invalid case must raise the documented error class with its SPEC
error code and message.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from roomsync.core import messages as m
from roomsync.core.codec import (
    CLIENT_TYPES,
    SERVER_TYPES,
    decode_json,
    pack_data,
    parse_client,
    parse_server,
    unpack_data,
)
from roomsync.core.entries import Change
from roomsync.core.errors import CodecError, MalformedEnvelope, RoomsyncError, UnknownType
from roomsync.core.mst import MerkleSearchTree
from roomsync.core.postcard import decode_node
from roomsync.core.sketch import Probe, ProbeRequest, encode_request, serve_probes

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
ENVELOPES_FILE = VECTORS / "envelopes.json"

# -- JSON mapping of a Change (the same as in postcard.json) ------------------------------


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


# -- JSON mapping of a message --------------------------------------------------------------

#: Message class of each ``type`` string (``presence`` is one class for both directions).
CLASSES: dict[str, type[m.Message]] = {cls.type: cls for cls in m.ALL_TYPES}


def _plain(value: Any) -> Any:
    """``value`` as JSON data: tuples become lists, at any depth."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def message_fields(msg: m.Message) -> dict[str, Any]:
    """Every field of ``msg``, defaults included, as JSON data (absent optional: null)."""
    return {f.name: _plain(getattr(msg, f.name)) for f in dataclasses.fields(msg)}


def message_from_fields(type_: str, fields: dict[str, Any]) -> m.Message:
    """The message of class ``CLASSES[type_]`` with ``fields`` (lists back to tuples)."""
    cls = CLASSES[type_]
    hints = typing.get_type_hints(cls)
    kwargs = {
        name: tuple(value)
        if isinstance(value, list) and str(hints[name]).startswith("tuple")
        else value
        for name, value in fields.items()
    }
    return cls(**kwargs)


# -- shared data ----------------------------------------------------------------------------

NOW_MS = 1_700_000_000_000
TITLE = Change("/todos/42/title", NOW_MS, 0, "alice", b'"buy milk"')
DELETE = Change("/todos/41", NOW_MS + 1, 2, "bob", None, 300)
BLOB_DATA = b"hello blob"
BLOB_HASH = "sha256:" + hashlib.sha256(BLOB_DATA).hexdigest()
BLOB_B64 = base64.b64encode(BLOB_DATA).decode("ascii")
PEER_HASH = "sha256:" + "ab" * 32

# The `two-levels-small` tree of mst.json: a root node and two children.
_TREE = MerkleSearchTree(
    [
        Change("/k/1", 1000, 0, "a", b"1"),
        Change("/k/22", 1001, 1, "b", b"22"),
        Change("/k/3", 1002, 2, "a", b"3"),
    ]
)


def _node(hash_hex: str) -> dict[str, str]:
    data = _TREE.node(bytes.fromhex(hash_hex))
    assert data is not None
    return {"hash": hash_hex, "data": base64.b64encode(data).decode("ascii")}


def _children() -> list[str]:
    """The hashes of the root node's children, in order (hex)."""
    root = _TREE.node(_TREE.root_hash or b"")
    assert root is not None
    left, entries = decode_node(root)
    return [h.hex() for h in (left, *(right for _, _, right in entries)) if h is not None]


CHILDREN = _children()

# A batched-reconcile round on the same tree (vectors/sketch.json has the byte layout):
# sketch the whole room two levels deep.
_PROBE = encode_request(ProbeRequest(20, 6, 1024, (Probe(None, False, None, 2),)))
PROBE_B64 = base64.b64encode(_PROBE).decode("ascii")
SKETCH_B64 = base64.b64encode(serve_probes(_TREE, _PROBE)).decode("ascii")

# -- valid cases: (name, direction, doc, envelope, changes in `data` or None) ----------------

Valid = tuple[str, str, str, dict[str, Any], list[Change] | None]

VALID: list[Valid] = [
    # client -> server
    (
        "hello-minimal",
        "client",
        "the smallest hello: subscribe defaults to ['/'], every other field to null",
        {"type": "hello", "v": 1},
        None,
    ),
    (
        "hello-full",
        "client",
        "every hello field; catchup:false skips the catch-up (the client reconciles)",
        {
            "type": "hello",
            "v": 1,
            "token": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
            "actor": "ann#tab-2",
            "caps": ["read", "write", "presence"],
            "subscribe": ["/todos", "/users/ann"],
            "cursor": 42,
            "catchup": False,
        },
        None,
    ),
    (
        "hello-nulls-and-unknown-fields",
        "client",
        "null means absent; unknown fields are ignored (fields may be added, none renamed)",
        {"type": "hello", "v": 1, "token": None, "cursor": None, "x-future": {"a": 1}},
        None,
    ),
    (
        "hello-empty-subscribe",
        "client",
        "an empty subscribe list means the default ['/'], not 'nothing'",
        {"type": "hello", "v": 1, "subscribe": []},
        None,
    ),
    (
        "pack-client",
        "client",
        "a client pack: base64 of the postcard Pack of pack-one-set (seq None)",
        {"type": "pack", "data": pack_data([TITLE])},
        [TITLE],
    ),
    (
        "request-since",
        "client",
        "the changes after seq 42, answered with chunked pack frames",
        {"type": "request", "since": 42},
        None,
    ),
    (
        "request-paths",
        "client",
        "explicit paths (tombstones included in the answer)",
        {"type": "request", "paths": ["/todos/41", "/todos/42/title"]},
        None,
    ),
    (
        "subscribe",
        "client",
        "replace the subscription prefixes",
        {"type": "subscribe", "paths": ["/todos", "/users"]},
        None,
    ),
    (
        "mst-root-ask",
        "client",
        "no root: 'tell me yours'",
        {"type": "mst-root"},
        None,
    ),
    (
        "mst-root-client",
        "client",
        "the client's own root and count",
        {"type": "mst-root", "root": _TREE.root_hex, "count": 3},
        None,
    ),
    (
        "mst-get",
        "client",
        "fetch nodes by hash (64 hex digits each)",
        {"type": "mst-get", "hashes": CHILDREN},
        None,
    ),
    (
        "mst-probe",
        "client",
        "batched reconcile: data is base64 of a postcard ProbeRequest (vectors/sketch.json)",
        {"type": "mst-probe", "data": PROBE_B64},
        None,
    ),
    (
        "presence-set",
        "client",
        "any JSON value is a presence state",
        {"type": "presence", "state": {"cursor": [3, 4], "name": "Ann"}},
        None,
    ),
    (
        "presence-clear",
        "client",
        "state null: leave presence, stay connected; roomsync writes it without `state`",
        {"type": "presence", "state": None},
        None,
    ),
    (
        "blob-upload",
        "client",
        "inline upload: data is base64 of the blob bytes",
        {"type": "blob-upload", "hash": BLOB_HASH, "size": len(BLOB_DATA), "data": BLOB_B64},
        None,
    ),
    (
        "request-upload",
        "client",
        "ask for a direct-upload URL (cap blob-direct)",
        {"type": "request-upload", "hash": BLOB_HASH, "size": len(BLOB_DATA)},
        None,
    ),
    (
        "blob-uploaded-client",
        "client",
        "my direct upload finished: verify it",
        {"type": "blob-uploaded", "hash": BLOB_HASH},
        None,
    ),
    (
        "blob-request",
        "client",
        "fetch a blob of this room",
        {"type": "blob-request", "hash": BLOB_HASH},
        None,
    ),
    ("ping-client", "client", "application heartbeat", {"type": "ping"}, None),
    ("pong-client", "client", "answer to a server ping", {"type": "pong"}, None),
    # server -> client
    (
        "welcome",
        "server",
        "the handshake answer, with a presence snapshot",
        {
            "type": "welcome",
            "v": 1,
            "session": "s-3f9a",
            "peer": "p-7c21",
            "room": "doc-1",
            "caps": ["read", "write", "presence"],
            "head": 300,
            "root": _TREE.root_hex,
            "heartbeat_ms": 15000,
            "limits": {"max_frame_bytes": 4194304, "max_pack_bytes": 1048576},
            "presence": [{"peer": "p-0001", "actor": "bob", "state": {"cursor": [1, 2]}}],
            "node": "node-a",
            "actor": "ann#tab-2",
        },
        None,
    ),
    (
        "pack-broadcast",
        "server",
        "a broadcast: changes carry their seq, head is the highest seq of the batch",
        {"type": "pack", "data": pack_data([TITLE.with_seq(7)]), "head": 7},
        [TITLE.with_seq(7)],
    ),
    (
        "pack-catchup-done",
        "server",
        "the last chunk of a catch-up: done, head = the room head",
        {
            "type": "pack",
            "data": pack_data([TITLE.with_seq(7), DELETE]),
            "head": 300,
            "done": True,
        },
        [TITLE.with_seq(7), DELETE],
    ),
    (
        "pack-catchup-empty",
        "server",
        "an empty room's catch-up: one empty Pack (postcard 00)",
        {"type": "pack", "data": "AA==", "head": 0, "done": True},
        [],
    ),
    (
        "ack",
        "server",
        "one seq per change of the client's pack",
        {"type": "ack", "seqs": [8, 9]},
        None,
    ),
    (
        "ack-refused-and-superseded",
        "server",
        "change 1 lost LWW to the entry at seq 4; change 2 was refused (seq null)",
        {
            "type": "ack",
            "seqs": [10, 4, None],
            "refused": [{"index": 2, "code": "invalid-path", "message": "empty path segment"}],
            "superseded": [{"index": 1, "seq": 4}],
        },
        None,
    ),
    (
        "ack-pack-refused",
        "server",
        "a pack refused as a whole: index -1, no seqs",
        {
            "type": "ack",
            "seqs": [],
            "refused": [{"index": -1, "code": "malformed-pack", "message": "bad base64 in data"}],
        },
        None,
    ),
    (
        "mst-root-server",
        "server",
        "the server's root and live entry count",
        {"type": "mst-root", "root": _TREE.root_hex, "count": 3},
        None,
    ),
    (
        "mst-nodes",
        "server",
        "nodes of two-levels-small (mst.json): data is base64 of the postcard Node",
        {"type": "mst-nodes", "nodes": [_node(h) for h in CHILDREN]},
        None,
    ),
    (
        "mst-sketch",
        "server",
        "the answer to mst-probe: base64 of a postcard SketchAnswer (vectors/sketch.json)",
        {"type": "mst-sketch", "data": SKETCH_B64},
        None,
    ),
    (
        "presence-batch",
        "server",
        "the latest state of every peer that changed in one broadcast window",
        {
            "type": "presence",
            "peers": [
                {"peer": "p-0001", "actor": "bob", "state": {"cursor": [5, 6]}},
                {"peer": "p-0002", "actor": "cy", "state": "typing"},
            ],
        },
        None,
    ),
    (
        "presence-leave",
        "server",
        "a peer left, expired or cleared its presence",
        {"type": "presence-leave", "peer": "p-0002"},
        None,
    ),
    (
        "upload-url",
        "server",
        "a direct-upload grant: PUT the bytes to url with headers before expires (ms)",
        {
            "type": "upload-url",
            "hash": BLOB_HASH,
            "url": "http://127.0.0.1:8787/v1/uploads/u-51?hash=sha256%3Ab3&size=10&exp=1700000060000&sig=x",
            "expires": NOW_MS + 60_000,
            "headers": {"content-type": "application/octet-stream"},
            "method": "PUT",
        },
        None,
    ),
    (
        "upload-denied",
        "server",
        "no direct upload: fall back to inline blob-upload",
        {"type": "upload-denied", "hash": BLOB_HASH, "reason": "backend-cannot-grant"},
        None,
    ),
    (
        "blob-uploaded-server",
        "server",
        "ack of an upload (inline, or a verified direct one)",
        {"type": "blob-uploaded", "hash": BLOB_HASH},
        None,
    ),
    (
        "upload-rejected",
        "server",
        "verification failed: nothing stored",
        {"type": "upload-rejected", "hash": BLOB_HASH, "reason": "hash-mismatch"},
        None,
    ),
    (
        "blob-available",
        "server",
        "broadcast once a blob is stored and verified",
        {"type": "blob-available", "hash": BLOB_HASH, "size": len(BLOB_DATA)},
        None,
    ),
    (
        "blob-inline",
        "server",
        "a fetched blob, inline (base64)",
        {"type": "blob", "hash": BLOB_HASH, "data": BLOB_B64, "size": len(BLOB_DATA)},
        None,
    ),
    (
        "blob-url",
        "server",
        "a fetched blob as a download URL grant (cap blob-direct)",
        {
            "type": "blob",
            "hash": BLOB_HASH,
            "url": "http://127.0.0.1:8787/v1/blobs/" + BLOB_HASH + "?exp=1700000060000&sig=x",
            "expires": NOW_MS + 60_000,
            "size": len(BLOB_DATA),
        },
        None,
    ),
    (
        "tick",
        "server",
        "the room's logical tick counter changed (control family tick): now n, at the "
        "server's wall clock in ms",
        {"type": "tick", "n": 12, "at": NOW_MS},
        None,
    ),
    (
        "tick-reset",
        "server",
        "a counter set back to 0 (tick set {n: 0}); fields added later are ignored",
        {"type": "tick", "n": 0, "at": NOW_MS, "node": "node-1"},
        None,
    ),
    ("ping-server", "server", "application heartbeat", {"type": "ping"}, None),
    ("pong-server", "server", "answer to a client ping", {"type": "pong"}, None),
    (
        "error",
        "server",
        "code + message; fields other than code, message, retry_after_ms and ref go to extra",
        {"type": "error", "code": "expected-hello", "message": "first frame must be hello"},
        None,
    ),
    (
        "error-overload",
        "server",
        "overload with its retry hint (its own field, not in extra)",
        {
            "type": "error",
            "code": "overload",
            "message": "node is at max_connections",
            "retry_after_ms": 740,
        },
        None,
    ),
    (
        "error-with-ref",
        "server",
        "ref names the message type that caused the error (its own field); hash the blob (extra)",
        {
            "type": "error",
            "code": "not-found",
            "message": "blob not found in this room",
            "ref": "blob-request",
            "hash": PEER_HASH,
        },
        None,
    ),
]

# -- invalid cases: (name, direction, stage, input, error class, message) -------------------
# stage "json": the text frame is not JSON (input is the text, the message a prefix);
# stage "parse": parse_client/parse_server raises; stage "unpack": the envelope parses but
# decoding its `data` (base64, then postcard Pack) raises.

Invalid = tuple[str, str, str, Any, type[RoomsyncError], str]

_LONG_ACTOR = "a" * 257
_NOT_JSON = "frame is not valid JSON: "  # then the JSON parser's own words

INVALID: list[Invalid] = [
    ("not-json", "client", "json", '{"type": "hello", "v": 1', MalformedEnvelope, _NOT_JSON),
    ("empty-frame", "client", "json", "", MalformedEnvelope, _NOT_JSON),
    (
        "not-an-object",
        "client",
        "parse",
        ["hello"],
        MalformedEnvelope,
        "envelope must be a JSON object with a `type`",
    ),
    ("no-type", "client", "parse", {"v": 1}, MalformedEnvelope, "envelope has no string `type`"),
    (
        "type-not-a-string",
        "client",
        "parse",
        {"type": 3},
        MalformedEnvelope,
        "envelope has no string `type`",
    ),
    (
        "unknown-type",
        "client",
        "parse",
        {"type": "teleport"},
        UnknownType,
        "unknown message type 'teleport'",
    ),
    (
        "server-type-from-client",
        "client",
        "parse",
        {"type": "ack", "seqs": [1]},
        UnknownType,
        "unknown message type 'ack'",
    ),
    (
        "hello-without-v",
        "client",
        "parse",
        {"type": "hello"},
        MalformedEnvelope,
        "hello.v: expected an integer >= 0",
    ),
    (
        "hello-v-boolean",
        "client",
        "parse",
        {"type": "hello", "v": True},
        MalformedEnvelope,
        "hello.v: expected an integer >= 0",
    ),
    (
        "hello-actor-too-long",
        "client",
        "parse",
        {"type": "hello", "v": 1, "actor": _LONG_ACTOR},
        MalformedEnvelope,
        "hello.actor: expected a string <= 256",
    ),
    (
        "hello-caps-not-a-list",
        "client",
        "parse",
        {"type": "hello", "v": 1, "caps": "read"},
        MalformedEnvelope,
        "hello.caps: expected a list of at most 64 strings",
    ),
    (
        "hello-negative-cursor",
        "client",
        "parse",
        {"type": "hello", "v": 1, "cursor": -1},
        MalformedEnvelope,
        "hello.cursor: expected an integer >= 0",
    ),
    (
        "hello-catchup-not-a-boolean",
        "client",
        "parse",
        {"type": "hello", "v": 1, "catchup": "no"},
        MalformedEnvelope,
        "hello.catchup: expected a boolean",
    ),
    (
        "pack-data-not-a-string",
        "client",
        "parse",
        {"type": "pack", "data": [1, 2]},
        MalformedEnvelope,
        "pack.data: expected a string",
    ),
    (
        "request-since-and-paths",
        "client",
        "parse",
        {"type": "request", "since": 1, "paths": ["/a"]},
        MalformedEnvelope,
        "request: give exactly one of `since` or `paths`",
    ),
    (
        "request-neither",
        "client",
        "parse",
        {"type": "request"},
        MalformedEnvelope,
        "request: give exactly one of `since` or `paths`",
    ),
    (
        "subscribe-without-paths",
        "client",
        "parse",
        {"type": "subscribe"},
        MalformedEnvelope,
        "subscribe.paths: expected a list of at most 256 strings",
    ),
    (
        "mst-get-short-hash",
        "client",
        "parse",
        {"type": "mst-get", "hashes": ["abc"]},
        MalformedEnvelope,
        "mst-get.hashes: expected 64-hex-digit hashes",
    ),
    (
        "mst-get-not-hex",
        "client",
        "parse",
        {"type": "mst-get", "hashes": ["zz" * 32]},
        MalformedEnvelope,
        "mst-get.hashes: expected 64-hex-digit hashes",
    ),
    (
        "blob-upload-negative-size",
        "client",
        "parse",
        {"type": "blob-upload", "hash": BLOB_HASH, "size": -1, "data": BLOB_B64},
        MalformedEnvelope,
        "blob-upload.size: expected an integer >= 0",
    ),
    (
        "blob-request-hash-too-long",
        "client",
        "parse",
        {"type": "blob-request", "hash": "sha256:" + "0" * 80},
        MalformedEnvelope,
        "blob-request.hash: expected a string <= 80",
    ),
    (
        "pack-bad-base64-alphabet",
        "client",
        "unpack",
        {"type": "pack", "data": "not base64!"},
        CodecError,
        "bad base64 in data",
    ),
    (
        "pack-base64-without-padding",
        "client",
        "unpack",
        {"type": "pack", "data": "AA"},
        CodecError,
        "bad base64 in data",
    ),
    (
        "pack-base64-url-alphabet",
        "client",
        "unpack",
        {"type": "pack", "data": "-_8="},
        CodecError,
        "bad base64 in data",
    ),
    (
        "pack-bad-postcard",
        "client",
        "unpack",
        {"type": "pack", "data": base64.b64encode(bytes.fromhex("8000")).decode("ascii")},
        CodecError,
        "bad postcard: overlong changes count at byte 0",
    ),
    (
        "pack-trailing-bytes",
        "client",
        "unpack",
        {"type": "pack", "data": base64.b64encode(b"\x00\x00").decode("ascii")},
        CodecError,
        "bad postcard: 1 trailing bytes at byte 1",
    ),
    (
        "client-type-from-server",
        "server",
        "parse",
        {"type": "hello", "v": 1},
        UnknownType,
        "unknown message type 'hello'",
    ),
    (
        "welcome-without-root",
        "server",
        "parse",
        {
            "type": "welcome",
            "v": 1,
            "session": "s",
            "peer": "p",
            "room": "r",
            "caps": [],
            "head": 0,
            "heartbeat_ms": 15000,
            "limits": {},
            "presence": [],
        },
        MalformedEnvelope,
        "welcome.root: expected a string",
    ),
    (
        "ack-seqs-not-a-list",
        "server",
        "parse",
        {"type": "ack", "seqs": 7},
        MalformedEnvelope,
        "ack.seqs: expected a list",
    ),
    (
        "mst-root-server-without-root",
        "server",
        "parse",
        {"type": "mst-root", "count": 3},
        MalformedEnvelope,
        "mst-root.root: expected a string",
    ),
    (
        "mst-nodes-bad-node",
        "server",
        "parse",
        {"type": "mst-nodes", "nodes": [{"hash": CHILDREN[0]}]},
        MalformedEnvelope,
        "mst-nodes.nodes: expected [{hash, data}]",
    ),
    (
        "upload-url-headers-not-an-object",
        "server",
        "parse",
        {"type": "upload-url", "hash": BLOB_HASH, "url": "u", "expires": 1, "headers": []},
        MalformedEnvelope,
        "upload-url.headers: expected an object",
    ),
    (
        "error-without-message",
        "server",
        "parse",
        {"type": "error", "code": "internal"},
        MalformedEnvelope,
        "error.message: expected a string",
    ),
    (
        "tick-without-at",
        "server",
        "parse",
        {"type": "tick", "n": 3},
        MalformedEnvelope,
        "tick.at: expected an integer >= 0",
    ),
    (
        "tick-n-negative",
        "server",
        "parse",
        {"type": "tick", "n": -1, "at": NOW_MS},
        MalformedEnvelope,
        "tick.n: expected an integer >= 0",
    ),
    (
        "tick-n-not-an-integer",
        "server",
        "parse",
        {"type": "tick", "n": "12", "at": NOW_MS},
        MalformedEnvelope,
        "tick.n: expected an integer >= 0",
    ),
    (
        "tick-from-client",
        "client",
        "parse",
        {"type": "tick", "n": 1, "at": NOW_MS},
        UnknownType,
        "unknown message type 'tick'",
    ),
    (
        "pack-server-bad-postcard",
        "server",
        "unpack",
        {"type": "pack", "data": "AQ==", "head": 1},
        CodecError,
        "bad postcard: changes count 1 past end of input at byte 1",
    ),
]


# -- generation -----------------------------------------------------------------------------


def _parse(direction: str, obj: Any) -> m.Message:
    return parse_client(obj) if direction == "client" else parse_server(obj)


def generate_envelopes() -> dict[str, Any]:
    valid: list[dict[str, Any]] = []
    for name, direction, doc, envelope, changes in VALID:
        msg = _parse(direction, envelope)
        case: dict[str, Any] = {
            "name": name,
            "direction": direction,
            "type": envelope["type"],
            "doc": doc,
            "json": envelope,
            "message": message_fields(msg),
        }
        wire = msg.to_wire()
        if wire != envelope:
            case["wire"] = wire
        if changes is not None:
            case["changes"] = [change_to_json(c) for c in changes]
        valid.append(case)
    invalid: list[dict[str, Any]] = []
    for name, direction, stage, given, error, message in INVALID:
        text_key = "text" if stage == "json" else "json"
        error_json: dict[str, str] = {"class": error.__name__, "code": str(error.code)}
        error_json["message_prefix" if stage == "json" else "message"] = message
        invalid.append(
            {
                "name": name,
                "direction": direction,
                "stage": stage,
                text_key: given,
                "error": error_json,
            }
        )
    return {
        "about": "JSON envelope vectors for roomsync (SPEC §2); see README.md. valid: json "
        "parses to message (every field, defaults filled in) and message encodes to wire "
        "(or to json when wire is absent); invalid: input raises error at stage.",
        "valid": valid,
        "invalid": invalid,
    }


def write_vectors() -> None:
    text = json.dumps(generate_envelopes(), indent=1, ensure_ascii=False) + "\n"
    ENVELOPES_FILE.write_text(text, "utf-8")


if __name__ == "__main__":
    write_vectors()
    raise SystemExit(0)


ENVELOPES: dict[str, Any] = json.loads(ENVELOPES_FILE.read_text("utf-8"))


def test_file_matches_the_case_definitions() -> None:
    assert generate_envelopes() == ENVELOPES


@pytest.mark.parametrize("case", ENVELOPES["valid"], ids=lambda c: c["name"])
def test_valid_envelope_both_ways(case: dict[str, Any]) -> None:
    expected = message_from_fields(case["type"], case["message"])
    parsed = _parse(case["direction"], case["json"])
    assert parsed == expected
    assert message_fields(parsed) == case["message"]
    wire = case.get("wire", case["json"])
    assert expected.to_wire() == wire
    # What roomsync writes parses back to the same message.
    assert _parse(case["direction"], json.loads(json.dumps(wire))) == expected
    if "changes" in case:
        changes = [change_from_json(c) for c in case["changes"]]
        assert isinstance(parsed, m.PackMsg)
        assert unpack_data(parsed.data) == changes
        assert pack_data(changes) == parsed.data


@pytest.mark.parametrize("case", ENVELOPES["invalid"], ids=lambda c: c["name"])
def test_invalid_envelope_raises_its_documented_error(case: dict[str, Any]) -> None:
    error = case["error"]
    with pytest.raises(RoomsyncError) as info:
        if case["stage"] == "json":
            _parse(case["direction"], decode_json(case["text"]))
        elif case["stage"] == "parse":
            _parse(case["direction"], case["json"])
        else:
            assert case["stage"] == "unpack"
            msg = _parse(case["direction"], case["json"])
            assert isinstance(msg, m.PackMsg)
            unpack_data(msg.data)
    assert type(info.value).__name__ == error["class"]
    assert str(info.value.code) == error["code"]
    if "message" in error:
        assert info.value.message == error["message"]
    else:
        assert info.value.message.startswith(error["message_prefix"])


def test_every_message_type_has_a_valid_vector_in_each_direction() -> None:
    seen = {(c["direction"], c["type"]) for c in ENVELOPES["valid"]}
    assert {("client", t) for t in CLIENT_TYPES} | {("server", t) for t in SERVER_TYPES} == seen
    assert {t for _, t in seen} == set(CLASSES)


def test_case_names_are_unique() -> None:
    names = [c["name"] for c in ENVELOPES["valid"] + ENVELOPES["invalid"]]
    assert len(names) == len(set(names))


def test_invalid_vectors_cover_every_documented_error() -> None:
    cases = ENVELOPES["invalid"]
    classes = {c["error"]["class"] for c in cases}
    assert classes == {"MalformedEnvelope", "UnknownType", "CodecError"}
    messages = [c["error"].get("message", "") for c in cases]
    assert any(msg.startswith("bad base64") for msg in messages)
    assert any(msg.startswith("bad postcard: ") for msg in messages)
    assert {c["direction"] for c in cases} == {"client", "server"}
    assert {c["stage"] for c in cases} == {"json", "parse", "unpack"}
