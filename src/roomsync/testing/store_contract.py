"""The contract every :class:`~roomsync.storage.base.Store` keeps, as a reusable test class.

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

The checks follow the invariants in :mod:`roomsync.storage.base`: idempotent open, room
records (a room never written is not stored; its first write creates it), state with seqs
and tombstones, gap-free op log, group commit, and compaction whose base snapshot plus the
remaining log replays (with :mod:`roomsync.core.merge`) to exactly the state table.
"""

from __future__ import annotations

import asyncio
import random
from typing import ClassVar

import pytest

from ..core.entries import Change
from ..core.merge import live_items, merge_into, wins
from ..storage.base import RoomRecord, Store, StoreError

__all__ = ["StoreContract", "change", "replay"]

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


class StoreContract:
    """Checks for one backend; subclasses provide the ``store`` fixture (opened)."""

    #: The backend groups concurrent appends and counts transactions in ``store.commits``.
    group_commits: ClassVar[bool] = False

    # -- lifecycle ----------------------------------------------------------------------

    async def test_open_is_idempotent(self, store: Store) -> None:
        await store.load_room("r", now_ms=5)
        await store.append("r", [change(1, "/x", b"1")])
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
        await store.append("r", [change(1, "/x", b"1")])
        await store.close()
        await store.close()
        with pytest.raises(StoreError):
            await store.check()
        with pytest.raises(StoreError):
            await store.append("r", [change(2, "/x", b"2")])
        await store.open()
        assert (await store.load_room("r", now_ms=1)).record.head == 1

    # -- rooms --------------------------------------------------------------------------

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
        assert await store.blob_refs() == set()
        assert await store.delete_room("new") is False

    async def test_append_to_a_never_loaded_room_creates_it(self, store: Store) -> None:
        batch = [change(1, "/a", b"1"), change(2, "/b", None)]
        await store.append("fresh", batch)
        record = await store.get_room("fresh")
        assert record is not None
        assert (record.room, record.head, record.compacted_through) == ("fresh", 2, 0)
        assert isinstance(record.created_ms, int)
        assert [r.room for r in await store.list_rooms()] == ["fresh"]
        loaded = await store.load_room("fresh", now_ms=record.created_ms + 5000)
        assert loaded.record == record  # the stored record, not a new one
        assert loaded.entries == batch
        assert await _all_changes(store, "fresh") == batch
        await store.append("fresh", [change(3, "/a", b"3")])
        again = await store.get_room("fresh")
        assert again is not None and (again.head, again.created_ms) == (3, record.created_ms)

    async def test_refused_first_append_creates_nothing(self, store: Store) -> None:
        await store.load_room("late", now_ms=1)
        for bad in ([change(2, "/a", b"gap")], [change(1, "/a", b"1"), change(3, "/b", b"gap")]):
            with pytest.raises(StoreError):
                await store.append("late", bad)
        assert await store.get_room("late") is None
        assert await store.list_rooms() == []
        assert await _all_changes(store, "late") == []

    async def test_blob_ref_to_a_never_loaded_room_creates_it(self, store: Store) -> None:
        h = "sha256:" + "c" * 64
        await store.load_room("b", now_ms=1)
        await store.add_blob_ref("b", h, 3, now_ms=77)
        record = await store.get_room("b")
        assert record == RoomRecord("b", created_ms=77)
        assert [r.room for r in await store.list_rooms()] == ["b"]
        assert await store.has_blob_ref("b", h)
        assert await store.delete_room("b") is True
        assert await store.blob_refs() == set()

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
        await store.append("h", [change(1, "/a", b"1"), change(2, "/b", b"2")])
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
        await store.append("d", [change(1, "/a", b"1"), change(2, "/b", b"2")])
        await store.append("keep", [change(1, "/a", b"k")])
        await store.compact("d", 1)
        assert await store.delete_room("d") is True
        assert await store.delete_room("d") is False
        assert await store.get_room("d") is None
        assert await _all_changes(store, "d") == []
        assert await store.base_snapshot("d") == []
        assert [r.room for r in await store.list_rooms()] == ["keep"]
        reborn = await store.load_room("d", now_ms=2)
        assert (reborn.record.head, reborn.record.created_ms, reborn.entries) == (0, 2, [])
        await store.append("d", [change(1, "/a", b"again")])
        assert (await store.load_room("keep", now_ms=0)).entries == [change(1, "/a", b"k")]

    # -- append, state and op log -------------------------------------------------------

    async def test_append_then_load_returns_entries_with_seqs(self, store: Store) -> None:
        await store.load_room("r", now_ms=1)
        batch = [
            change(1, "/todos/1/title", b'"milk"'),
            change(2, "/todos/2/title", b'"eggs"'),
            change(3, "/empty", b""),
            change(4, "/todos/1/title", b'"oat milk"'),
            change(5, "/todos/2/title", None),
        ]
        await store.append("r", batch)
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
        await store.append("r", writes)
        assert await _all_changes(store, "r") == writes
        assert (await store.load_room("r", now_ms=1)).entries == sorted(
            writes, key=lambda c: c.path
        )

    async def test_changes_since_in_seq_order_with_limit(self, store: Store) -> None:
        await store.load_room("r", now_ms=1)
        await store.load_room("other", now_ms=1)
        first = [change(s, f"/k{s % 3}", b"%d" % s) for s in range(1, 8)]
        second = [change(s, f"/k{s % 4}", None if s % 2 else b"v") for s in range(8, 13)]
        await store.append("r", first)
        await store.append("other", [change(1, "/o", b"o")])
        await store.append("r", second)
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
            await store.append("r", [change(seq + i + 1, f"/p{i}", b"x") for i in range(size)])
            seq += size
            record = await store.get_room("r")
            assert record is not None and record.head == seq
        await store.append("r", [])
        record = await store.get_room("r")
        assert record is not None and record.head == seq == 6

    async def test_append_refuses_bad_seqs(self, store: Store) -> None:
        with pytest.raises(StoreError):
            await store.append("ghost", [change(2, "/a", b"no seq 1")])
        assert await store.get_room("ghost") is None
        await store.load_room("r", now_ms=1)
        await store.append("r", [change(1, "/a", b"1")])
        bad_batches = [
            [change(3, "/a", b"gap")],
            [change(1, "/a", b"replay")],
            [change(2, "/a", b"ok"), change(4, "/b", b"gap inside")],
            [Change("/a", 5000, 0, "a", b"no seq")],
        ]
        for bad in bad_batches:
            with pytest.raises(StoreError):
                await store.append("r", bad)
        # A refused batch writes nothing, not even its valid prefix.
        assert await _all_changes(store, "r") == [change(1, "/a", b"1")]
        assert (await store.load_room("r", now_ms=1)).entries == [change(1, "/a", b"1")]
        await store.append("r", [change(2, "/a", b"2")])
        assert (await store.load_room("r", now_ms=1)).record.head == 2

    async def test_refused_batch_does_not_fail_its_neighbours(self, store: Store) -> None:
        for room in ("a", "b"):
            await store.load_room(room, now_ms=1)
        results = await asyncio.gather(
            store.append("a", [change(1, "/x", b"1")]),
            store.append("b", [change(7, "/x", b"gap")]),
            store.append("a", [change(2, "/y", b"2")]),
            store.append("ghost", [change(2, "/x", b"no seq 1")]),
            store.append("b", [change(1, "/x", b"1")]),
            return_exceptions=True,
        )
        assert [type(r) for r in results] == [
            type(None),
            StoreError,
            type(None),
            StoreError,
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
        await store.append("c", before)
        await store.append("c", after)
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
        await store.append("c", [change(11, "/a", b"a2")])
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
                await store.append(room, batch)
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

    async def test_blob_refs_are_room_scoped_and_go_with_the_room(self, store: Store) -> None:
        h1, h2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64
        await store.load_room("r1", now_ms=1)
        await store.load_room("r2", now_ms=1)
        await store.add_blob_ref("r1", h1, 10, now_ms=5)
        await store.add_blob_ref("r1", h1, 10, now_ms=6)  # idempotent
        await store.add_blob_ref("r2", h2, 20, now_ms=5)
        assert await store.has_blob_ref("r1", h1)
        assert not await store.has_blob_ref("r2", h1)
        assert await store.blob_refs() == {h1, h2}
        assert await store.delete_room("r1")
        assert not await store.has_blob_ref("r1", h1)
        assert await store.blob_refs() == {h2}
