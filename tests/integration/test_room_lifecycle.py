"""Rooms are loaded on use and fully released when idle: memory follows the rooms that are
in use, not the rooms that exist (issue 3). RSS figures come from bench/rooms_memory.py."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import aiohttp

from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.core.room import RoomState
from roomsync.server.rooms import RoomHost
from roomsync.testing.server import running_server, wait_until


async def test_many_rooms_unload_and_free_their_objects(tmp_path: Path) -> None:
    rooms = 1000
    async with running_server(
        tmp_path, server__room_idle_unload_ms=100, policy__rate_messages_per_s=10_000
    ) as srv:
        sem = asyncio.Semaphore(50)
        async with aiohttp.ClientSession() as http:

            async def one(i: int) -> None:
                async with sem:
                    ws = await http.ws_connect(srv.ws_url(f"room-{i}"))
                    await ws.send_json({"type": "hello", "v": 1, "catchup": False})
                    assert (await ws.receive_json())["type"] == "welcome"
                    batch = [Change(f"/k/{j}", j + 1, 0, "t", b"v" * 32) for j in range(5)]
                    await ws.send_json({"type": "pack", "data": pack_data(batch)})
                    assert (await ws.receive_json())["seqs"] == [1, 2, 3, 4, 5]
                    await ws.close()

            await asyncio.gather(*(one(i) for i in range(rooms)))
        registry = srv.server.rooms
        await wait_until(lambda: not registry.hosts, timeout=30)
        assert registry.unloads == registry.loads == rooms
        gc.collect()
        live = [o for o in gc.get_objects() if isinstance(o, RoomHost | RoomState)]
        assert live == []
        # Unloaded rooms lost nothing: a reload brings the state back from the store.
        loaded = await srv.server.store.load_room("room-7", now_ms=0)
        assert len(loaded.entries) == 5 and loaded.record.head == 5
