"""The shared listener (server/listener.py): upgrades on /ws/ go to picows, the rest to
aiohttp; and what our frame handling adds on top of picows (fragments, the inbox)."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import struct
from pathlib import Path

import aiohttp

from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.testing.rawws import RawWebSocket
from roomsync.testing.server import ServerHandle, running_server, wait_until
from roomsync.testing.wsclient import hello, recv


def _frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 §5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((first, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, 0x80 | 127)) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class _RawClient:
    """A WebSocket client on a bare socket, to send what aiohttp's client will not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, srv: ServerHandle, path: str) -> _RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def read_frame(self) -> tuple[int, bytes]:
        b1, b2 = await asyncio.wait_for(self.reader.readexactly(2), 5)
        n = b2 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b1 & 0x0F, await self.reader.readexactly(n)

    async def read_json(self) -> dict[str, object]:
        while True:
            opcode, payload = await self.read_frame()
            if opcode == 0x1:
                return json.loads(payload)  # type: ignore[no-any-return]
            assert opcode in (0x9, 0xA), (opcode, payload)  # pings may come between

    async def read_type(self, type_: str) -> dict[str, object]:
        while True:
            msg = await self.read_json()
            if msg["type"] == type_:
                return msg

    def close(self) -> None:
        self.writer.close()


async def test_plain_get_on_a_websocket_path_is_426(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    async with http.get(srv.url + "/ws/r") as resp:
        assert resp.status == 426
        assert resp.headers["Upgrade"] == "websocket"
        assert (await resp.json())["code"] == "malformed-envelope"
    async with http.get(srv.url + "/healthz") as resp:  # same port, the HTTP plane
        assert resp.status == 200


async def test_unknown_websocket_paths_are_404(srv: ServerHandle) -> None:
    for path in ("/ws/a/b", "/ws/"):
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 404"), (path, status)
        writer.close()


async def test_percent_encoded_room_id_is_decoded(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    _, welcome = await hello(http, srv.ws_url("team%2Ddesign"))
    assert welcome["room"] == "team-design"


async def test_head_split_over_many_reads(srv: ServerHandle) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for i in range(0, len(request), 7):
        writer.write(request[i : i + 7])
        await writer.drain()
        await asyncio.sleep(0.01)
    response = await asyncio.wait_for(reader.read(), 5)
    assert response.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_fragmented_message_is_reassembled(srv: ServerHandle) -> None:
    client = await _RawClient.connect(srv, "/ws/frag")
    hello_bytes = json.dumps({"type": "hello", "v": 1}).encode()
    client.writer.write(_frame(hello_bytes[:5], 0x1, fin=False))
    client.writer.write(_frame(hello_bytes[5:9], 0x0, fin=False))
    client.writer.write(_frame(hello_bytes[9:], 0x0, fin=True))
    assert (await client.read_json())["type"] == "welcome"
    client.close()


async def test_fragments_past_max_frame_bytes_are_1009(tmp_path: Path) -> None:
    async with running_server(tmp_path, server__max_frame_bytes=4096) as srv:
        client = await _RawClient.connect(srv, "/ws/big")
        client.writer.write(_frame(b'{"type":"hello","v":1}'))
        assert (await client.read_json())["type"] == "welcome"
        for _ in range(3):
            client.writer.write(_frame(b"x" * 2000, 0x1 if _ == 0 else 0x0, fin=False))
        error = await client.read_type("error")
        assert error["code"] == "too-large"
        opcode, payload = await client.read_frame()
        assert (opcode, struct.unpack("!H", payload[:2])[0]) == (0x8, 1009)
        client.close()


async def test_continuation_without_a_start_is_refused(srv: ServerHandle) -> None:
    client = await _RawClient.connect(srv, "/ws/cont")
    client.writer.write(_frame(b'{"type":"hello","v":1}'))
    assert (await client.read_json())["type"] == "welcome"
    client.writer.write(_frame(b"{}", 0x0, fin=True))
    error = await client.read_type("error")
    assert error["code"] == "malformed-envelope" and "continuation" in str(error["message"])
    client.close()


async def test_frames_sent_behind_a_hello_wait_their_turn(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    """A hello waits for the room to load; packs pipelined behind it are answered after
    the welcome, in order, none lost."""
    ws = await http.ws_connect(srv.ws_url("pipelined"))
    await ws.send_json({"type": "hello", "v": 1})
    for i in range(40):  # past the inbox size at which reading pauses
        await ws.send_json(
            {"type": "pack", "data": pack_data([Change(f"/k{i}", i + 1, 0, "a", b"v")])}
        )
    assert (await recv(ws))["type"] == "welcome"
    seqs = []
    while len(seqs) < 40:
        msg = await recv(ws)
        if msg["type"] == "ack":
            seqs.extend(msg["seqs"])
    assert seqs == list(range(1, 41))


async def test_peer_close_is_answered_and_recorded(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, srv.ws_url("bye"))
    await ws.close(code=4100, message=b"done")
    assert ws.close_code == 4100  # our CLOSE echoed the code
    metrics = await (await http.get(srv.url + "/metrics")).text()
    # A code roomsync does not define is counted, under ``other`` (a bounded label).
    assert 'roomsync_closes_total{code="other"} 1.0' in metrics


async def test_dropped_connection_leaves_the_room(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    client = await _RawClient.connect(srv, "/ws/drop")
    client.writer.write(_frame(b'{"type":"hello","v":1}'))
    assert (await client.read_json())["type"] == "welcome"
    client.writer.transport.abort()  # no CLOSE frame
    client.close()
    await wait_until(lambda: not srv.server.connections, timeout=5)
    assert "drop" not in srv.server.rooms.hosts or not srv.server.rooms.hosts["drop"].peers
    metrics = await (await http.get(srv.url + "/metrics")).text()
    assert 'roomsync_closes_total{code="1006"} 1.0' in metrics


async def test_closed_connections_leave_nothing_behind(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    """Every connection object is freed once its socket is gone, whichever way it ended."""
    from roomsync.server.ws import _Connection

    for i in range(20):
        if i % 2:
            ws, _ = await hello(http, srv.ws_url(f"leak{i % 3}"))
            await ws.close()
        else:
            raw = await RawWebSocket.open(srv.host, srv.port, f"/ws/leak{i % 3}")
            await raw.send_json({"type": "hello", "v": 1})
            assert (await raw.read_frame()).json()["type"] == "welcome"
            await raw.close()  # the socket is dropped, no CLOSE frame
    await wait_until(lambda: not srv.server.connections, timeout=5)
    gc.collect()
    assert [o for o in gc.get_objects() if isinstance(o, _Connection)] == []


async def test_an_upgrade_after_http_on_the_same_pooled_session_is_a_websocket(
    srv: ServerHandle,
) -> None:
    """aiohttp reuses a kept-alive connection for ws_connect; the listener routes only a
    connection's first request, so HTTP answers close their connection and the upgrade
    comes on a fresh one (it used to get 426 from aiohttp)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(srv.url + "/healthz") as resp:
                assert resp.status == 200
                assert resp.headers.get("Connection", "").lower() == "close"
            ws = await http.ws_connect(srv.ws_url("r"))
            await ws.send_json({"type": "hello", "v": 1})
            assert (await ws.receive_json(timeout=10))["type"] == "welcome"
            await ws.close()
