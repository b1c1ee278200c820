"""server.ticks and the record changes under it: concurrent changes of one room's record
(a tick timer's advance, a ``room lock``, a policy patch) never lose each other's fields.

The store here answers every ``put_room`` only after a few event-loop turns, as a real
store does (SQLite writes on its writer thread), so changes that are not serialized
interleave between their read and their write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from roomsync.config import Policy
from roomsync.core.codes import CloseCode
from roomsync.server.metrics import Metrics
from roomsync.server.rooms import RoomRegistry
from roomsync.server.ticks import TickScheduler
from roomsync.storage.base import RoomRecord
from roomsync.storage.memory import MemoryStore


class SlowStore(MemoryStore):
    """A memory store whose record writes take a few loop turns."""

    async def put_room(self, record: RoomRecord) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        await super().put_room(record)


@pytest.fixture
async def rooms() -> AsyncIterator[RoomRegistry]:
    store = SlowStore(now_ms=lambda: 1000)
    await store.open()
    await store.put_room(RoomRecord("r", created_ms=1))
    yield RoomRegistry(store, Metrics(), policy=Policy(), idle_unload_ms=0, now_ms=lambda: 1000)
    await store.close()


def scheduler(rooms: RoomRegistry) -> TickScheduler:
    return TickScheduler(rooms, rooms.store, node="n1", now_ms=lambda: 2000)


async def test_a_tick_and_a_lock_at_once_keep_both(rooms: RoomRegistry) -> None:
    ticks = scheduler(rooms)
    await asyncio.gather(ticks.advance("r"), rooms.update_record("r", locked=True))
    record = await rooms.store.get_room("r")
    assert record is not None
    assert (record.tick_n, record.tick_at_ms, record.locked) == (1, 2000, True)


async def test_concurrent_advances_and_changes_lose_nothing(rooms: RoomRegistry) -> None:
    ticks = scheduler(rooms)
    await asyncio.gather(
        *(ticks.advance("r") for _ in range(10)),
        rooms.update_record("r", locked=True),
        rooms.update_record("r", node="n1"),
        ticks.advance("r", 5),
        rooms.update_record("r", policy={"max_peers": 3}),
    )
    record = await rooms.store.get_room("r")
    assert record is not None
    assert (record.tick_n, record.locked, record.node, record.policy) == (
        15,
        True,
        "n1",
        {"max_peers": 3},
    )
    assert rooms._record_locks == {}  # every lock was forgotten once free


async def test_an_exclusive_block_holds_off_other_changes(rooms: RoomRegistry) -> None:
    ticks = scheduler(rooms)
    order: list[str] = []
    async with rooms.exclusive("r", CloseCode.ROOM_CLOSED, "room-closed", "deleting"):
        waiting = asyncio.ensure_future(ticks.advance("r"))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not waiting.done()  # another task: waits for the block
        await rooms.update_record("r", locked=True)  # the block's own task passes
        order.append("block")
        await rooms.store.delete_room("r")
    assert await waiting is None  # it read the record after the delete: nothing stored
    assert await rooms.store.get_room("r") is None
    assert order == ["block"]


async def test_advance_and_set_of_an_unknown_room_store_nothing(rooms: RoomRegistry) -> None:
    ticks = scheduler(rooms)
    assert await ticks.advance("nope") is None
    assert await ticks.set("nope", n=3) is None
    assert await rooms.store.get_room("nope") is None


async def test_the_timer_follows_the_record(rooms: RoomRegistry) -> None:
    ticks = scheduler(rooms)
    await ticks.start()
    try:
        await ticks.set("r", interval_ms=10)
        assert ticks.running("r")
        await rooms.update_record("r", node="n2")
        assert not ticks.running("r")
        await rooms.update_record("r", node="n1")
        assert ticks.running("r")
        await ticks.set("r", interval_ms=0)
        assert not ticks.running("r")
    finally:
        await ticks.stop()
