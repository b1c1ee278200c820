"""Fencing on one SQLite file shared by several writers (SPEC §8, issue 10; issue 15 builds
on it): the store is the seq authority, so two writers never write the same seq.

The contract suite checks fencing within one store object; here the writers are what
they will be in a deployment: separate stores (their own connections and writer
threads), separate processes, and a running server whose room another writer moved.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from roomsync.core.codec import pack_data, unpack_data
from roomsync.core.entries import Change
from roomsync.storage.base import StoreConflict
from roomsync.storage.sqlite import SqliteStore
from roomsync.testing.server import running_server
from roomsync.testing.wsclient import hello, recv_type


def _change(seq: int, actor: str, path: str = "/doc") -> Change:
    return Change(path, 1000 + seq, 0, actor, actor.encode(), seq)


async def _opened(path: Path, synchronous: str = "NORMAL") -> SqliteStore:
    store = SqliteStore(path, synchronous=synchronous)
    await store.open()
    return store


async def _head(store: SqliteStore, room: str) -> int:
    record = await store.get_room(room)
    return 0 if record is None else record.head


async def test_a_second_store_on_the_file_is_fenced_out(tmp_path: Path) -> None:
    """Node B loaded the room before node A wrote: B's commit is refused, writes nothing,
    and B continues once it has re-read the head."""
    path = tmp_path / "rooms.db"
    a, b = await _opened(path), await _opened(path)
    try:
        assert (await b.load_room("r", now_ms=1)).record.head == 0
        await a.append("r", [_change(1, "a")], expected_head=0)
        with pytest.raises(StoreConflict) as conflict:
            await b.append("r", [_change(1, "b"), _change(2, "b", "/b")], expected_head=0)
        assert (conflict.value.room, conflict.value.expected, conflict.value.actual) == ("r", 0, 1)
        assert b.inline_commits == 0  # refused inside its inline transaction, not committed
        await b.check()  # a conflict is the caller's stale view, not a failing store
        assert await b.changes_since("r", 0, limit=10) == [_change(1, "a")]
        head = (await b.load_room("r", now_ms=1)).record.head
        await b.append("r", [_change(head + 1, "b")], expected_head=head)
        assert [(c.seq, c.actor) for c in await a.changes_since("r", 0, limit=10)] == [
            (1, "a"),
            (2, "b"),
        ]
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_two_stores_racing_never_write_the_same_seq(tmp_path: Path, synchronous: str) -> None:
    """Both writers append with the head they last read, concurrently; the loser of each
    round re-reads the head. FULL puts both on their writer threads, racing for SQLite's
    write lock."""
    path = tmp_path / "rooms.db"
    stores = {"a": await _opened(path, synchronous), "b": await _opened(path, synchronous)}
    wins = dict.fromkeys(stores, 0)
    conflicts = 0
    try:
        for _ in range(40):
            heads = {name: await _head(store, "r") for name, store in stores.items()}
            results = await asyncio.gather(
                *(
                    store.append("r", [_change(heads[name] + 1, name)], expected_head=heads[name])
                    for name, store in stores.items()
                ),
                return_exceptions=True,
            )
            for name, result in zip(stores, results, strict=True):
                if result is None:
                    wins[name] += 1
                else:
                    assert isinstance(result, StoreConflict), result
                    conflicts += 1
        log = await stores["a"].changes_since("r", 0, limit=1000)
        assert [c.seq for c in log] == list(range(1, len(log) + 1))
        assert len(log) == sum(wins.values()) == 40  # every round exactly one winner
        assert conflicts == 40
        assert {name: sum(c.actor == name for c in log) for name in stores} == wins
    finally:
        for store in stores.values():
            await store.close()


_WRITER = """
import asyncio, sys
from pathlib import Path
from roomsync.core.entries import Change
from roomsync.storage.base import StoreConflict
from roomsync.storage.sqlite import SqliteStore

async def main(path, actor, n):
    store = SqliteStore(Path(path))
    await store.open()
    won = conflicts = 0
    while won < n:
        record = await store.get_room("r")
        head = 0 if record is None else record.head
        change = Change(f"/{actor}/{won}", 1000 + head, 0, actor, b"x", head + 1)
        try:
            await store.append("r", [change], expected_head=head)
        except StoreConflict:
            conflicts += 1
            continue
        won += 1
    await store.close()
    print(won, conflicts, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def test_two_processes_never_write_the_same_seq(tmp_path: Path) -> None:
    """Two processes (two nodes on one database) write as fast as they can, each with the
    head it read; every seq is written once, by one of them, and none is lost."""
    path = tmp_path / "rooms.db"
    n = 300
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), actor, str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for actor in ("p", "q")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        won, _conflicts = map(int, out.split())  # conflicts depend on scheduling
        assert won == n

    async def check() -> None:
        store = await _opened(path)
        try:
            log = await store.changes_since("r", 0, limit=10 * n)
            assert [c.seq for c in log] == list(range(1, 2 * n + 1))
            for actor in ("p", "q"):
                mine = [c.path for c in log if c.actor == actor]
                assert mine == [f"/{actor}/{i}" for i in range(n)]  # each once, in order
            assert await _head(store, "r") == 2 * n
        finally:
            await store.close()

    asyncio.run(check())


async def test_the_server_rebases_when_another_writer_moved_the_room(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The room host's commit meets a head another writer (a second node) moved: the
    store refuses it (nothing stored), the host reads the other writer's change, sends
    it to its peers, applies the write again on top and commits it. The writer is acked
    the next seq and stays connected; the store holds both changes, in that order."""
    async with running_server(tmp_path) as srv:
        store = srv.server.store
        assert isinstance(store, SqliteStore)
        writer, _ = await hello(http, srv.ws_url("r"), actor="w")
        ts = int(time.time() * 1000)
        await writer.send_json(
            {"type": "pack", "data": pack_data([Change("/a", ts, 0, "w", b"1")])}
        )
        assert (await recv_type(writer, "ack"))["seqs"] == [1]

        other = await _opened(store.path)  # another node on the same database
        try:
            await other.append(
                "r", [Change("/b", ts + 1, 0, "node-b", b"from b", 2)], expected_head=1
            )
        finally:
            await other.close()

        await writer.send_json(
            {"type": "pack", "data": pack_data([Change("/a", ts + 2, 0, "w", b"again")])}
        )
        pack = await recv_type(writer, "pack")  # the other writer's change, first
        assert [(c.path, c.seq) for c in unpack_data(pack["data"])] == [("/b", 2)]
        assert (await recv_type(writer, "ack"))["seqs"] == [3]
        loaded = await store.load_room("r", now_ms=0)
        assert {c.path: (c.seq, c.value) for c in loaded.entries} == {
            "/a": (3, b"again"),
            "/b": (2, b"from b"),
        }
