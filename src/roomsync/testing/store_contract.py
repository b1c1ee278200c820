"""The contract every :class:`~roomsync.storage.base.Store` keeps, as reusable test classes.

Subclass :class:`StoreContract` in a test module, give it a ``store`` fixture that yields
an *opened* store (and closes it afterwards), and pytest runs every check against that
backend::

    class TestSqliteStore(StoreContract):
        group_commits = True

        @pytest.fixture
        async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
            store = SqliteStore(tmp_path / "room.db")
            await store.open()
            yield store
            await store.close()

Needs pytest with pytest-asyncio (``asyncio_mode = "auto"``). Set ``group_commits`` when
the backend commits concurrent appends together and exposes an integer ``commits``
counter of append transactions; the concurrency check then asserts it grouped them.

One section per Protocol of :mod:`roomsync.storage.base`, each a class of its own;
:class:`StoreContract` is all of them. The checks follow the invariants stated there:

- :class:`LifecycleContract` (``StoreLifecycle``): idempotent open and close, a closed
  store refuses, reopening brings the data back.
- :class:`RoomCatalogContract` (``RoomCatalog``): a room never written is not stored and
  its first write creates it; records round-trip; ``put_room`` never moves ``head`` or
  ``compacted_through``, also between concurrent appends; listing pages; the ticking
  rooms; deletion.
- :class:`OpLogContract` (``OpLog``): state with seqs and tombstones, gap-free op log,
  group commit, batches of several rooms in one call (``append_batches`` and
  ``append_batches_now``: each fenced on its own, one transaction), fencing (a stale
  ``expected_head`` is refused with ``StoreConflict`` and writes nothing, of two
  appends with the same expected head exactly one wins, a gap is refused), and
  compaction whose base snapshot plus the remaining log replays (with
  :mod:`roomsync.core.merge`) to exactly the state table.
- :class:`BlobRefsContract` (``BlobRefs``): references are room-scoped, go with their
  room, and page in order, each hash once.
- :class:`RevocationsContract` (``Revocations``): by ``sub`` and by ``jti``, expiry,
  re-revoking, paging, refusals, and they survive a reopen and room deletion.
- :class:`QueryRunContract` (``QuerySpecs.run_query``): the answers of
  :mod:`roomsync.core.query` on concrete rooms: JSON types kept apart, numbers as
  doubles, pointers into objects and arrays, values that are not JSON, the order with its
  ranks, projection, paging through cursors and their refusals.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import replace
from typing import ClassVar, cast

import pytest

from ..core.entries import Change
from ..core.merge import live_items, merge_into, wins
from ..core.query import QueryCursorError, parse_spec
from ..storage.base import (
    REVOCATION_KINDS,
    AppendBatch,
    ArchiveRecord,
    ProposalRecord,
    Revocation,
    RevocationKind,
    RoomRecord,
    Store,
    StoreConflict,
    StoreError,
    all_blob_refs,
    lineage,
)

__all__ = [
    "ArchivesContract",
    "BlobRefsContract",
    "LifecycleContract",
    "OpLogContract",
    "ProposalsContract",
    "QueryRunContract",
    "QuerySpecsContract",
    "ReplaceStateContract",
    "RevocationsContract",
    "RoomCatalogContract",
    "SettingsContract",
    "StoreContract",
    "change",
    "replay",
]

_U64_MAX = (1 << 64) - 1


def change(
    seq: int,
    path: str,
    value: bytes | None,
    *,
    ts: int | None = None,
    counter: int = 0,
    actor: str = "a",
) -> Change:
    """A change with ``seq``; ``ts`` defaults to ``1000 + seq`` so later seqs win."""
    return Change(path, 1000 + seq if ts is None else ts, counter, actor, value, seq)


def replay(base: list[Change], log: list[Change]) -> dict[str, Change]:
    """The state ``base + log`` gives under the LWW rule, tombstones included."""
    state: dict[str, Change] = {}
    merge_into(state, base)
    merge_into(state, log)
    return state


async def _all_changes(store: Store, room: str, since: int = 0) -> list[Change]:
    return await store.changes_since(room, since, limit=1_000_000)


async def _state(store: Store, room: str) -> dict[str, Change]:
    loaded = await store.load_room(room, now_ms=0)
    return {c.path: c for c in loaded.entries}


class LifecycleContract:
    """``StoreLifecycle``: open, close, check."""

    async def test_open_is_idempotent(self, store: Store) -> None:
        await store.load_room("r", now_ms=5)
        await store.append("r", [change(1, "/x", b"1")], expected_head=0)
        await store.open()
        await store.open()
        await store.check()
        loaded = await store.load_room("r", now_ms=99)
        assert loaded.record.head == 1
        assert loaded.entries == [change(1, "/x", b"1")]

    async def test_check_passes_on_open_store(self, store: Store) -> None:
        await store.check()
        await store.check()

    async def test_closed_store_refuses_then_reopens(self, store: Store) -> None:
        await store.load_room("r", now_ms=1)
        await store.append("r", [change(1, "/x", b"1")], expected_head=0)
        await store.close()
        await store.close()
        with pytest.raises(StoreError):
            await store.check()
        with pytest.raises(StoreError):
            await store.append("r", [change(2, "/x", b"2")], expected_head=1)
        await store.open()
        assert (await store.load_room("r", now_ms=1)).record.head == 1


class RoomCatalogContract:
    """``RoomCatalog``: room records; a room never written costs nothing."""

    async def test_load_room_of_unknown_room_writes_nothing(self, store: Store) -> None:
        assert await store.get_room("new") is None
        loaded = await store.load_room("new", now_ms=1234)
        assert loaded.record == RoomRecord(room="new", created_ms=1234)
        assert loaded.entries == []
        # Nothing was stored: not listed, no record, and a later load is as new.
        assert await store.get_room("new") is None
        assert await store.list_rooms() == []
        again = await store.load_room("new", now_ms=9999)
        assert again.record == RoomRecord(room="new", created_ms=9999)
        assert await _all_changes(store, "new") == []
        assert await store.base_snapshot("new") == []
        assert await all_blob_refs(store) == set()
        assert await store.delete_room("new") is False

    async def test_append_to_a_never_loaded_room_creates_it(self, store: Store) -> None:
        batch = [change(1, "/a", b"1"), change(2, "/b", None)]
        await store.append("fresh", batch, expected_head=0)
        record = await store.get_room("fresh")
        assert record is not None
        assert (record.room, record.head, record.compacted_through) == ("fresh", 2, 0)
        assert isinstance(record.created_ms, int)
        assert [r.room for r in await store.list_rooms()] == ["fresh"]
        loaded = await store.load_room("fresh", now_ms=record.created_ms + 5000)
        assert loaded.record == record  # the stored record, not a new one
        assert loaded.entries == batch
        assert await _all_changes(store, "fresh") == batch
        await store.append("fresh", [change(3, "/a", b"3")], expected_head=2)
        again = await store.get_room("fresh")
        assert again is not None and (again.head, again.created_ms) == (3, record.created_ms)

    async def test_refused_first_append_creates_nothing(self, store: Store) -> None:
        await store.load_room("late", now_ms=1)
        for bad in ([change(2, "/a", b"gap")], [change(1, "/a", b"1"), change(3, "/b", b"gap")]):
            with pytest.raises(StoreError):
                await store.append("late", bad, expected_head=0)
        with pytest.raises(StoreConflict):  # a room never written has head 0
            await store.append("late", [change(2, "/a", b"stale")], expected_head=1)
        assert await store.get_room("late") is None
        assert await store.list_rooms() == []
        assert await _all_changes(store, "late") == []

    async def test_put_and_get_room(self, store: Store) -> None:
        policy: dict[str, object] = {"max_peers": 5, "rate": {"burst": [1, 2]}, "anon": True}
        record = RoomRecord("p", created_ms=7, locked=True, closed=True, policy=policy)
        await store.put_room(record)
        got = await store.get_room("p")
        assert got == record
        # Neither the caller's dict nor a returned one aliases the stored policy.
        policy["max_peers"] = 6
        assert got is not None
        got.policy["anon"] = False
        assert await store.get_room("p") == RoomRecord(
            "p",
            created_ms=7,
            locked=True,
            closed=True,
            policy={"max_peers": 5, "rate": {"burst": [1, 2]}, "anon": True},
        )
        await store.put_room(RoomRecord("p", created_ms=8))
        assert await store.get_room("p") == RoomRecord("p", created_ms=8)

    async def test_put_room_never_moves_head_or_compaction(self, store: Store) -> None:
        await store.put_room(RoomRecord("h", created_ms=1, head=50, compacted_through=40))
        fresh = await store.get_room("h")
        assert fresh is not None and (fresh.head, fresh.compacted_through) == (0, 0)
        await store.append("h", [change(1, "/a", b"1"), change(2, "/b", b"2")], expected_head=0)
        await store.compact("h", 1)
        await store.put_room(RoomRecord("h", created_ms=2, locked=True, head=0))
        got = await store.get_room("h")
        assert got is not None
        assert (got.head, got.compacted_through, got.locked, got.created_ms) == (2, 1, True, 2)
        assert len((await store.load_room("h", now_ms=0)).entries) == 2

    async def test_list_rooms_orders_by_id_with_limit_and_cursor(self, store: Store) -> None:
        names = ["m", "a.1", "Z", "b-2", "a", "_x", "a_0"]
        for i, name in enumerate(names):
            await store.put_room(RoomRecord(name, created_ms=i))
        expected = sorted(names)
        assert [r.room for r in await store.list_rooms()] == expected
        pages: list[str] = []
        cursor: str | None = None
        while True:
            page = await store.list_rooms(limit=3, cursor=cursor)
            if not page:
                break
            assert len(page) <= 3
            pages += [r.room for r in page]
            cursor = page[-1].room
        assert pages == expected
        after = expected.index("a_0") + 1
        assert [r.room for r in await store.list_rooms(cursor="a_0")] == expected[after:]
        assert await store.list_rooms(limit=0) == []
        listed = {r.room: r for r in await store.list_rooms()}
        assert listed["m"] == RoomRecord("m", created_ms=0)

    async def test_delete_room_removes_state_log_and_base(self, store: Store) -> None:
        await store.load_room("d", now_ms=1)
        await store.load_room("keep", now_ms=1)
        await store.append("d", [change(1, "/a", b"1"), change(2, "/b", b"2")], expected_head=0)
        await store.append("keep", [change(1, "/a", b"k")], expected_head=0)
        await store.compact("d", 1)
        assert await store.delete_room("d") is True
        assert await store.delete_room("d") is False
        assert await store.get_room("d") is None
        assert await _all_changes(store, "d") == []
        assert await store.base_snapshot("d") == []
        assert [r.room for r in await store.list_rooms()] == ["keep"]
        reborn = await store.load_room("d", now_ms=2)
        assert (reborn.record.head, reborn.record.created_ms, reborn.entries) == (0, 2, [])
        await store.append("d", [change(1, "/a", b"again")], expected_head=0)
        assert (await store.load_room("keep", now_ms=0)).entries == [change(1, "/a", b"k")]

    async def test_ticking_rooms_lists_the_rooms_with_a_timer(self, store: Store) -> None:
        assert await store.ticking_rooms() == []
        ticking = RoomRecord("t", created_ms=1, tick_n=7, tick_interval_ms=250, tick_at_ms=9)
        await store.put_room(ticking)
        await store.put_room(RoomRecord("still", created_ms=1, tick_n=3))
        await store.put_room(RoomRecord("a", created_ms=1, tick_interval_ms=10, node="n2"))
        assert [r.room for r in await store.ticking_rooms()] == ["a", "t"]
        assert (await store.ticking_rooms())[1] == ticking
        await store.put_room(replace(ticking, tick_interval_ms=0))
        await store.delete_room("a")
        assert await store.ticking_rooms() == []

    async def test_put_room_between_appends_never_moves_the_head(self, store: Store) -> None:
        await store.put_room(RoomRecord("race", created_ms=1))
        calls = []
        for i in range(12):
            batch = [change(i + 1, f"/{i % 5}", b"%d" % i)]
            calls.append(store.append("race", batch, expected_head=i))
            # A record read before the append, written back after it: its head is stale.
            stale = RoomRecord("race", created_ms=2, locked=True, head=i, compacted_through=i)
            calls.append(store.put_room(stale))
        await asyncio.gather(*calls)
        got = await store.get_room("race")
        assert got is not None
        assert (got.head, got.compacted_through, got.locked, got.created_ms) == (12, 0, True, 2)
        await store.append("race", [change(13, "/x", b"x")], expected_head=12)


class OpLogContract:
    """``OpLog``: fenced appends, state and op log, group commit, compaction."""

    #: The backend groups concurrent appends and counts transactions in ``store.commits``.
    group_commits: ClassVar[bool] = False

    async def test_append_then_load_returns_entries_with_seqs(self, store: Store) -> None:
        await store.load_room("r", now_ms=1)
        batch = [
            change(1, "/todos/1/title", b'"milk"'),
            change(2, "/todos/2/title", b'"eggs"'),
            change(3, "/empty", b""),
            change(4, "/todos/1/title", b'"oat milk"'),
            change(5, "/todos/2/title", None),
        ]
        await store.append("r", batch, expected_head=0)
        loaded = await store.load_room("r", now_ms=1)
        assert loaded.record.head == 5
        assert loaded.entries == [
            change(3, "/empty", b""),
            change(4, "/todos/1/title", b'"oat milk"'),
            change(5, "/todos/2/title", None),
        ]
        assert loaded.entries[1].value == b'"oat milk"'
        assert loaded.entries[2].deleted and not loaded.entries[0].deleted

    async def test_entries_keep_the_full_change(self, store: Store) -> None:
        await store.load_room("r", now_ms=1)
        big = bytes(range(256)) * 400
        writes = [
            Change("/ü/ñ", _U64_MAX, 0xFFFF_FFFF, "actor-ü", big, 1),
            Change("/t", (1 << 63) + 5, 3, "", b"\x00", 2),
            Change("/t2", 0, 0, "z" * 200, None, 3),
        ]
        await store.append("r", writes, expected_head=0)
        assert await _all_changes(store, "r") == writes
        assert (await store.load_room("r", now_ms=1)).entries == sorted(
            writes, key=lambda c: c.path
        )

    async def test_changes_since_in_seq_order_with_limit(self, store: Store) -> None:
        await store.load_room("r", now_ms=1)
        await store.load_room("other", now_ms=1)
        first = [change(s, f"/k{s % 3}", b"%d" % s) for s in range(1, 8)]
        second = [change(s, f"/k{s % 4}", None if s % 2 else b"v") for s in range(8, 13)]
        await store.append("r", first, expected_head=0)
        await store.append("other", [change(1, "/o", b"o")], expected_head=0)
        await store.append("r", second, expected_head=7)
        everything = first + second
        assert await _all_changes(store, "r") == everything
        assert await store.changes_since("r", 0, limit=4) == everything[:4]
        assert await store.changes_since("r", 4, limit=4) == everything[4:8]
        assert await store.changes_since("r", 10, limit=100) == everything[10:]
        assert await store.changes_since("r", 12, limit=100) == []
        assert await store.changes_since("r", 0, limit=0) == []
        assert await store.changes_since("missing", 0, limit=10) == []

    async def test_head_moves_with_each_append(self, store: Store) -> None:
        assert (await store.load_room("r", now_ms=1)).record.head == 0
        seq = 0
        for size in (1, 3, 2):
            batch = [change(seq + i + 1, f"/p{i}", b"x") for i in range(size)]
            await store.append("r", batch, expected_head=seq)
            seq += size
            record = await store.get_room("r")
            assert record is not None and record.head == seq
        await store.append("r", [], expected_head=seq)
        record = await store.get_room("r")
        assert record is not None and record.head == seq == 6

    async def test_append_refuses_bad_seqs(self, store: Store) -> None:
        with pytest.raises(StoreError):
            await store.append("ghost", [change(2, "/a", b"no seq 1")], expected_head=0)
        assert await store.get_room("ghost") is None
        await store.load_room("r", now_ms=1)
        await store.append("r", [change(1, "/a", b"1")], expected_head=0)
        bad_batches = [
            [change(3, "/a", b"gap")],
            [change(1, "/a", b"replay")],
            [change(2, "/a", b"ok"), change(4, "/b", b"gap inside")],
            [Change("/a", 5000, 0, "a", b"no seq")],
        ]
        for bad in bad_batches:
            with pytest.raises(StoreError) as refused:
                await store.append("r", bad, expected_head=1)
            assert not isinstance(refused.value, StoreConflict)  # the batch's fault
        # A refused batch writes nothing, not even its valid prefix.
        assert await _all_changes(store, "r") == [change(1, "/a", b"1")]
        assert (await store.load_room("r", now_ms=1)).entries == [change(1, "/a", b"1")]
        await store.append("r", [change(2, "/a", b"2")], expected_head=1)
        assert (await store.load_room("r", now_ms=1)).record.head == 2

    async def test_refused_batch_does_not_fail_its_neighbours(self, store: Store) -> None:
        for room in ("a", "b"):
            await store.load_room(room, now_ms=1)
        results = await asyncio.gather(
            store.append("a", [change(1, "/x", b"1")], expected_head=0),
            store.append("b", [change(7, "/x", b"gap")], expected_head=0),
            store.append("a", [change(2, "/y", b"2")], expected_head=1),
            store.append("ghost", [change(2, "/x", b"stale")], expected_head=1),
            store.append("b", [change(1, "/x", b"1")], expected_head=0),
            return_exceptions=True,
        )
        assert [type(r) for r in results] == [
            type(None),
            StoreError,
            type(None),
            StoreConflict,
            type(None),
        ]
        assert [c.seq for c in await _all_changes(store, "a")] == [1, 2]
        assert [c.seq for c in await _all_changes(store, "b")] == [1]
        assert await store.get_room("ghost") is None

    async def test_concurrent_appends_are_all_durable_and_grouped(self, store: Store) -> None:
        rooms = [f"g{i}" for i in range(8)]
        batches, size = 12, 5
        for room in rooms:
            await store.load_room(room, now_ms=1)
        commits_before = getattr(store, "commits", 0)
        # Tasks start in creation order, so each room's batches arrive in seq order.
        tasks = [
            asyncio.ensure_future(
                store.append(
                    room,
                    [change(b * size + i + 1, f"/{b}/{i}", room.encode()) for i in range(size)],
                    expected_head=b * size,
                )
            )
            for b in range(batches)
            for room in rooms
        ]
        await asyncio.gather(*tasks)
        for room in rooms:
            loaded = await store.load_room(room, now_ms=1)
            assert loaded.record.head == batches * size
            assert len(loaded.entries) == batches * size
            seqs = [c.seq for c in await _all_changes(store, room)]
            assert seqs == list(range(1, batches * size + 1))
        if self.group_commits:
            commits = getattr(store, "commits", 0) - commits_before
            assert 0 < commits < len(tasks)

    # -- batches of several rooms in one call ------------------------------------------

    async def test_append_batches_commits_every_room_in_one_transaction(self, store: Store) -> None:
        await store.append("b", [change(1, "/x", b"1")], expected_head=0)
        commits_before = getattr(store, "commits", None)
        batches = [
            AppendBatch("a", [change(1, "/x", b"a1"), change(2, "/y", b"a2")], 0),
            AppendBatch("b", [change(2, "/x", b"b2")], 1),
            AppendBatch("a", [change(3, "/x", None)], 2),  # after the first, in order
            AppendBatch("c", [], 0),  # empty: None, and nothing stored
        ]
        assert await store.append_batches(batches) == [None, None, None, None]
        assert [c.seq for c in await _all_changes(store, "a")] == [1, 2, 3]
        assert await _state(store, "a") == {
            "/x": change(3, "/x", None),
            "/y": change(2, "/y", b"a2"),
        }
        assert await _all_changes(store, "b") == [change(1, "/x", b"1"), change(2, "/x", b"b2")]
        for room, head in (("a", 3), ("b", 2)):
            record = await store.get_room(room)
            assert record is not None and record.head == head
        assert await store.get_room("c") is None
        if commits_before is not None:  # a backend that counts its transactions
            assert getattr(store, "commits", 0) - commits_before == 1
        assert await store.append_batches([]) == []

    async def test_append_batches_refuses_a_batch_alone(self, store: Store) -> None:
        await store.append("a", [change(1, "/x", b"1")], expected_head=0)
        outcomes = await store.append_batches(
            [
                AppendBatch("a", [change(1, "/x", b"stale")], 0),  # the head moved: conflict
                AppendBatch("b", [change(1, "/x", b"b1")], 0),
                AppendBatch("new", [change(2, "/x", b"gap")], 0),  # bad seqs
                AppendBatch("a", [change(2, "/y", b"a2")], 1),
                AppendBatch("ghost", [change(4, "/x", b"x")], 3),  # never written: conflict
            ]
        )
        assert [type(o) for o in outcomes] == [
            StoreConflict,
            type(None),
            StoreError,
            type(None),
            StoreConflict,
        ]
        conflict = outcomes[0]
        assert isinstance(conflict, StoreConflict)
        assert (conflict.room, conflict.expected, conflict.actual) == ("a", 0, 1)
        assert [c.value for c in await _all_changes(store, "a")] == [b"1", b"a2"]
        assert await _all_changes(store, "b") == [change(1, "/x", b"b1")]
        assert await store.get_room("new") is None and await store.get_room("ghost") is None

    async def test_append_batches_now_commits_at_once_or_writes_nothing(self, store: Store) -> None:
        batches = [
            AppendBatch("n1", [change(1, "/x", b"1")], 0),
            AppendBatch("n2", [change(1, "/x", b"2"), change(2, "/y", b"3")], 0),
            AppendBatch("n3", [change(5, "/x", b"gap")], 0),
        ]
        outcomes = store.append_batches_now(batches)
        if outcomes is None:  # the backend cannot commit right here: nothing was written
            assert await store.list_rooms() == []
            outcomes = await store.append_batches(batches)
        assert outcomes[:2] == [None, None] and isinstance(outcomes[2], StoreError)
        assert [c.seq for c in await _all_changes(store, "n2")] == [1, 2]
        assert [c.value for c in await _all_changes(store, "n1")] == [b"1"]
        assert await store.get_room("n3") is None

    # -- fencing: the store is the seq authority ---------------------------------------

    async def test_stale_expected_head_is_refused_and_writes_nothing(self, store: Store) -> None:
        first = [change(1, "/a", b"1"), change(2, "/b", b"2")]
        await store.append("f", first, expected_head=0)
        for stale in (0, 1, 3, 50):
            batch = [change(stale + 1, "/a", b"stale"), change(stale + 2, "/c", b"stale")]
            with pytest.raises(StoreConflict) as conflict:
                await store.append("f", batch, expected_head=stale)
            error = conflict.value
            assert (error.room, error.expected, error.actual) == ("f", stale, 2)
            message = str(error)
            assert "'f'" in message and f"expected head {stale}" in message
            assert "has 2" in message
        assert await _all_changes(store, "f") == first
        assert await _state(store, "f") == {c.path: c for c in first}
        record = await store.get_room("f")
        assert record is not None and record.head == 2
        await store.append("f", [change(3, "/c", b"3")], expected_head=2)
        assert [c.seq for c in await _all_changes(store, "f")] == [1, 2, 3]

    async def test_stale_first_append_creates_nothing(self, store: Store) -> None:
        with pytest.raises(StoreConflict) as conflict:
            await store.append("new", [change(4, "/a", b"x")], expected_head=3)
        assert (conflict.value.expected, conflict.value.actual) == (3, 0)
        assert await store.get_room("new") is None
        assert await store.list_rooms() == []

    async def test_same_expected_head_exactly_one_wins(self, store: Store) -> None:
        """Two writers (two nodes) that both believe the head is ``h``: one commits, the
        other gets StoreConflict; the op log holds the winner's changes only."""
        head = 0
        for round_ in range(6):
            room = "w"
            batches = [
                [change(head + 1, "/doc", b"A%d" % round_, actor="node-a")],
                [
                    change(head + 1, "/doc", b"B%d" % round_, actor="node-b"),
                    change(head + 2, "/other", b"B", actor="node-b"),
                ],
            ]
            if round_ % 2:
                batches.reverse()
            results = await asyncio.gather(
                *(store.append(room, b, expected_head=head) for b in batches),
                return_exceptions=True,
            )
            winners = [b for b, r in zip(batches, results, strict=True) if r is None]
            losers = [r for r in results if r is not None]
            assert len(winners) == 1 and len(losers) == 1, results
            assert isinstance(losers[0], StoreConflict)
            assert losers[0].expected == head
            assert losers[0].actual == head + len(winners[0])
            assert await store.changes_since(room, head, limit=100) == winners[0]
            head += len(winners[0])
            record = await store.get_room(room)
            assert record is not None and record.head == head
        seqs = [c.seq for c in await _all_changes(store, "w")]
        assert seqs == list(range(1, head + 1))

    async def test_same_expected_head_on_a_new_room_exactly_one_creates_it(
        self, store: Store
    ) -> None:
        results = await asyncio.gather(
            *(
                store.append(
                    "born", [change(1, "/who", actor.encode(), actor=actor)], expected_head=0
                )
                for actor in ("a", "b", "c")
            ),
            return_exceptions=True,
        )
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, StoreConflict) for r in results if r is not None)
        assert [r.room for r in await store.list_rooms()] == ["born"]
        assert len(await _all_changes(store, "born")) == 1

    async def test_a_gap_is_refused(self, store: Store) -> None:
        await store.append("g", [change(1, "/a", b"1")], expected_head=0)
        bad_batches = [
            [change(3, "/a", b"skips 2")],
            [change(2, "/a", b"ok"), change(4, "/b", b"skips 3")],
            [change(2, "/a", b"ok"), change(2, "/b", b"repeats 2")],
            [change(2, "/a", b"ok"), change(1, "/b", b"goes back")],
        ]
        for bad in bad_batches:
            with pytest.raises(StoreError) as refused:
                await store.append("g", bad, expected_head=1)
            assert not isinstance(refused.value, StoreConflict)
        # seqs that do not follow the *declared* head are refused, even where they would
        # follow the stored one, and so is a negative head
        with pytest.raises(StoreError):
            await store.append("g", [change(2, "/a", b"x")], expected_head=0)
        with pytest.raises(StoreError):
            await store.append("g", [change(0, "/a", b"x")], expected_head=-1)
        assert await _all_changes(store, "g") == [change(1, "/a", b"1")]
        record = await store.get_room("g")
        assert record is not None and record.head == 1

    # -- compaction ---------------------------------------------------------------------

    async def test_compact_folds_drops_and_purges(self, store: Store) -> None:
        await store.load_room("c", now_ms=1)
        before = [
            change(1, "/a", b"a1"),
            change(2, "/b", b"b1"),
            change(3, "/e", b"e1"),
            change(4, "/a", None),
            change(5, "/e", None),
            change(6, "/b", b"b2"),
        ]
        after = [
            change(7, "/b", None),
            change(8, "/e", b"e2"),
            change(9, "/c", b"c1"),
            change(10, "/c", None),
        ]
        await store.append("c", before, expected_head=0)
        await store.append("c", after, expected_head=6)
        assert await store.compact("c", 6) == 6
        assert await store.base_snapshot("c") == [change(6, "/b", b"b2")]
        assert await _all_changes(store, "c") == after
        loaded = await store.load_room("c", now_ms=1)
        assert (loaded.record.head, loaded.record.compacted_through) == (10, 6)
        state = {c.path: c for c in loaded.entries}
        # /a's tombstone (seq 4 <= 6) is purged; /b's (7) and /c's (10) are kept.
        assert state == {
            "/b": change(7, "/b", None),
            "/c": change(10, "/c", None),
            "/e": change(8, "/e", b"e2"),
        }
        rebuilt = replay(await store.base_snapshot("c"), await _all_changes(store, "c", 6))
        assert rebuilt == state
        assert live_items(rebuilt) == live_items(state) == {"/e": change(8, "/e", b"e2")}

        assert await store.compact("c", 6) == 0
        assert await store.compact("c", 3) == 0
        assert await store.compact("c", 1000) == 4  # clamped to head
        assert await store.base_snapshot("c") == [change(8, "/e", b"e2")]
        assert await _all_changes(store, "c") == []
        loaded = await store.load_room("c", now_ms=1)
        assert loaded.record.compacted_through == 10
        assert loaded.entries == [change(8, "/e", b"e2")]
        await store.append("c", [change(11, "/a", b"a2")], expected_head=10)
        assert await _all_changes(store, "c", 10) == [change(11, "/a", b"a2")]

    async def test_compact_unknown_room_raises(self, store: Store) -> None:
        with pytest.raises(StoreError):
            await store.compact("ghost", 1)

    async def test_compact_empty_room_is_a_no_op(self, store: Store) -> None:
        await store.put_room(RoomRecord("e", created_ms=1))
        assert await store.compact("e", 10) == 0
        record = await store.get_room("e")
        assert record is not None and record.compacted_through == 0

    async def test_random_histories_replay_to_the_state(self, store: Store) -> None:
        """State == base + remaining log under LWW, through any appends and compactions."""
        rng = random.Random(20240611)
        paths = [f"/doc/{i}" for i in range(12)]
        actors = ["ann", "bob", "cy"]
        for round_ in range(4):
            room = f"rand{round_}"
            await store.load_room(room, now_ms=1)
            model: dict[str, Change] = {}
            head = 0
            for _step in range(25):
                before_batch = head
                batch: list[Change] = []
                for _ in range(rng.randint(1, 6)):
                    candidate = Change(
                        rng.choice(paths),
                        rng.randint(1, 60),
                        rng.randint(0, 2),
                        rng.choice(actors),
                        None if rng.random() < 0.3 else rng.randbytes(rng.randint(0, 8)),
                    )
                    if wins(candidate, model.get(candidate.path)):  # callers pass winners only
                        head += 1
                        accepted = candidate.with_seq(head)
                        model[accepted.path] = accepted
                        batch.append(accepted)
                await store.append(room, batch, expected_head=before_batch)
                if rng.random() < 0.25:
                    through = rng.randint(0, head)
                    record = await store.get_room(room)
                    assert record is not None
                    before = record.compacted_through
                    removed = await store.compact(room, through)
                    assert removed == max(0, through - before)
                    purged = [p for p, c in model.items() if c.deleted and (c.seq or 0) <= through]
                    for path in purged:
                        del model[path]
                record = await store.get_room(room)
                assert record is not None and record.head == head
                state = await _state(store, room)
                assert state == model
                base = await store.base_snapshot(room)
                assert all(not c.deleted for c in base)
                log = await _all_changes(store, room, record.compacted_through)
                assert replay(base, log) == state


