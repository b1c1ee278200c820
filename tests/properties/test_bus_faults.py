"""Two nodes, one store, and a bus that drops, delays, reorders and duplicates (SPEC §8).

Writers on both nodes send random packs while :class:`~roomsync.testing.faultbus.FaultHub`
mangles every message between the nodes (events and signals alike). Observers joined on
both nodes before the first write. Whatever the faults, every observer receives every seq
of the room exactly once and in ascending order, and once the bus heals (the lost tail
included: no later event shows that gap) each reaches the store's head.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from roomsync.core.codec import pack_data, unpack_data
from roomsync.core.entries import Change
from roomsync.server.app import RoomsyncServer
from roomsync.storage.memory import MemoryStore
from roomsync.testing.faultbus import FaultHub, SharedStore
from roomsync.testing.server import test_settings as node_settings
from roomsync.testing.server import wait_until
from roomsync.testing.wsclient import hello, recv_type

ROOM = "faults"


class Observer:
    """A peer that only reads: the seqs of every pack it is sent, in arrival order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seqs: list[int] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            body = msg.json()
            if body.get("type") == "pack":
                self.seqs.extend(c.seq or 0 for c in unpack_data(body["data"]))


async def write(
    http: aiohttp.ClientSession, url: str, actor: str, rng: random.Random, packs: int
) -> int:
    """``packs`` packs of 1-4 changes with short random pauses; the highest seq acked."""
    ws, _ = await hello(http, url, actor=actor, catchup=False)
    top = 0
    try:
        for n in range(packs):
            changes = [
                Change(f"/k/{rng.randrange(12)}", 1_000 + n * 10 + j, 0, actor, b"%d" % n)
                for j in range(rng.randint(1, 4))
            ]
            await ws.send_json({"type": "pack", "data": pack_data(changes)})
            ack = await recv_type(ws, "ack", timeout=20)
            assert all(s is not None for s in ack["seqs"]), ack
            top = max(top, *ack["seqs"])
            await asyncio.sleep(rng.random() * 0.01)
    finally:
        await ws.close()
    return top


async def scenario(seed: int, drop: float, delay_ms: float, duplicate: float) -> dict[str, Any]:
    rng = random.Random(seed)
    hub = FaultHub(random.Random(seed + 1), drop=drop, max_delay_ms=delay_ms, duplicate=duplicate)
    store = MemoryStore()
    await store.open()
    servers: list[RoomsyncServer] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for i in range(2):
                s = node_settings(
                    Path(tmp) / f"n{i}",
                    **{
                        "server.node_id": f"node-{i}",
                        "server.room_idle_unload_ms": 60_000,
                        "bus.heartbeat_ms": 100,
                        "bus.node_dead_ms": 60_000,
                    },
                )
                server = RoomsyncServer(s, store=SharedStore(store), bus=hub.bus(f"node-{i}"))  # type: ignore[arg-type]
                await server.start("127.0.0.1", 0)
                servers.append(server)
            urls = [f"ws://127.0.0.1:{srv.port}/ws/{ROOM}" for srv in servers]
            async with aiohttp.ClientSession() as http:
                observers = []
                for i in range(4):
                    ws, _ = await hello(http, urls[i % 2], actor=f"obs{i}")
                    observers.append(Observer(ws))
                tops = await asyncio.gather(
                    *(
                        write(http, urls[i % 2], f"w{i}", random.Random(rng.random()), 12)
                        for i in range(4)
                    )
                )
                head = max(tops)
                hub.heal()
                try:
                    await wait_until(
                        lambda: all(o.seqs and o.seqs[-1] >= head for o in observers),
                        timeout=20,
                        interval=0.02,
                    )
                finally:
                    for o in observers:
                        await o.ws.close()
                        await o.task
            return {"head": head, "seqs": [o.seqs for o in observers], "faults": dict(hub.counts)}
        finally:
            for server in servers:
                await server.stop()
            await store.close()


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    drop=st.sampled_from([0.0, 0.2, 0.5, 0.9]),
    delay_ms=st.sampled_from([0.0, 5.0, 40.0]),
    duplicate=st.sampled_from([0.0, 0.2]),
)
def test_every_peer_sees_every_seq_once_in_order(
    seed: int, drop: float, delay_ms: float, duplicate: float
) -> None:
    out = asyncio.run(scenario(seed, drop, delay_ms, duplicate))
    head = out["head"]
    assert head >= 4 * 12
    for seqs in out["seqs"]:
        assert seqs == list(range(1, head + 1)), (out["faults"], seqs)
