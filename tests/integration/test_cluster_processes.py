"""Three ``roomsync serve`` processes on one PostgreSQL and one Redis (SPEC §8, issue 15):
SDK clients on every node write concurrently while one node is killed with SIGKILL; the
killed node's clients reconnect to the others; everyone converges on one canonical root,
the one ``roomsync replay`` recomputes from the op log in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from roomsync.client import Backoff, RoomClient, connect
from roomsync.testing.cluster import cluster_processes
from roomsync.testing.postgres import postgres_database
from roomsync.testing.redis import delete_prefix, redis_url, unique_prefix
from roomsync.testing.server import wait_until

ROOM = "crowd"
FAST = Backoff(base=0.02, factor=2, max=0.3)


@pytest.fixture
def dsn() -> Iterator[str]:
    with postgres_database() as d:
        yield d


@pytest.fixture
def bus() -> Iterator[tuple[str, str]]:
    url, prefix = redis_url(), unique_prefix()
    yield url, prefix
    asyncio.run(delete_prefix(url, prefix))


async def write_steadily(client: RoomClient, rng: random.Random, stop: asyncio.Event) -> int:
    n = 0
    while not stop.is_set():
        key = f"/k/{rng.randrange(40)}"
        if rng.random() < 0.1:
            client.delete(key)
        else:
            client.set(key, b"%s:%d" % (client.actor.encode(), n))
        client.set(f"/own/{client.actor}/{n}", b"%d" % n)
        n += 1
        await asyncio.sleep(0.005 + rng.random() * 0.01)
    return n


async def test_three_nodes_converge_with_replay_through_a_kill_9(
    tmp_path: Path, dsn: str, bus: tuple[str, str]
) -> None:
    url, prefix = bus
    with cluster_processes(tmp_path, dsn=dsn, redis=url, prefix=prefix, nodes=3) as procs:
        urls = [p.url for p in procs]
        clients: list[RoomClient] = []
        for i in range(6):
            home = i % 3  # two clients per node, each knowing every node (its own first)
            order = urls[home:] + urls[:home]
            clients.append(
                await connect(order, ROOM, actor=f"c{i}", backoff=FAST, rng=random.Random(i))
            )
        stop = asyncio.Event()
        writers = [
            asyncio.create_task(write_steadily(c, random.Random(100 + i), stop))
            for i, c in enumerate(clients)
        ]
        try:
            await asyncio.sleep(1.5)
            victim = procs[2]
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
            await asyncio.sleep(1.5)  # the writers go on; node-2's clients move
            stop.set()
            written = await asyncio.gather(*writers)
            assert all(n > 20 for n in written), written
            for c in clients:
                await c.flush(timeout=30)

            async def same() -> bool:
                roots = {c.root for c in clients}
                if len(roots) != 1:
                    return False
                return {await c.server_root() for c in clients} == roots

            await wait_until(same, timeout=30, interval=0.1)
            root = clients[0].root
            for c, n in zip(clients, written, strict=True):  # nothing a client wrote is lost
                own = dict(clients[0].items(f"/own/{c.actor}/"))
                assert len(own) == n, (c.actor, len(own), n)
            moved = clients[2::3]
            assert all(
                c.session_info is not None and c.session_info.node != "node-2" for c in moved
            )
        finally:
            stop.set()
            for c in clients:
                await c.close()
    out = subprocess.run(
        [sys.executable, "-m", "roomsync.cli.main", "replay", "--room", ROOM, "--json"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ROOMSYNC_")},
            "ROOMSYNC_STORAGE_BACKEND": "postgres",
            "ROOMSYNC_STORAGE_POSTGRES_DSN": dsn,
        },
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["match"] is True
    assert report["live_root"] == root == report["replayed_root"]
