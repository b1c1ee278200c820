"""Binary packs over real sockets (SPEC §2 cap ``binary``, ``docs/protocol.md``).

A session that asks for ``binary`` by name gets its packs (broadcasts, catch-up and
answers) as binary frames and may send them so; every other session, and every other
message, stays JSON. JSON and binary peers (raw and SDK) in one room converge.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp

from roomsync.client import connect as sdk_connect
from roomsync.core.binpack import client_frame, parse_server_frame
from roomsync.core.codec import pack_data, unpack_data
from roomsync.core.entries import Change
from roomsync.testing.rawws import OP_BINARY, OP_CONTINUATION, OP_TEXT, RawWebSocket
from roomsync.testing.rawws import client_frame as ws_frame
from roomsync.testing.server import ServerHandle, wait_until
from roomsync.testing.wsclient import closed, recv

ROOM = "bin-room"
TIMEOUT = 10.0


def url(srv: ServerHandle, room: str = ROOM) -> str:
    return srv.url.replace("http", "ws", 1) + f"/ws/{room}"


def change(path: str, ts: int, actor: str, value: bytes | None = b"v") -> Change:
    return Change(path, ts, 0, actor, value)


async def binary_peer(
    http: aiohttp.ClientSession,
    srv: ServerHandle,
    stats: dict[str, int] | None = None,
    **fields: Any,
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any], list[Change]]:
    """A raw peer that asks for ``binary``: (ws, welcome, its catch-up's changes); the
    catch-up's frame bytes and deflated frames are counted in ``stats``."""
    stats = {} if stats is None else stats
    ws = await http.ws_connect(url(srv))
    await ws.send_json({"type": "hello", "v": 1, "caps": ["*", "binary"], **fields})
    welcome = await recv(ws)
    assert welcome["type"] == "welcome" and "binary" in welcome["caps"], welcome
    got: list[Change] = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.BINARY, f"catch-up frame not binary: {msg}"
        stats["bytes"] = stats.get("bytes", 0) + len(msg.data)
        stats["deflated"] = stats.get("deflated", 0) + (msg.data[2] >> 1 & 1)
        pack = parse_server_frame(msg.data)
        got += unpack_data(pack.data)
        if pack.done:
            assert pack.head == welcome["head"]
            return ws, welcome, got


async def next_binary(ws: aiohttp.ClientWebSocketResponse) -> Any:
    """Skip text frames (acks, presence) until a binary pack arrives."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        if msg.type is aiohttp.WSMsgType.BINARY:
            return parse_server_frame(msg.data)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        assert json.loads(msg.data)["type"] != "pack", "a JSON pack to a binary session"


async def next_json(ws: aiohttp.ClientWebSocketResponse, type_: str) -> dict[str, Any]:
    while True:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.TEXT, f"a binary frame to a JSON session: {msg}"
        obj: dict[str, Any] = json.loads(msg.data)
        if obj["type"] == type_:
            return obj


async def test_binary_and_json_peers_share_a_room(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    b, _, _ = await binary_peer(http, srv)
    j = await http.ws_connect(url(srv))
    await j.send_json({"type": "hello", "v": 1})  # no caps: never binary
    welcome = await recv(j)
    assert "binary" not in welcome["caps"]
    await next_json(j, "pack")  # the (empty) catch-up's done chunk
    # The binary peer writes in a binary frame; its ack is JSON; the JSON peer gets JSON.
    await b.send_bytes(client_frame([change("/a", 1, "bee", b'"from binary"')]))
    ack = await next_json(b, "ack")
    assert ack["seqs"] == [1]
    seen = await next_json(j, "pack")
    assert [c.value for c in unpack_data(seen["data"])] == [b'"from binary"']
    assert seen["head"] == 1
    # The JSON peer writes JSON; the binary peer gets it as a binary frame.
    await j.send_json({"type": "pack", "data": pack_data([change("/b", 2, "jay")])})
    assert (await next_json(j, "ack"))["seqs"] == [2]
    frame = await next_binary(b)
    assert frame.head == 2 and not frame.done
    assert [(c.path, c.seq) for c in unpack_data(frame.data)] == [("/b", 2)]
    # A JSON pack from a binary session is accepted too.
    await b.send_json({"type": "pack", "data": pack_data([change("/c", 3, "bee")])})
    assert (await next_json(b, "ack"))["seqs"] == [3]
    # request{since} is answered in binary frames to the binary peer.
    await b.send_json({"type": "request", "since": 0})
    answered: list[Change] = []
    while True:
        frame = await next_binary(b)
        answered += unpack_data(frame.data)
        if frame.done:
            break
    assert [c.path for c in answered] == ["/a", "/b", "/c"] and frame.head == 3
    await b.close()
    await j.close()


async def test_full_catchup_in_binary_matches_json_with_fewer_bytes(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    writer = await http.ws_connect(url(srv))
    await writer.send_json({"type": "hello", "v": 1})
    await next_json(writer, "pack")
    for k in range(5):
        batch = [change(f"/k/{k}/{i}", 10 + i, "w", b'"%d"' % i) for i in range(400)]
        await writer.send_json({"type": "pack", "data": pack_data(batch)})
        await next_json(writer, "ack")
    stats: dict[str, int] = {}
    _, welcome, binary_state = await binary_peer(http, srv, stats)
    assert welcome["head"] == 2000 and len(binary_state) == 2000
    # These values are alike: the cached blocks go out deflated (flags bit 1).
    assert stats["deflated"] >= 1
    json_state: list[Change] = []
    json_bytes = 0
    j = await http.ws_connect(url(srv))
    await j.send_json({"type": "hello", "v": 1})
    await recv(j)
    while True:
        msg = await asyncio.wait_for(j.receive(), TIMEOUT)
        json_bytes += len(msg.data)
        pack = json.loads(msg.data)
        json_state += unpack_data(pack["data"])
        if pack.get("done"):
            break
    assert binary_state == json_state  # same changes, same seqs, same order
    # and the binary frames are the Pack bytes themselves: no base64, no JSON.
    raw = len(base64.b64decode(pack_data(json_state)))
    assert raw < json_bytes * 0.8
    assert stats["bytes"] < raw * 0.9
    await j.close()
    await writer.close()


async def test_bad_binary_frames_get_the_json_errors(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    # Without the cap: a broken envelope, 1002.
    j = await http.ws_connect(url(srv))
    await j.send_json({"type": "hello", "v": 1, "caps": ["read", "write"]})
    await recv(j)
    await j.send_bytes(client_frame([change("/x", 1, "j")]))
    seen, code = await closed(j)
    errors = [m for m in seen if m["type"] == "error"]
    assert code == 1002 and errors[-1]["code"] == "malformed-envelope"
    assert "'binary' cap" in errors[-1]["message"]
    # With it: bad postcard is a refused pack, the session survives and writes next.
    b, _, _ = await binary_peer(http, srv)
    await b.send_bytes(b"\x01\x01\x05/x")
    error = await next_json(b, "error")
    assert error["code"] == "malformed-pack" and error["message"].startswith("bad postcard: ")
    ack = await next_json(b, "ack")
    assert ack["seqs"] == [] and ack["refused"][0]["index"] == -1
    await b.send_bytes(client_frame([change("/ok", 1, "b")]))
    assert (await next_json(b, "ack"))["seqs"] == [1]
    # An unknown tag is a broken envelope: 1002.
    await b.send_bytes(b"\x09hello")
    seen, code = await closed(b)
    assert code == 1002
    assert [m["code"] for m in seen if m["type"] == "error"][-1] == "malformed-envelope"
    # A frame over max_frame_bytes (1 MiB here): too-large and 1009, "split the pack".
    big, _, _ = await binary_peer(http, srv)
    await big.send_bytes(client_frame([change("/big", 2, "b", b"x" * (2 << 20))]))
    seen, code = await closed(big)
    assert code == 1009 and [m["code"] for m in seen if m["type"] == "error"] == ["too-large"]


async def test_a_fragmented_binary_pack_is_one_message(srv: ServerHandle) -> None:
    ws = await RawWebSocket.open(srv.host, srv.port, f"/ws/{ROOM}")
    try:
        await ws.send_json({"type": "hello", "v": 1, "caps": ["read", "write", "binary"]})
        assert (await ws.read_frame()).json()["type"] == "welcome"
        done = await ws.read_frame()
        assert done.opcode == OP_BINARY and parse_server_frame(done.payload).done
        payload = client_frame([change("/frag", 1, "r", b'"in two frames"')])
        ws.send_raw(ws_frame(payload[:7], OP_BINARY, fin=False))
        ws.send_raw(ws_frame(payload[7:], OP_CONTINUATION))
        ack = await ws.read_frame()
        assert ack.opcode == OP_TEXT and ack.json()["seqs"] == [1]
    finally:
        await ws.close()


async def test_sdk_clients_binary_and_json_converge(srv: ServerHandle) -> None:
    fast = await sdk_connect(srv.url, ROOM, actor="bin")
    slow = await sdk_connect(srv.url, ROOM, actor="txt", binary=False)
    try:
        assert "binary" in fast.caps and "binary" not in slow.caps
        for i in range(200):
            fast.set(f"/n/{i % 50}", b"%d" % i)
            slow.set(f"/n/{(i * 7) % 50}", b"s%d" % i)
            if i % 40 == 0:
                fast.delete(f"/n/{i % 50}")
                await asyncio.sleep(0)
        await fast.flush(TIMEOUT)
        await slow.flush(TIMEOUT)
        root = await fast.server_root()
        await wait_until(lambda: fast.root == slow.root == root, timeout=TIMEOUT)
        # A late binary joiner catches up to the same state.
        late = await sdk_connect(srv.url, ROOM, actor="late")
        try:
            await late.wait_synced(TIMEOUT)
            assert late.root == root and dict(late.items()) == dict(fast.items())
        finally:
            await late.close()
        metrics = srv.server.metrics.registry
        assert (
            metrics.get_sample_value(
                "roomsync_messages_total", {"direction": "in", "type": "binary"}
            )
            or 0
        ) == 0
    finally:
        await fast.close()
        await slow.close()
