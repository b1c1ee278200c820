"""The group commit across rooms (server/rooms.py ``GroupCommit``), on a real server and a
real SQLite store: the packs of many rooms that arrive in one event-loop turn commit in
one store transaction; every broadcast and ack follows the commit that holds its change;
a failed or refused commit fails exactly the rooms whose changes it held.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from roomsync.core.codec import pack_data, unpack_data
from roomsync.core.entries import Change
from roomsync.storage.sqlite import SqliteStore
from roomsync.testing.faults import FaultyStore
from roomsync.testing.server import ServerHandle, running_server, wait_until
from roomsync.testing.wsclient import closed, hello, recv_type

ROOMS = 6


def ch(path: str, value: bytes, actor: str, counter: int = 0) -> Change:
    return Change(path, int(time.time() * 1000), counter, actor, value)


Pair = tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientWebSocketResponse]


async def writers_and_readers(
    srv: ServerHandle, http: aiohttp.ClientSession, rooms: list[str]
) -> list[Pair]:
    """A writer and a reader in each room, each room written once (its head is 1)."""
    pairs = []
    for room in rooms:
        writer, _ = await hello(http, srv.ws_url(room), actor=f"w-{room}")
        reader, _ = await hello(http, srv.ws_url(room), actor=f"r-{room}")
        await writer.send_json({"type": "pack", "data": pack_data([ch("/first", b"1", "w")])})
        assert (await recv_type(writer, "ack"))["seqs"] == [1]
        await recv_type(reader, "pack")
        pairs.append((writer, reader))
    return pairs


async def send_in_one_turn(pairs: list[Pair], rooms: list[str]) -> None:
    """One pack per room, all written before the server reads any: its next loop turn
    reads them all (the server shares this event loop)."""
    await asyncio.gather(
        *(
            writer.send_json({"type": "pack", "data": pack_data([ch(f"/{room}", b"2", "w")])})
            for (writer, _), room in zip(pairs, rooms, strict=True)
        )
    )


def sample(srv: ServerHandle, name: str, **labels: str) -> float:
    value = srv.server.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_packs_of_many_rooms_in_one_turn_commit_in_one_transaction(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path) as srv:
        store = srv.server.store
        assert isinstance(store, SqliteStore)
        rooms = [f"g{i}" for i in range(ROOMS)]
        pairs = await writers_and_readers(srv, http, rooms)
        group = srv.server.rooms.group_commit
        commits, calls, batches = store.commits, group.calls, group.batches
        await send_in_one_turn(pairs, rooms)
        for (writer, reader), room in zip(pairs, rooms, strict=True):
            assert (await recv_type(writer, "ack"))["seqs"] == [2]
            pack = await recv_type(reader, "pack")
            assert [(c.path, c.seq) for c in unpack_data(pack["data"])] == [(f"/{room}", 2)]
        # One store call, one SQLite transaction, for the six rooms' batches.
        assert (group.calls - calls, group.batches - batches) == (1, ROOMS)
        assert store.commits - commits == 1
        for room in rooms:
            stored = await store.changes_since(room, 0, limit=10)
            assert [(c.path, c.seq) for c in stored] == [("/first", 1), (f"/{room}", 2)]


async def test_no_ack_or_broadcast_before_the_grouped_commit_is_durable(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    faulty = FaultyStore(SqliteStore(tmp_path / "roomsync.db"))
    async with running_server(tmp_path, store=faulty.as_store()) as srv:
        rooms = [f"h{i}" for i in range(ROOMS)]
        pairs = await writers_and_readers(srv, http, rooms)
        hosts = [srv.server.rooms.hosts[room] for room in rooms]
        acks = sample(srv, "roomsync_messages_total", direction="out", type="ack")
        deliveries = sample(srv, "roomsync_deliveries_total")
        gate = faulty.hold_appends()  # the commit is in flight until the gate opens
        await send_in_one_turn(pairs, rooms)
        await wait_until(lambda: all(h.state.pending for h in hosts), timeout=5)
        # Applied, not durable: nothing was acknowledged or broadcast, nothing is stored.
        assert sample(srv, "roomsync_messages_total", direction="out", type="ack") == acks
        assert sample(srv, "roomsync_deliveries_total") == deliveries
        assert all(h.head == 1 for h in hosts)
        for room in rooms:
            assert [c.seq for c in await faulty.inner.changes_since(room, 0, limit=10)] == [1]
        gate.set()
        for (writer, reader), room in zip(pairs, rooms, strict=True):
            assert (await recv_type(writer, "ack"))["seqs"] == [2]
            # The ack came after the commit: the store holds the change already.
            stored = await faulty.inner.changes_since(room, 1, limit=10)
            assert [(c.path, c.seq) for c in stored] == [(f"/{room}", 2)]
            await recv_type(reader, "pack")
        assert sample(srv, "roomsync_deliveries_total") == deliveries + ROOMS


async def test_a_failed_grouped_commit_refuses_exactly_its_changes_in_every_room(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    faulty = FaultyStore(SqliteStore(tmp_path / "roomsync.db"))
    async with running_server(tmp_path, store=faulty.as_store()) as srv:
        rooms = [f"f{i}" for i in range(ROOMS)]
        pairs = await writers_and_readers(srv, http, rooms)
        bystander, _ = await hello(http, srv.ws_url("other"), actor="b")
        faulty.fail_appends(1)
        await send_in_one_turn(pairs, rooms)
        for writer, reader in pairs:
            seen_w, code_w = await closed(writer)
            seen_r, code_r = await closed(reader)
            ack = next(m for m in seen_w if m["type"] == "ack")
            assert ack["seqs"] == [None] and ack["refused"][0]["code"] == "internal"
            assert (code_w, code_r) == (1011, 1011)
            # No phantom: the reader got the retryable error, never the failed change.
            assert [m["type"] for m in seen_r] == ["error"]
            assert seen_r[0]["code"] == "overload" and "retry_after_ms" in seen_r[0]
        assert faulty.failed_appends == 1  # one failed transaction held all six
        for room in rooms:
            assert [c.seq for c in await faulty.inner.changes_since(room, 0, limit=10)] == [1]
            # The room reloads from the store; seq 2 goes to a change that exists.
            again, welcome = await hello(http, srv.ws_url(room), actor="w", cursor=1)
            assert welcome["head"] == 1
            await again.send_json({"type": "pack", "data": pack_data([ch("/real", b"3", "w")])})
            assert (await recv_type(again, "ack"))["seqs"] == [2]
        # A room outside the failed commit was never touched.
        await bystander.send_json({"type": "pack", "data": pack_data([ch("/b", b"b", "b")])})
        assert (await recv_type(bystander, "ack"))["seqs"] == [1]


async def test_a_batch_the_store_refuses_is_applied_again_on_top(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Another writer (a second node) moved one room's head: that room's batch is
    refused with a conflict inside the shared transaction and the other rooms' commit.
    The refused room reads what the other writer committed, broadcasts it, applies its
    writer's pack again on top and commits it: the writer is acked a later seq, the
    reader sees every seq once, in order, and no one is disconnected."""
    async with running_server(tmp_path) as srv:
        store = srv.server.store
        rooms = [f"c{i}" for i in range(ROOMS)]
        pairs = await writers_and_readers(srv, http, rooms)
        intruder = Change("/intruder", int(time.time() * 1000), 0, "node-b", b"x", 2)
        await store.append("c0", [intruder], expected_head=1)
        commits = store.commits  # type: ignore[attr-defined]
        await send_in_one_turn(pairs, rooms)
        (writer, reader), *others = pairs
        assert (await recv_type(writer, "ack"))["seqs"] == [3]
        seen: list[tuple[str, int | None]] = []
        while len(seen) < 2:
            pack = await recv_type(reader, "pack")
            seen += [(c.path, c.seq) for c in unpack_data(pack["data"])]
        assert seen == [("/intruder", 2), ("/c0", 3)]
        for (writer, reader), room in zip(others, rooms[1:], strict=True):
            assert (await recv_type(writer, "ack"))["seqs"] == [2]
            pack = await recv_type(reader, "pack")
            assert [(c.path, c.seq) for c in unpack_data(pack["data"])] == [(f"/{room}", 2)]
        # The shared transaction, then the refused room's batch again on its own.
        assert store.commits - commits == 2  # type: ignore[attr-defined]
        stored = await store.changes_since("c0", 0, limit=10)
        assert [(c.path, c.seq) for c in stored] == [("/first", 1), ("/intruder", 2), ("/c0", 3)]
        assert srv.server.metrics.commit_conflicts._value.get() == 1
