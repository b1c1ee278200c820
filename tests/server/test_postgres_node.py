"""A node on the PostgreSQL store, end to end: SDK writes are acknowledged once they are
in the database, and a new node on the same database (another data dir, nothing shared
but PostgreSQL) serves them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from roomsync.client.room_client import connect
from roomsync.storage.postgres import PostgresStore
from roomsync.testing.postgres import postgres_database
from roomsync.testing.server import server_process, wait_until


async def _write(url: str, token: str) -> None:
    a = await asyncio.wait_for(connect(url, "pg-room", token=token, actor="alice"), 10)
    b = await asyncio.wait_for(connect(url, "pg-room", token=token, actor="bob"), 10)
    try:
        for i in range(20):
            (a if i % 2 else b).set(f"/k/{i}", b"%d" % i)
        await a.flush(10)
        await b.flush(10)
        await wait_until(lambda: all(a.get(f"/k/{i}") is not None for i in range(20)), timeout=10)
    finally:
        await a.close()
        await b.close()


async def _stored(dsn: str) -> dict[str, bytes | None]:
    store = PostgresStore(dsn, max_size=1)
    await store.open()
    try:
        loaded = await store.load_room("pg-room", now_ms=0)
        return {c.path: c.value for c in loaded.entries}
    finally:
        await store.close()


async def _read(url: str, token: str) -> dict[str, bytes | None]:
    c = await asyncio.wait_for(connect(url, "pg-room", token=token, actor="carol"), 10)
    try:
        await c.wait_synced(10)
        return {f"/k/{i}": c.get(f"/k/{i}") for i in range(20)}
    finally:
        await c.close()


def test_a_node_on_postgres_keeps_its_writes_in_the_database(tmp_path: Path) -> None:
    want = {f"/k/{i}": b"%d" % i for i in range(20)}
    with postgres_database() as dsn:
        with server_process(tmp_path / "one", args=["--store", dsn]) as node:
            asyncio.run(_write(node.url, node.mint()))
            assert asyncio.run(_stored(dsn)) == want  # acked, so committed
            assert node.terminate() == 0
        with server_process(tmp_path / "two", args=["--store", dsn]) as again:
            assert asyncio.run(_read(again.url, again.mint())) == want
