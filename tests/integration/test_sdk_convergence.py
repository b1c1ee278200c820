"""End to end: SDK replicas converge with the server and its op log; a cold room takes a crowd.

* Three SDK clients write and delete concurrently (seeded) while their connections are
  dropped abruptly from the client side; after they flush, every local root equals the
  server's ``mst-root`` and the root ``roomsync replay`` recomputes from the op log.
* 200 raw WebSocket peers join a cold room at the same instant; each is welcomed and
  receives the whole catch-up, ending with its ``done`` chunk.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roomsync.client import Backoff, RoomClient, connect
from roomsync.core.codec import unpack_data
from roomsync.replay import replay
from roomsync.testing.server import ServerHandle, running_server, wait_until

ROOM = "converge"


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_three_clients_converge_with_server_and_replay(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    # Keep the room loaded while every peer happens to be disconnected: this test is about
    # the clients, not about RoomRegistry unloading a room while a peer is joining it.
    async with running_server(tmp_path, server__room_idle_unload_ms=60_000) as srv:
        clients: list[RoomClient] = [
            await asyncio.wait_for(
                connect(
                    srv.url,
                    ROOM,
                    actor=f"peer-{i}",
                    rng=random.Random(seed * 10 + i),
                    backoff=Backoff(base=0.005, factor=2, max=0.05),
                ),
                10,
            )
            for i in range(3)
        ]
        try:
            paths = [f"/doc/{i}" for i in range(12)] + [f"/doc/sub/{i}" for i in range(6)]
            drops = 0
            for step in range(2000):
                client = rng.choice(clients)
                roll = rng.random()
                if roll < 0.55:
                    client.set(rng.choice(paths), f"{client.actor}:{step}".encode())
                elif roll < 0.8:
                    client.delete(rng.choice(paths))
                elif roll < 0.83:
                    drops += client.connected.is_set()
                    client.disconnect()
                elif roll < 0.9:
                    # Let the network run for a moment so packs, acks and broadcasts interleave.
                    await asyncio.sleep(rng.uniform(0, 0.004))
                await asyncio.sleep(0)
            assert drops > 5
            await asyncio.wait_for(asyncio.gather(*(c.wait_synced() for c in clients)), 10)
            await asyncio.wait_for(asyncio.gather(*(c.flush() for c in clients)), 30)
            host = srv.server.rooms.hosts[ROOM]
            await host.flush()
            await wait_until(
                lambda: len({c.root for c in clients} | {host.state.root}) == 1, timeout=15
            )
            server_root = await asyncio.wait_for(clients[0].server_root(), 5)
            assert {c.root for c in clients} == {server_root}
            assert sum(c.stats.welcomes for c in clients) > 3  # sessions were really dropped
            items = [dict(c.items()) for c in clients]
            assert items[0] == items[1] == items[2]
            report = await replay(srv.server.store, ROOM)
            assert report.match is True
            assert report.replayed_root == report.live_root == server_root
        finally:
            for c in clients:
                await c.close()


async def _join(session: aiohttp.ClientSession, srv: ServerHandle) -> dict[str, Any]:
    """One raw peer: hello, then read until the catch-up's ``done`` chunk."""
    async with session.ws_connect(srv.ws_url(ROOM), max_msg_size=0) as ws:
        await ws.send_str(json.dumps({"type": "hello", "v": 1}))
        welcome: dict[str, Any] | None = None
        received = 0
        while True:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            frame = json.loads(msg.data)
            if frame["type"] == "welcome":
                welcome = frame
            elif frame["type"] == "pack":
                assert welcome is not None
                received += len(unpack_data(frame["data"]))
                if frame.get("done"):
                    return {"welcome": welcome, "changes": received, "head": frame["head"]}
            else:
                raise AssertionError(f"unexpected frame {frame}")


async def test_200_peers_join_a_cold_room_at_once(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        seeder = await asyncio.wait_for(connect(srv.url, ROOM), 10)
        for i in range(300):
            seeder.set(f"/item/{i}", b"x" * 32)
        await seeder.flush(10)
        head = srv.server.rooms.hosts[ROOM].state.head
        await seeder.close()
        await wait_until(lambda: ROOM not in srv.server.rooms.hosts, timeout=10)  # cold

        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            started = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(*(_join(session, srv) for _ in range(200))), 30
            )
            elapsed = time.monotonic() - started
        assert len(results) == 200
        assert len({r["welcome"]["peer"] for r in results}) == 200
        assert all(r["welcome"]["head"] == head and r["head"] == head for r in results)
        assert all(r["changes"] == 300 for r in results)
        loads = srv.server.metrics.registry.get_sample_value("roomsync_room_loads_total")
        assert loads == 2  # loaded by the seeder, unloaded, loaded once for the crowd
        assert elapsed < 30