class BlobRefsContract:
    """``BlobRefs``: room-scoped references, paged for garbage collection."""

    async def test_blob_ref_to_a_never_loaded_room_creates_it(self, store: Store) -> None:
        h = "sha256:" + "c" * 64
        await store.load_room("b", now_ms=1)
        await store.add_blob_ref("b", h, 3, now_ms=77)
        record = await store.get_room("b")
        assert record == RoomRecord("b", created_ms=77)
        assert [r.room for r in await store.list_rooms()] == ["b"]
        assert await store.has_blob_ref("b", h)
        assert await store.delete_room("b") is True
        assert await all_blob_refs(store) == set()

    async def test_blob_refs_are_room_scoped_and_go_with_the_room(self, store: Store) -> None:
        h1, h2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64
        await store.load_room("r1", now_ms=1)
        await store.load_room("r2", now_ms=1)
        await store.add_blob_ref("r1", h1, 10, now_ms=5)
        await store.add_blob_ref("r1", h1, 10, now_ms=6)  # idempotent
        await store.add_blob_ref("r2", h2, 20, now_ms=5)
        assert await store.has_blob_ref("r1", h1)
        assert not await store.has_blob_ref("r2", h1)
        assert await all_blob_refs(store) == {h1, h2}
        assert await store.delete_room("r1")
        assert not await store.has_blob_ref("r1", h1)
        assert await all_blob_refs(store) == {h2}

    async def test_blob_refs_page_in_order_each_hash_once(self, store: Store) -> None:
        assert await store.blob_refs(limit=10) == ([], None)
        hashes = [f"sha256:{i:064x}" for i in range(25)]
        for i, h in enumerate(hashes):
            await store.add_blob_ref(f"room{i % 3}", h, i, now_ms=i)
            if i % 4 == 0:  # the same blob in another room is still one hash
                await store.add_blob_ref(f"room{(i + 1) % 3}", h, i, now_ms=i)
        for limit in (1, 4, 5, 25, 100):
            seen: list[str] = []
            cursor: str | None = None
            pages = 0
            while True:
                page, cursor = await store.blob_refs(limit=limit, cursor=cursor)
                pages += 1
                assert 0 < len(page) <= limit
                seen += page
                if cursor is None:
                    break
                assert cursor == page[-1]
            assert seen == sorted(hashes)
            assert pages == -(-len(hashes) // limit)  # no empty page at the end
        assert await store.blob_refs(limit=3, cursor=hashes[-1]) == ([], None)
        assert await store.blob_refs(limit=2, cursor=hashes[10]) == (hashes[11:13], hashes[12])
        assert await all_blob_refs(store, page=7) == set(hashes)
        assert await all_blob_refs(store) == set(hashes)
        for bad in (0, -1):
            with pytest.raises(ValueError):
                await store.blob_refs(limit=bad)


class RevocationsContract:
    """``Revocations``: revoked subjects and token ids, shared by every node on a store."""

    async def test_revoke_by_sub_and_by_jti(self, store: Store) -> None:
        assert not await store.is_revoked("alice", "t1", now_ms=1)
        assert await store.add_revocation("sub", "alice", now_ms=10) is True
        assert await store.add_revocation("sub", "alice", now_ms=11) is False
        assert await store.is_revoked("alice", None, now_ms=12)
        assert await store.is_revoked("alice", "any-token", now_ms=12)
        assert not await store.is_revoked(None, "alice", now_ms=12)  # the kind matters
        assert not await store.is_revoked("bob", "t1", now_ms=12)
        assert await store.add_revocation("jti", "t1", now_ms=13) is True
        assert await store.is_revoked("bob", "t1", now_ms=14)
        assert await store.is_revoked(None, "t1", now_ms=14)
        assert not await store.is_revoked("t1", None, now_ms=14)
        assert not await store.is_revoked(None, None, now_ms=14)
        listed, cursor = await store.list_revocations()
        assert listed == [Revocation("jti", "t1", 13), Revocation("sub", "alice", 10)]
        assert cursor is None

    async def test_revocations_expire_and_extend(self, store: Store) -> None:
        assert await store.add_revocation("jti", "t2", now_ms=10, expires_ms=1000)
        assert await store.is_revoked(None, "t2", now_ms=999)
        assert not await store.is_revoked(None, "t2", now_ms=1000)
        # Revoking again while it applies keeps the longer expiry (and its created_ms).
        assert await store.add_revocation("jti", "t2", now_ms=500, expires_ms=2000) is False
        assert await store.add_revocation("jti", "t2", now_ms=600, expires_ms=1200) is False
        assert await store.is_revoked(None, "t2", now_ms=1999)
        assert not await store.is_revoked(None, "t2", now_ms=2000)
        assert (await store.list_revocations())[0] == [Revocation("jti", "t2", 10, 2000)]
        assert await store.add_revocation("jti", "t2", now_ms=700) is False  # now for good
        assert await store.is_revoked(None, "t2", now_ms=10**15)
        assert await store.add_revocation("jti", "t2", now_ms=800, expires_ms=900) is False
        assert (await store.list_revocations())[0] == [Revocation("jti", "t2", 10, None)]
        # Once lapsed, revoking again is a new revocation.
        assert await store.add_revocation("sub", "carol", now_ms=0, expires_ms=100)
        assert not await store.is_revoked("carol", None, now_ms=150)
        assert await store.add_revocation("sub", "carol", now_ms=200, expires_ms=300) is True
        assert await store.is_revoked("carol", None, now_ms=250)
        listed, _ = await store.list_revocations()
        assert Revocation("sub", "carol", 200, 300) in listed

    async def test_list_revocations_pages_by_kind_and_value(self, store: Store) -> None:
        assert await store.list_revocations() == ([], None)
        added: list[Revocation] = []
        for i, value in enumerate(["zed", "a:b", "b", "a", "a:", "ü", "A"]):
            for kind in REVOCATION_KINDS:
                if (i + len(kind) + (kind == "sub")) % 3:
                    now = 100 + i
                    expires = None if i % 2 else now + 5
                    new = await store.add_revocation(kind, value, now_ms=now, expires_ms=expires)
                    assert new
                    added.append(Revocation(kind, value, now, expires))
        expected = sorted(added, key=lambda r: (r.kind, r.value))
        for limit in (1, 2, 3, len(expected), 100):
            seen: list[Revocation] = []
            cursor: str | None = None
            while True:
                page, cursor = await store.list_revocations(limit=limit, cursor=cursor)
                assert 0 < len(page) <= limit
                seen += page
                if cursor is None:
                    break
            assert seen == expected  # expired ones are listed too, with their expiry
        for bad in (0, -3):
            with pytest.raises(ValueError):
                await store.list_revocations(limit=bad)
        with pytest.raises(ValueError):
            await store.list_revocations(cursor="not-a-cursor")

    async def test_bad_revocations_are_refused_and_write_nothing(self, store: Store) -> None:
        with pytest.raises(ValueError):
            await store.add_revocation(cast(RevocationKind, "room"), "r", now_ms=1)
        with pytest.raises(ValueError):
            await store.add_revocation("sub", "", now_ms=1)
        assert await store.list_revocations() == ([], None)

    async def test_revocations_survive_reopen_and_room_deletion(self, store: Store) -> None:
        await store.append("r", [change(1, "/a", b"1")], expected_head=0)
        await store.add_revocation("sub", "mallory", now_ms=5)
        await store.add_revocation("jti", "tok", now_ms=6, expires_ms=10**13)
        assert await store.delete_room("r")
        await store.close()
        await store.open()
        assert await store.is_revoked("mallory", None, now_ms=7)
        assert await store.is_revoked(None, "tok", now_ms=7)
        assert len((await store.list_revocations())[0]) == 2


def _archive(ref_n: int, room: str, *, parent: str | None = None) -> ArchiveRecord:
    chunks = _chunks(ref_n)
    return ArchiveRecord(
        ref=f"sha256:{ref_n:064x}",
        room=room,
        head=ref_n,
        root="00" * 32,
        count=ref_n,
        size=sum(len(c) for c in chunks),
        chunks=len(chunks),
        created_ms=100 + ref_n,
        parent=parent,
    )


def _chunks(ref_n: int) -> list[bytes]:
    return [b"header-%d" % ref_n, b"\x00" * (ref_n % 5), b"body-%d" % ref_n]


class ReplaceStateContract:
    """``OpLog.replace_state``: a whole state replaced at once (restore, fork), fenced."""

    async def test_replace_state_reseqs_compacts_and_moves_head(self, store: Store) -> None:
        await store.append("r", [change(1, "/a", b"1"), change(2, "/b", b"2")], expected_head=0)
        await store.append("r", [change(3, "/a", None)], expected_head=2)
        restored = [
            Change("/x", 10, 0, "p", b"x"),
            Change("/gone", 11, 0, "p", None),  # tombstones are dropped
            Change("/y", 12, 1, "q", b"y"),
        ]
        head = await store.replace_state("r", restored, expected_head=3)
        assert head == 3 + 2 + 1
        record = await store.get_room("r")
        assert record is not None
        assert (record.head, record.compacted_through) == (6, 6)
        assert await _state(store, "r") == {
            "/x": Change("/x", 10, 0, "p", b"x", 4),
            "/y": Change("/y", 12, 1, "q", b"y", 5),
        }
        assert await _all_changes(store, "r") == []
        assert sorted(c.path for c in await store.base_snapshot("r")) == ["/x", "/y"]
        # The log continues after the new head.
        await store.append("r", [change(7, "/z", b"z")], expected_head=6)
        assert [c.seq for c in await _all_changes(store, "r")] == [7]

    async def test_replace_state_rewrites_only_what_differs(self, store: Store) -> None:
        await store.append(
            "r",
            [change(1, "/a", b"1"), change(2, "/b", b"2"), change(3, "/c", b"3")],
            expected_head=0,
        )
        restored = [
            Change("/c", 1003, 0, "a", b"3"),  # as the room holds it: keeps seq 3
            Change("/b", 1002, 0, "a", b"other"),  # another value: a new seq
            Change("/a", 1, 0, "z", b"1"),  # another write of the same value: a new seq
            Change("/d", 5, 0, "p", b"4"),  # new
        ]
        head = await store.replace_state("r", restored, expected_head=3)
        assert head == 3 + 3 + 1
        assert await _state(store, "r") == {
            "/a": Change("/a", 1, 0, "z", b"1", 4),
            "/b": Change("/b", 1002, 0, "a", b"other", 5),
            "/c": Change("/c", 1003, 0, "a", b"3", 3),
            "/d": Change("/d", 5, 0, "p", b"4", 6),
        }
        base = {c.path: c for c in await store.base_snapshot("r")}
        assert base == await _state(store, "r")
        # Replacing a state with itself changes no entry but still moves the head.
        again = await store.replace_state(
            "r", list((await _state(store, "r")).values()), expected_head=head
        )
        assert again == head + 1
        assert (await _state(store, "r"))["/c"].seq == 3

    async def test_replace_state_is_fenced_and_creates_rooms(self, store: Store) -> None:
        await store.append("r", [change(1, "/a", b"1")], expected_head=0)
        with pytest.raises(StoreConflict):
            await store.replace_state("r", [Change("/x", 1, 0, "p", b"x")], expected_head=0)
        assert await _state(store, "r") == {"/a": change(1, "/a", b"1")}
        assert await store.replace_state("new", [], expected_head=0) == 1
        record = await store.get_room("new")
        assert record is not None and record.head == 1
        with pytest.raises(StoreError):
            await store.replace_state(
                "r", [Change("/x", 1, 0, "p", b"x"), Change("/x", 2, 0, "p", b"y")], expected_head=1
            )
        assert await _state(store, "r") == {"/a": change(1, "/a", b"1")}

    async def test_control_fields_of_records_round_trip(self, store: Store) -> None:
        record = RoomRecord(
            room="c",
            created_ms=5,
            locked=True,
            policy={"max_peers": 3},
            lineage_head="sha256:" + "1" * 64,
            source="parent",
            checkpoint="sha256:" + "2" * 64,
            node="n1",
            tick_n=7,
            tick_interval_ms=250,
            tick_at_ms=99,
        )
        await store.put_room(record)
        assert await store.get_room("c") == record
        await store.append("c", [change(1, "/a", b"1")], expected_head=0)
        loaded = await store.load_room("c", now_ms=0)
        assert loaded.record == replace(record, head=1)


class ArchivesContract:
    """``Archives``: snapshots by ref, listed newest first per room, lineage kept linked."""

    async def test_put_get_chunks_and_idempotence(self, store: Store) -> None:
        a = _archive(1, "r")
        assert await store.put_archive(a, _chunks(1)) is True
        assert await store.put_archive(replace(a, created_ms=999), _chunks(1)) is False
        assert await store.get_archive(a.ref) == a
        assert [await store.archive_chunk(a.ref, i) for i in range(a.chunks)] == _chunks(1)
        with pytest.raises(StoreError):
            await store.archive_chunk(a.ref, a.chunks)
        with pytest.raises(StoreError):
            await store.archive_chunk("sha256:" + "f" * 64, 0)
        assert await store.get_archive("sha256:" + "f" * 64) is None
        with pytest.raises(ValueError):
            await store.put_archive(_archive(2, "r"), _chunks(2)[:1])
        assert await store.get_archive(_archive(2, "r").ref) is None

    async def test_listing_is_newest_first_per_room_and_pages(self, store: Store) -> None:
        for n in range(1, 6):
            await store.put_archive(_archive(n, "r"), _chunks(n))
        await store.put_archive(_archive(9, "other"), _chunks(9))
        seen: list[int] = []
        cursor: str | None = None
        while True:
            page, cursor = await store.list_archives("r", limit=2, cursor=cursor)
            seen.extend(a.head for a in page)
            if cursor is None:
                break
        assert seen == [5, 4, 3, 2, 1]
        assert [a.head for a in (await store.list_archives("other"))[0]] == [9]
        assert await store.list_archives("none") == ([], None)
        with pytest.raises(ValueError):
            await store.list_archives("r", limit=0)

    async def test_archives_outlive_their_room(self, store: Store) -> None:
        await store.append("r", [change(1, "/a", b"1")], expected_head=0)
        await store.put_archive(_archive(1, "r"), _chunks(1))
        assert await store.delete_room("r")
        assert await store.get_archive(_archive(1, "r").ref) is not None

    async def test_lineage_walks_parents_and_delete_relinks(self, store: Store) -> None:
        a1 = _archive(1, "r")
        a2 = _archive(2, "r", parent=a1.ref)
        a3 = _archive(3, "r", parent=a2.ref)
        for n, a in ((1, a1), (2, a2), (3, a3)):
            await store.put_archive(a, _chunks(n))
        await store.put_room(RoomRecord(room="r", created_ms=1, lineage_head=a3.ref))
        assert [a.ref for a in await lineage(store, "r")] == [a3.ref, a2.ref, a1.ref]
        assert await lineage(store, "unknown") == []
        assert await store.delete_archive(a2.ref) is True
        assert await store.delete_archive(a2.ref) is False
        assert [a.ref for a in await lineage(store, "r")] == [a3.ref, a1.ref]
        assert await store.delete_archive(a3.ref) is True
        record = await store.get_room("r")
        assert record is not None and record.lineage_head == a1.ref
        with pytest.raises(StoreError):
            await store.archive_chunk(a3.ref, 0)

    async def test_forks_of_a_checkpoint(self, store: Store) -> None:
        ref = _archive(1, "p").ref
        await store.put_room(RoomRecord(room="kid2", created_ms=1, source="p", checkpoint=ref))
        await store.put_room(RoomRecord(room="kid1", created_ms=1, source="p", checkpoint=ref))
        await store.put_room(RoomRecord(room="plain", created_ms=1))
        assert await store.forks_of(ref) == ["kid1", "kid2"]
        assert await store.forks_of("sha256:" + "0" * 64) == []
        await store.delete_room("kid1")
        assert await store.forks_of(ref) == ["kid2"]


class ProposalsContract:
    """``Proposals``: stored and replaced whole, changes with their bytes and deletes."""

    async def test_proposals_round_trip(self, store: Store) -> None:
        assert await store.get_proposal("p1") is None
        record = ProposalRecord(
            proposal="p1",
            room="kid",
            source="parent",
            checkpoint="sha256:" + "3" * 64,
            state="draft",
            changes=(Change("/a", 5, 1, "x", b"\x00v"), Change("/b", 6, 0, "y", None)),
            created_ms=42,
        )
        await store.put_proposal(record)
        assert await store.get_proposal("p1") == record
        validated = replace(
            record, state="validated", conflicts=("/a",), resolve="child", validated_head=9
        )
        await store.put_proposal(validated)
        assert await store.get_proposal("p1") == validated


class QuerySpecsContract:
    """``QuerySpecs``: named JSON specs, node-wide, paged by name."""

    async def test_define_get_list_drop(self, store: Store) -> None:
        spec: dict[str, object] = {"prefix": "/todo/", "filters": [{"op": "eq", "value": 1}]}
        assert await store.put_query("b", spec) is True
        assert await store.put_query("b", {"prefix": "/"}) is False
        assert await store.put_query("a", spec) is True
        assert await store.get_query("b") == {"prefix": "/"}
        got = await store.get_query("a")
        assert got == spec and got is not spec
        page, cursor = await store.list_queries(limit=1)
        assert page == [("a", spec)] and cursor == "a"
        page, cursor = await store.list_queries(limit=1, cursor=cursor)
        assert page == [("b", {"prefix": "/"})] and cursor is None
        assert await store.delete_query("a") is True
        assert await store.delete_query("a") is False
        assert await store.get_query("a") is None
        with pytest.raises(StoreError):
            await store.put_query("bad", {"x": float("nan")})


async def _query_room(store: Store, room: str, values: Mapping[str, bytes | None]) -> None:
    changes = [change(seq, path, v) for seq, (path, v) in enumerate(values.items(), 1)]
    await store.append(room, changes, expected_head=0)


async def _paths(store: Store, room: str, spec: dict[str, object]) -> list[str]:
    rows, _ = await store.run_query(room, parse_spec(spec), limit=1000)
    return [str(r["path"]) for r in rows]


def _where(pointer: str, op: str, *value: object) -> dict[str, object]:
    f: dict[str, object] = {"pointer": pointer, "op": op}
    if value:
        f["value"] = value[0]
    return {"filters": [f]}


class QueryRunContract:
    """``QuerySpecs.run_query``: exactly :func:`roomsync.core.query.evaluate` over the
    room's durable live state, on cases chosen for SQL's pitfalls."""

    async def test_rows_are_the_live_entries_under_the_prefix(self, store: Store) -> None:
        await _query_room(
            store,
            "q",
            {
                "/t": b'{"n": 1}',
                "/t/1": b"[1, 2]",
                "/t/2": None,  # a tombstone is never a row
                "/t!": b"1",  # "/t!" is not below "/t"
                "/tx": b"1",
                "/t/3": b"\xffraw",
            },
        )
        rows, cursor = await store.run_query("q", parse_spec({"prefix": "/t/"}))
        assert rows == [
            {"path": "/t", "value": {"n": 1}},
            {"path": "/t/1", "value": [1, 2]},
            {"path": "/t/3", "value": None, "raw": "/3Jhdw=="},
        ]
        assert cursor is None
        assert await store.run_query("never-written", parse_spec({})) == ([], None)

    async def test_comparisons_keep_json_types_apart(self, store: Store) -> None:
        docs = {
            "/int": b'{"n": 1}',
            "/float": b'{"n": 1.0}',
            "/text": b'{"n": "1"}',
            "/true": b'{"n": true}',
            "/big": b'{"n": 9007199254740993}',
            "/null": b'{"n": null}',
            "/none": b"{}",
            "/obj": b'{"n": {"m": 1}}',
        }
        await _query_room(store, "q", docs)
        assert await _paths(store, "q", _where("/n", "eq", 1)) == ["/float", "/int"]
        assert await _paths(store, "q", _where("/n", "eq", "1")) == ["/text"]
        assert await _paths(store, "q", _where("/n", "eq", True)) == ["/true"]
        assert await _paths(store, "q", _where("/n", "eq", None)) == ["/null"]
        # Numbers compare as doubles: 2**53 + 1 is 2**53 there.
        assert await _paths(store, "q", _where("/n", "eq", 2**53)) == ["/big"]
        assert await _paths(store, "q", _where("/n", "ne", 1)) == [
            "/big", "/null", "/obj", "/text", "/true",
        ]  # fmt: skip
        assert await _paths(store, "q", _where("/n", "lt", 2)) == ["/float", "/int"]
        assert await _paths(store, "q", _where("/n", "ge", "1")) == ["/text"]
        assert await _paths(store, "q", _where("/n", "eq", {"m": 1.0})) == ["/obj"]
        assert len(await _paths(store, "q", _where("/n", "exists"))) == 7
        assert await _paths(store, "q", _where("", "eq", {})) == ["/none"]

    async def test_contains_prefix_and_pointers(self, store: Store) -> None:
        docs = {
            "/a": b'{"tags": ["x", "y"], "title": "hello", "k~/": 1}',
            "/b": b'{"tags": [1, {"z": 1}], "title": "help"}',
            "/c": b'{"o": {"0": "k"}, "tags": "xy"}',
            "/d": b'{"o": ["k"], "\\u0074ags": ["x"]}',
            "/e": b'{"tags": ["x"], "tags": []}',  # a repeated key: the first one counts
        }
        await _query_room(store, "q", docs)
        assert await _paths(store, "q", _where("/tags", "contains", "x")) == [
            "/a", "/c", "/d", "/e",
        ]  # fmt: skip
        assert await _paths(store, "q", _where("/tags", "contains", {"z": 1.0})) == ["/b"]
        assert await _paths(store, "q", _where("/tags", "contains", 1)) == ["/b"]
        assert await _paths(store, "q", _where("/title", "contains", "el")) == ["/a", "/b"]
        assert await _paths(store, "q", _where("/title", "prefix", "hell")) == ["/a"]
        assert await _paths(store, "q", _where("/o/0", "eq", "k")) == ["/c", "/d"]
        assert await _paths(store, "q", _where("/tags/1", "eq", "y")) == ["/a"]
        assert await _paths(store, "q", _where("/k~0~1", "exists")) == ["/a"]

    async def test_values_that_are_not_json_match_no_filter(self, store: Store) -> None:
        docs = {"/bad": b"\xff", "/nan": b"NaN", "/cut": b'{"a": 1}\x00', "/ok": b'{"a": 1}'}
        await _query_room(store, "q", docs)
        assert await _paths(store, "q", _where("", "exists")) == ["/ok"]
        assert await _paths(store, "q", _where("/a", "eq", 1)) == ["/ok"]
        rows, _ = await store.run_query("q", parse_spec({"project": ["/a"]}))
        assert [r["value"] for r in rows] == [None, None, None, {"/a": 1}]
        assert [r.get("raw") for r in rows] == ["/w==", "eyJhIjogMX0A", "TmFO", None]

    async def test_order_ranks_numbers_strings_then_the_rest(self, store: Store) -> None:
        docs = {
            "/1": b'{"k": 3}',
            "/2": b'{"k": 1.5}',
            "/3": b'{"k": "b"}',
            "/4": b'{"k": "a"}',
            "/5": b'{"k": true}',
            "/6": b"{}",
            "/7": b"not json",
            "/8": b'{"k": 3.0}',
            "/9": b'{"k": null}',
        }
        await _query_room(store, "q", docs)
        asc = {"order": {"pointer": "/k"}, "limit": 20}
        desc = {"order": {"pointer": "/k", "dir": "desc"}, "limit": 20}
        rest = ["/5", "/6", "/7", "/9"]
        assert await _paths(store, "q", asc) == ["/2", "/1", "/8", "/4", "/3", *rest]
        assert await _paths(store, "q", desc) == ["/3", "/4", "/1", "/8", "/2", *rest]

    async def test_pages_resume_strictly_after_the_cursor(self, store: Store) -> None:
        await _query_room(store, "q", {f"/{i}": b'{"k": %d}' % (i % 3) for i in range(7)})
        spec = parse_spec({"order": {"pointer": "/k", "dir": "desc"}, "limit": 3})
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(4):
            rows, cursor = await store.run_query("q", spec, cursor=cursor)
            seen += [str(r["path"]) for r in rows]
            if cursor is None:
                break
        assert seen == ["/2", "/5", "/1", "/4", "/0", "/3", "/6"]
        rows, cursor = await store.run_query("q", spec, limit=6)
        assert len(rows) == 6 and cursor is not None
        rows, last = await store.run_query("q", spec, limit=6, cursor=cursor)
        assert [r["path"] for r in rows] == ["/6"] and last is None
        other = parse_spec({"order": {"pointer": "/k"}})
        with pytest.raises(QueryCursorError):
            await store.run_query("q", other, cursor=cursor)
        with pytest.raises(QueryCursorError):
            await store.run_query("q", spec, cursor="garbage!")
        with pytest.raises(ValueError):
            await store.run_query("q", spec, limit=0)


class SettingsContract:
    """``Settings``: node-wide JSON objects by key."""

    async def test_settings_round_trip(self, store: Store) -> None:
        assert await store.get_setting("policy") is None
        await store.put_setting("policy", {"max_peers": 5})
        await store.put_setting("policy", {"max_peers": 6, "echo_to_sender": True})
        assert await store.get_setting("policy") == {"max_peers": 6, "echo_to_sender": True}
        with pytest.raises(StoreError):
            await store.put_setting("policy", {"x": object()})
        assert await store.get_setting("policy") == {"max_peers": 6, "echo_to_sender": True}


class NodeRegistryContract:
    """``NodeRegistry``: the nodes sharing the store, by their last heartbeat."""

    async def test_beats_replace_and_list_by_name(self, store: Store) -> None:
        assert await store.list_nodes() == []
        await store.beat("node-b", {"url": "ws://b", "connections": 1}, now_ms=1000)
        await store.beat("node-a", {"url": "ws://a", "rooms": ["r"]}, now_ms=1500)
        await store.beat("node-b", {"url": "ws://b", "connections": 7}, now_ms=2000)
        nodes = await store.list_nodes()
        assert [(n.node, n.beat_ms, n.info) for n in nodes] == [
            ("node-a", 1500, {"url": "ws://a", "rooms": ["r"]}),
            ("node-b", 2000, {"url": "ws://b", "connections": 7}),
        ]
        nodes[0].info["rooms"] = ["changed"]  # a copy: the store keeps its own
        assert (await store.list_nodes())[0].info == {"url": "ws://a", "rooms": ["r"]}

    async def test_forget_removes_one_node(self, store: Store) -> None:
        await store.beat("node-a", {}, now_ms=1)
        await store.beat("node-b", {}, now_ms=1)
        assert await store.forget_node("node-a") is True
        assert await store.forget_node("node-a") is False
        assert [n.node for n in await store.list_nodes()] == ["node-b"]

    async def test_info_must_be_json(self, store: Store) -> None:
        with pytest.raises(StoreError):
            await store.beat("node-a", {"x": object()}, now_ms=1)
        assert await store.list_nodes() == []


class StoreContract(
    LifecycleContract,
    RoomCatalogContract,
    OpLogContract,
    ReplaceStateContract,
    BlobRefsContract,
    RevocationsContract,
    ArchivesContract,
    ProposalsContract,
    QuerySpecsContract,
    QueryRunContract,
    SettingsContract,
    NodeRegistryContract,
):
    """Every section: what a full :class:`~roomsync.storage.base.Store` keeps. Subclasses
    provide the ``store`` fixture (opened)."""
