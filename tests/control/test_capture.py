"""``room capture`` (SPEC §6): the pure record building and its redaction, the ring's
bound, and the command against a real server with real peers."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.server.capture import (
    KEPT_TYPES,
    Capture,
    as_dict,
    close_record,
    declared_changes,
    describe,
    envelope_record,
)
from roomsync.testing.server import ServerHandle, running_server, wait_until
from roomsync.testing.wsclient import closed, hello, recv_type

SECRET_VALUE = b"hunter2-value-of-a-change"
SECRET_PATH = "/private/diary-of-alice"
SECRET_STATE = "cursor-over-the-password-field"
SECRET_BLOB = b"blob-bytes-nobody-may-see" * 4
SECRET_TEXT = "message-that-quotes-the-input"
SECRET_URL = "https://blobs.example/u/1?sig=deadbeefsignature"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def secrets_of(*extra: str) -> list[str]:
    """Every secret string, also in the encodings a leak would have (base64, hex)."""
    raw = [SECRET_VALUE.decode(), SECRET_PATH, SECRET_STATE, SECRET_BLOB.decode(), SECRET_TEXT]
    return [
        *raw,
        b64(SECRET_VALUE),
        b64(SECRET_BLOB),
        SECRET_VALUE.hex(),
        "deadbeefsignature",
        "hunter2",
        *extra,
    ]


def assert_redacted(text: str, *extra: str) -> None:
    for secret in secrets_of(*extra):
        assert secret not in text, f"{secret!r} leaked into {text}"


# -- the pure record building -------------------------------------------------------------

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
PACK = pack_data([Change(SECRET_PATH, 1, 0, "alice", SECRET_VALUE)])

#: (dir, message, the metadata its record must carry), one per kind of envelope.
KINDS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "in",
        {"type": "hello", "v": 1, "token": TOKEN, "actor": "alice", "caps": ["read", "write"],
         "subscribe": [SECRET_PATH], "cursor": 7},
        {"v": 1, "actor": "alice", "caps": ["read", "write"], "paths": 1, "cursor": 7,
         "anonymous": False},
    ),
    (
        "out",
        {"type": "welcome", "v": 1, "session": "s-1", "peer": "p-1", "room": "doc",
         "caps": ["read"], "head": 3, "root": "ab" * 32, "heartbeat_ms": 15000,
         "limits": {"max_pack_bytes": 1}, "presence": [{"peer": "p-2", "state": SECRET_STATE}]},
        {"room": "doc", "caps": ["read"], "head": 3, "presence": 1},
    ),
    ("in", {"type": "pack", "data": PACK}, {"changes": 1}),
    ("out", {"type": "pack", "data": PACK, "head": 9, "done": True},
     {"changes": 1, "head": 9, "done": True}),
    (
        "out",
        {"type": "ack", "seqs": [4, None], "refused": [{"index": 1, "code": "invalid-path",
                                                        "message": SECRET_TEXT}]},
        {"seqs": 2, "refused": 1},
    ),
    ("in", {"type": "request", "since": 12}, {"since": 12}),
    ("in", {"type": "request", "paths": [SECRET_PATH, "/b"]}, {"paths": 2}),
    ("in", {"type": "subscribe", "paths": [SECRET_PATH]}, {"paths": 1}),
    ("in", {"type": "mst-root"}, {}),
    ("out", {"type": "mst-root", "root": "cd" * 32, "count": 5}, {"root": "cd" * 32, "count": 5}),
    ("in", {"type": "mst-get", "hashes": ["ab" * 32, "cd" * 32]}, {"hashes": 2}),
    ("out", {"type": "mst-nodes", "nodes": [{"hash": "ab" * 32, "data": b64(SECRET_VALUE)}]},
     {"nodes": 1}),
    ("in", {"type": "mst-probe", "data": b64(SECRET_PATH.encode())}, {}),
    ("out", {"type": "mst-sketch", "data": b64(SECRET_VALUE)}, {}),
    ("in", {"type": "presence", "state": {"where": SECRET_STATE}}, {}),
    ("in", {"type": "presence", "state": None}, {"cleared": True}),
    ("out", {"type": "presence", "peers": [{"peer": "p-1", "actor": "a", "state": SECRET_STATE}]},
     {"peers": 1}),
    ("out", {"type": "presence-leave", "peer": "p-1"}, {"left": "p-1"}),
    ("in", {"type": "blob-upload", "hash": digest(SECRET_BLOB), "size": 100,
            "data": b64(SECRET_BLOB)}, {"hash": digest(SECRET_BLOB), "size": 100}),
    ("in", {"type": "request-upload", "hash": digest(b"x"), "size": 1},
     {"hash": digest(b"x"), "size": 1}),
    ("out", {"type": "upload-url", "hash": digest(b"x"), "url": SECRET_URL, "expires": 99,
             "headers": {"x-amz-signature": "deadbeefsignature"}},
     {"hash": digest(b"x"), "expires": 99}),
    ("out", {"type": "upload-denied", "hash": digest(b"x"), "reason": "no-direct"},
     {"hash": digest(b"x"), "reason": "no-direct"}),
    ("out", {"type": "upload-rejected", "hash": digest(b"x"), "reason": "hash-mismatch"},
     {"hash": digest(b"x"), "reason": "hash-mismatch"}),
    ("out", {"type": "blob-uploaded", "hash": digest(b"x")}, {"hash": digest(b"x")}),
    ("out", {"type": "blob-available", "hash": digest(b"x"), "size": 1},
     {"hash": digest(b"x"), "size": 1}),
    ("in", {"type": "blob-request", "hash": digest(b"x")}, {"hash": digest(b"x")}),
    ("out", {"type": "blob", "hash": digest(SECRET_BLOB), "data": b64(SECRET_BLOB), "size": 100},
     {"hash": digest(SECRET_BLOB), "size": 100, "via": "inline"}),
    ("out", {"type": "blob", "hash": digest(b"x"), "url": SECRET_URL, "expires": 5, "size": 1},
     {"hash": digest(b"x"), "size": 1, "expires": 5, "via": "url"}),
    (
        "out",
        {"type": "error", "code": "resync-required", "message": SECRET_TEXT, "ref": "pack",
         "reason": "stream-budget", "retry_after_ms": 500},
        {"code": "resync-required", "ref": "pack", "reason": "stream-budget",
         "retry_after_ms": 500},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("dir", "msg", "meta"), KINDS, ids=lambda v: str(v)[:40])
def test_every_kind_keeps_its_metadata_and_nothing_else(
    dir: Any, msg: dict[str, Any], meta: dict[str, Any]
) -> None:
    rec = envelope_record(1234, dir, "p-9", msg, 321)
    assert rec is not None
    got = as_dict(rec)
    base = {"at": 1234, "dir": dir, "peer": "p-9", "type": msg["type"], "bytes": 321}
    assert got == {**base, **meta}
    assert_redacted(json.dumps(got), TOKEN)


def test_the_kinds_above_cover_every_kept_type() -> None:
    assert {msg["type"] for _, msg, _ in KINDS} == KEPT_TYPES


@pytest.mark.parametrize(
    "msg",
    [{"type": "ping"}, {"type": "pong"}, {"type": "tick", "n": 1}, {"type": 3}, {}],
)
def test_other_types_are_not_kept(msg: dict[str, Any]) -> None:
    assert describe(msg) is None
    assert envelope_record(1, "in", "p", msg, 10) is None
    capture = Capture(8, lambda: 1)
    capture.record_in("p", msg, 10)
    assert len(capture) == 0 and capture.snapshot(10) == []


def test_hostile_fields_are_left_out() -> None:
    """What a peer sends is checked before it is kept: wrong types and long strings are
    dropped, a pack whose data does not parse has no change count."""
    long = "x" * 500
    rec = envelope_record(
        1,
        "in",
        "p",
        {"type": "hello", "v": "1", "caps": "read", "actor": long, "cursor": True, "token": ""},
        10,
    )
    assert rec is not None and as_dict(rec) == {
        "at": 1, "dir": "in", "peer": "p", "type": "hello", "bytes": 10, "anonymous": True,
    }  # fmt: skip
    for data in ("%%%", 12, "", b64(b"\x80\x80")):
        rec = envelope_record(1, "in", "p", {"type": "pack", "data": data}, 10)
        assert rec is not None and "changes" not in as_dict(rec)
    rec = envelope_record(1, "in", "p", {"type": "blob-request", "hash": {"a": long}}, 10)
    assert rec is not None and "hash" not in as_dict(rec)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 20000])
def test_declared_changes_reads_the_count_from_the_first_characters(n: int) -> None:
    changes = [Change(f"/k{i}", 1, 0, "a", b"v") for i in range(n)]
    assert declared_changes(pack_data(changes)) == n


def test_close_record() -> None:
    assert as_dict(close_record(5, "out", "p-1", 4001, "resync-required", 4)) == {
        "at": 5, "dir": "out", "peer": "p-1", "type": "close", "bytes": 4, "code": 4001,
        "error": "resync-required",
    }  # fmt: skip
    assert as_dict(close_record(6, "in", "p-1", 1006)) == {
        "at": 6, "dir": "in", "peer": "p-1", "type": "close", "bytes": 0, "code": 1006,
    }  # fmt: skip


def test_the_ring_is_bounded_newest_last() -> None:
    clock = iter(range(1000))
    capture = Capture(5, lambda: next(clock))
    assert capture.snapshot(10) == []
    for i in range(12):
        capture.record_in("p", {"type": "request", "since": i}, 20)
    assert len(capture) == 5
    assert [r["since"] for r in capture.snapshot(100)] == [7, 8, 9, 10, 11]
    assert [r["since"] for r in capture.snapshot(2)] == [10, 11]
    assert [r["at"] for r in capture.snapshot(5)] == [7, 8, 9, 10, 11]
    capture.record_frame("*", "pack", 99, "changes", 3, "head", 12, "receivers", 40)
    capture.record_out("*", {"type": "blob-available", "hash": "h", "size": 1}, 50, receivers=7)
    capture.record_close("in", "p", 1000, size=2)
    assert capture.snapshot(3) == [
        {"at": 12, "dir": "out", "peer": "*", "type": "pack", "bytes": 99, "changes": 3,
         "head": 12, "receivers": 40},
        {"at": 13, "dir": "out", "peer": "*", "type": "blob-available", "bytes": 50,
         "hash": "h", "size": 1, "receivers": 7},
        {"at": 14, "dir": "in", "peer": "p", "type": "close", "bytes": 2, "code": 1000},
    ]  # fmt: skip
    assert capture.snapshot(0) == []


def test_size_zero_records_nothing_and_resize_keeps_the_newest() -> None:
    off = Capture(0, lambda: 1)
    off.record_in("p", {"type": "request", "since": 1}, 1)
    off.record_out("p", {"type": "ack", "seqs": [1]}, 1)
    off.record_frame("*", "pack", 1, "changes", 1)
    off.record_close("out", "p", 1000)
    assert len(off) == 0 and off.snapshot(10) == []
    capture = Capture(10, lambda: 1)
    for i in range(10):
        capture.record_in("p", {"type": "request", "since": i}, 1)
    capture.resize(3)
    assert [r["since"] for r in capture.snapshot(10)] == [7, 8, 9]
    capture.resize(0)
    capture.record_in("p", {"type": "request", "since": 99}, 1)
    assert capture.snapshot(10) == []


# -- against a real server ----------------------------------------------------------------


async def call(
    http: aiohttp.ClientSession,
    srv: ServerHandle,
    payload: dict[str, Any],
    *,
    caps: tuple[str, ...] = ("room:capture",),
    command: str = "capture",
) -> tuple[int, dict[str, Any], str]:
    token = srv.mint("*", caps, actor="ops")
    async with http.post(
        f"{srv.url}/v1/control/room/{command}",
        json=payload,
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        text = await resp.text()
        return resp.status, json.loads(text), text


def pick(envelopes: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [e for e in envelopes if all(e.get(k) == v for k, v in match.items())]


async def test_capture_shows_both_directions_and_never_the_secrets(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = srv.mint("cap", ("read", "write", "presence", "blob"), actor="alice")
    a, wa = await hello(http, srv.ws_url("cap"), token=token, actor="alice")
    b, wb = await hello(http, srv.ws_url("cap"), actor="bob")
    pa, pb = wa["peer"], wb["peer"]
    # a writes; b gets the broadcast, a its ack
    await a.send_json({"type": "pack", "data": PACK})
    await recv_type(a, "ack")
    await recv_type(b, "pack")
    # b writes two changes; a gets them
    await b.send_json(
        {"type": "pack", "data": pack_data([Change("/b1", 2, 0, "bob", b"1"),
                                            Change("/b2", 2, 0, "bob", b"2")])}
    )  # fmt: skip
    await recv_type(b, "ack")
    await recv_type(a, "pack")
    # b asks for a's secret path; a sends a presence state; a uploads a blob
    await b.send_json({"type": "request", "paths": [SECRET_PATH]})
    answer = await recv_type(b, "pack")
    assert answer["done"] is True
    await a.send_json({"type": "presence", "state": {"where": SECRET_STATE}})
    await recv_type(b, "presence")
    await a.send_json(
        {"type": "blob-upload", "hash": digest(SECRET_BLOB), "size": len(SECRET_BLOB),
         "data": b64(SECRET_BLOB)}
    )  # fmt: skip
    await recv_type(a, "blob-uploaded")
    await recv_type(b, "blob-available")
    # a refused pack: the error goes out, the session survives
    await a.send_json({"type": "pack", "data": "%%%"})
    assert (await recv_type(a, "error"))["code"] == "malformed-pack"

    status, body, text = await call(http, srv, {"room": "cap", "limit": 1000})
    assert status == 200, body
    assert_redacted(text, token, token.split(".")[2])
    env = body["result"]["envelopes"]
    assert all(set(e) >= {"at", "dir", "peer", "type", "bytes"} for e in env)
    assert [e["at"] for e in env] == sorted(e["at"] for e in env)

    (hello_a,) = pick(env, dir="in", peer=pa, type="hello")
    assert hello_a["anonymous"] is False and hello_a["actor"] == "alice"
    assert "token" not in hello_a
    (welcome_b,) = pick(env, dir="out", peer=pb, type="welcome")
    assert welcome_b["room"] == "cap" and welcome_b["head"] == 0
    # the empty catch-up each peer got at its hello, as a streamed answer
    assert pick(env, dir="out", peer=pb, type="pack", answer=True, changes=0, done=True)

    (pack_a, bad_pack) = pick(env, dir="in", peer=pa, type="pack")
    assert pack_a["changes"] == 1 and pack_a["bytes"] > len(PACK)
    assert "changes" not in bad_pack
    (broadcast_a,) = pick(env, dir="out", peer="*", type="pack", head=1)
    assert (broadcast_a["changes"], broadcast_a["receivers"]) == (1, 1)  # b; a is the author
    (broadcast_b,) = pick(env, dir="out", peer="*", type="pack", head=3)
    assert (broadcast_b["changes"], broadcast_b["receivers"]) == (2, 1)
    acks_a = pick(env, dir="out", peer=pa, type="ack")
    assert acks_a[0]["seqs"] == 1 and "refused" not in acks_a[0]
    assert acks_a[1] == {**acks_a[1], "seqs": 0, "refused": 1}  # the refused pack's ack
    (ack_b,) = pick(env, dir="out", peer=pb, type="ack")
    assert ack_b["seqs"] == 2

    (request_b,) = pick(env, dir="in", peer=pb, type="request")
    assert request_b["paths"] == 1
    assert pick(env, dir="out", peer=pb, type="pack", answer=True, changes=1, done=True)

    (presence_in,) = pick(env, dir="in", peer=pa, type="presence")
    assert "cleared" not in presence_in
    (presence_out,) = pick(env, dir="out", peer="*", type="presence")
    assert (presence_out["peers"], presence_out["receivers"]) == (1, 2)

    (upload,) = pick(env, dir="in", peer=pa, type="blob-upload")
    assert (upload["hash"], upload["size"]) == (digest(SECRET_BLOB), len(SECRET_BLOB))
    assert upload["bytes"] > len(b64(SECRET_BLOB))
    assert pick(env, dir="out", peer=pa, type="blob-uploaded", hash=digest(SECRET_BLOB))
    (available,) = pick(env, dir="out", peer="*", type="blob-available")
    assert available["receivers"] == 2

    (error,) = pick(env, dir="out", peer=pa, type="error")
    assert (error["code"], error["ref"]) == ("malformed-pack", "pack")

    # a leaves: its close is recorded while b keeps the room loaded
    await a.close()
    await wait_until(lambda: pa not in {p.id for p in srv.server.rooms.hosts["cap"].peers})
    status, body, text = await call(http, srv, {"room": "cap", "limit": 1000})
    (close,) = pick(body["result"]["envelopes"], type="close")
    assert close == {**close, "dir": "in", "peer": pa, "code": 1000}
    assert_redacted(text, token)
    await b.close()


async def test_limit_gives_the_newest_records_newest_last(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, srv.ws_url("lim"))
    for since in range(6):
        await ws.send_json({"type": "request", "since": since})
        assert (await recv_type(ws, "pack"))["done"] is True
    status, body, _ = await call(http, srv, {"room": "lim", "limit": 1000})
    everything = body["result"]["envelopes"]
    status, body, _ = await call(http, srv, {"room": "lim", "limit": 3})
    assert status == 200
    assert body["result"]["envelopes"] == everything[-3:]
    status, body, _ = await call(http, srv, {"room": "lim"})  # default limit 100
    assert len(body["result"]["envelopes"]) == len(everything) < 100
    assert [e["since"] for e in pick(everything, type="request")] == list(range(6))
    await ws.close()


async def test_the_server_closing_a_peer_is_recorded_with_its_error(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    keep, _ = await hello(http, srv.ws_url("shut"))
    bad, wbad = await hello(http, srv.ws_url("shut"))
    await bad.send_json({"type": "hello", "v": 1})  # a second hello: protocol error
    _, code = await closed(bad)
    status, body, _ = await call(http, srv, {"room": "shut", "limit": 3})
    assert status == 200, body
    error, close = body["result"]["envelopes"][-2:]
    assert error == {**error, "dir": "out", "peer": wbad["peer"], "type": "error"}
    assert close == {
        **close, "dir": "out", "peer": wbad["peer"], "type": "close", "code": code,
        "error": error["code"],
    }  # fmt: skip
    await keep.close()


async def test_forbidden_invalid_and_not_found(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await call(http, srv, {"room": "r"}, caps=("room:get",))
    assert status == 403 and body["reject"]["required"] == "room:capture"
    for limit in (0, 1001, "ten"):
        status, body, _ = await call(http, srv, {"room": "r", "limit": limit})
        assert status == 422 and body["reject"]["field"] == "limit", body
    status, body, _ = await call(http, srv, {"room": "no such room!"})
    assert status == 422 and body["reject"]["field"] == "room"
    status, body, _ = await call(http, srv, {"room": "nowhere"})
    assert status == 404 and body["reject"]["code"] == "room-unknown"
    # stored but not loaded here: no capture, and no error
    status, body, _ = await call(http, srv, {"room": "stored"}, caps=("*",), command="create")
    assert status == 200 and "stored" not in srv.server.rooms.hosts
    status, body, _ = await call(http, srv, {"room": "stored"})
    assert (status, body["result"]) == (200, {"envelopes": []})


async def test_capture_off_with_capture_envelopes_zero(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, policy__capture_envelopes=0) as srv:
        ws, _ = await hello(http, srv.ws_url("off"))
        await ws.send_json({"type": "pack", "data": PACK})
        await recv_type(ws, "ack")
        status, body, _ = await call(http, srv, {"room": "off"})
        assert (status, body["result"]) == (200, {"envelopes": []})
        await ws.close()
