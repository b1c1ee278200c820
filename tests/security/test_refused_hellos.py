"""Refused hellos cost nothing on disk: a flood of bad or missing tokens to new room ids
leaves no ``rooms`` row and no WAL growth behind (SPEC §2 handshake, §3 auth).

The handshake loads (acquires) the room before it checks the token. Before the fix that
load created the room's row: 3,000 refused hellos left 3,000 rows and 14 MB of WAL that
was never checkpointed while the server ran.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from roomsync.testing.server import ServerHandle, running_server
from roomsync.testing.wsclient import closed, connect

HELLOS = 400
AT_ONCE = 25


def _bad_token(srv: ServerHandle, i: int) -> str | None:
    """No token, garbage, a forged signature, or a real token for another room."""
    kind = i % 4
    if kind == 0:
        return None
    if kind == 1:
        return "not-a-token"
    if kind == 2:
        return jwt.encode(
            {"room": "*", "caps": ["read", "write"]},
            "forged-secret-forged-secret-0123456789",
            algorithm="HS256",
            headers={"kid": "test-k1"},
        )
    return srv.mint("somewhere-else", ["read", "write"])


async def _refused_hello(
    http: aiohttp.ClientSession, srv: ServerHandle, room: str, token: str | None
) -> tuple[list[dict[str, Any]], int | None]:
    ws = await connect(http, srv.ws_url(room))
    hello: dict[str, Any] = {"type": "hello", "v": 1}
    if token is not None:
        hello["token"] = token
    await ws.send_json(hello)
    return await closed(ws)


async def test_refused_hellos_leave_nothing_on_disk(tmp_path: Path) -> None:
    async with running_server(tmp_path, dev=False) as srv, aiohttp.ClientSession() as http:
        gate = asyncio.Semaphore(AT_ONCE)

        async def one(i: int) -> tuple[list[dict[str, Any]], int | None]:
            async with gate:
                return await _refused_hello(http, srv, f"new-room-{i}", _bad_token(srv, i))

        outcomes = await asyncio.gather(*(one(i) for i in range(HELLOS)))
        for i, (seen, code) in enumerate(outcomes):
            assert code == 4003, (i, seen, code)
            assert seen and seen[0]["type"] == "error", (i, seen)
            assert seen[0]["code"] == "auth" and seen[0]["message"].startswith("auth: ")
        db = Path(srv.server.settings.server.data_dir) / "roomsync.db"
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute("SELECT room FROM rooms").fetchall()
        finally:
            conn.close()
        assert rows == []
        assert await srv.server.store.list_rooms() == []
        wal = db.with_name(db.name + "-wal")
        assert not wal.exists() or wal.stat().st_size < 1 << 20


async def test_refused_hellos_leave_no_room_loaded(tmp_path: Path) -> None:
    """With the production idle-unload delay, a refused hello's empty room is unloaded
    at once (it used to stay in memory for room_idle_unload_ms, one per room id)."""
    from roomsync.testing.server import wait_until

    async with (
        running_server(tmp_path, dev=False, server__room_idle_unload_ms=30_000) as srv,
        aiohttp.ClientSession() as http,
    ):
        for i in range(50):
            _, code = await _refused_hello(http, srv, f"probe-{i}", _bad_token(srv, i))
            assert code == 4003
        await wait_until(lambda: not srv.server.rooms.hosts, timeout=5)
        # A room that holds state still waits out the idle delay.
        token = srv.mint("kept", ("read", "write"))
        from roomsync.core.codec import pack_data
        from roomsync.core.entries import Change
        from roomsync.testing.wsclient import hello, recv_type

        ws, _ = await hello(http, srv.ws_url("kept"), token=token)
        await ws.send_json({"type": "pack", "data": pack_data([Change("/a", 1, 0, "x", b"1")])})
        await recv_type(ws, "ack")
        await ws.close()
        await wait_until(lambda: srv.server.rooms.hosts["kept"].refs == 0, timeout=5)
        assert "kept" in srv.server.rooms.hosts
