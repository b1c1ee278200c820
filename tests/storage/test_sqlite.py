"""SqliteStore specifics beyond the contract: schema, pragmas, commit visibility, failures."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roomsync.core.entries import Change
from roomsync.storage import sqlite as sqlite_module
from roomsync.storage.base import AppendBatch, RoomRecord, StoreConflict, StoreError
from roomsync.storage.sqlite import MIGRATIONS, SqliteStore


def _change(seq: int, path: str = "/p", value: bytes | None = b"v") -> Change:
    return Change(path, 1000 + seq, 0, "a", value, seq)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "rooms.db", busy_timeout_ms=100)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def thread_store(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> SqliteStore:
    """The same store with inline commits off: every append takes the writer thread."""
    monkeypatch.setattr(sqlite_module, "_INLINE_ROWS", 0)
    return store


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


async def test_schema_migrations_and_pragmas(store: SqliteStore) -> None:
    assert store.migrations_applied == [m.version for m in MIGRATIONS] == [1, 2, 3, 4, 5, 6, 7, 8]
    conn = _raw(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        expected = {
            "schema_migrations",
            "rooms",
            "entries",
            "oplog",
            "base_entries",
            "health",
            "blob_refs",
        }
        assert tables >= expected
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == [1, 2, 3, 4, 5, 6, 7, 8]
        columns = {
            table: [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            for table in ("rooms", "entries", "oplog", "base_entries", "health")
        }
        assert columns["rooms"] == [
            "room",
            "created_ms",
            "locked",
            "closed",
            "head",
            "compacted_through",
            "policy",
            "lineage_head",
            "source",
            "checkpoint",
            "node",
            "tick_n",
            "tick_interval_ms",
            "tick_at_ms",
        ]
        assert columns["entries"] == columns["base_entries"] == [
            "room", "path", "ts", "counter", "actor", "value", "seq"
        ]  # fmt: skip
        assert columns["oplog"] == ["room", "seq", "path", "ts", "counter", "actor", "value"]
        assert columns["health"] == ["id", "probes", "pad"]
    finally:
        conn.close()


async def test_append_is_committed_when_it_returns(store: SqliteStore) -> None:
    await store.load_room("r", now_ms=1)
    await store.append("r", [_change(1, "/a"), _change(2, "/b", None)], expected_head=0)
    conn = _raw(store.path)  # another connection sees the rows: they are committed
    try:
        assert conn.execute("SELECT head FROM rooms WHERE room='r'").fetchone() == (2,)
        oplog = conn.execute("SELECT seq, path, value FROM oplog ORDER BY seq").fetchall()
        assert oplog == [(1, "/a", b"v"), (2, "/b", None)]
        entries = conn.execute("SELECT path, seq, value FROM entries ORDER BY path").fetchall()
        assert entries == [("/a", 1, b"v"), ("/b", 2, None)]
    finally:
        conn.close()
    assert (store.commits, store.appends) == (1, 1)


async def test_failed_transaction_fails_every_caller(store: SqliteStore) -> None:
    for room in ("a", "b", "c"):
        await store.load_room(room, now_ms=1)
    blocker = _raw(store.path)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock past busy_timeout
    try:
        results = await asyncio.gather(
            *(store.append(room, [_change(1)], expected_head=0) for room in ("a", "b", "c")),
            return_exceptions=True,
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert all(isinstance(r, StoreError) for r in results)
    for error in results:
        assert isinstance(error, StoreError)
        assert "locked" in str(error) and str(store.path) in str(error)
        assert isinstance(error.__cause__, sqlite3.OperationalError)
    # Nothing was written, and the store recovers once the lock is gone.
    assert await store.changes_since("a", 0, limit=10) == []
    await asyncio.gather(
        *(store.append(room, [_change(1)], expected_head=0) for room in ("a", "b", "c"))
    )
    for room in ("a", "b", "c"):
        assert await store.changes_since(room, 0, limit=10) == [_change(1)]


async def test_batches_of_several_rooms_commit_inline_in_one_transaction(
    store: SqliteStore,
) -> None:
    await store.append("taken", [_change(1)], expected_head=0)
    before = (store.commits, store.inline_commits, store.appends)
    outcomes = store.append_batches_now(
        [
            AppendBatch("a", [_change(1), _change(2, "/q")], 0),
            AppendBatch("taken", [_change(1, "/late")], 0),  # its savepoint rolls back alone
            AppendBatch("b", [_change(1)], 0),
        ]
    )
    assert outcomes is not None
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], StoreConflict)
    after = (store.commits, store.inline_commits, store.appends)
    assert [x - y for x, y in zip(after, before, strict=True)] == [1, 1, 2]
    assert [c.seq for c in await store.changes_since("a", 0, limit=10)] == [1, 2]
    assert await store.changes_since("taken", 0, limit=10) == [_change(1)]
    assert await store.changes_since("b", 0, limit=10) == [_change(1)]


async def test_batches_too_big_or_behind_the_writer_are_not_committed_inline(
    store: SqliteStore,
) -> None:
    rows = sqlite_module._INLINE_ROWS // 2 + 1  # each fits, both together do not
    big = [
        AppendBatch(room, [_change(s, f"/{s}") for s in range(1, rows + 1)], 0)
        for room in ("a", "b")
    ]
    assert store.append_batches_now(big) is None
    assert await store.list_rooms() == []  # declined: nothing written
    commits = store.commits
    assert await store.append_batches(big) == [None, None]
    assert store.commits == commits + 1  # the writer thread's one transaction for both
    bigger = [_change(s, f"/{s}") for s in range(1, sqlite_module._INLINE_ROWS + 2)]
    pending = asyncio.ensure_future(store.append("c", bigger, expected_head=0))
    await asyncio.sleep(0)  # the writer thread has work now
    assert store.append_batches_now([AppendBatch("d", [_change(1)], 0)]) is None
    await pending


async def test_a_failed_batch_transaction_fails_every_batch(store: SqliteStore) -> None:
    blocker = _raw(store.path)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock past busy_timeout
    try:
        batches = [AppendBatch(room, [_change(1)], 0) for room in ("a", "b", "c")]
        assert store.append_batches_now(batches) is None  # busy: left to the writer
        outcomes = await store.append_batches(batches)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert len(outcomes) == 3
    for error in outcomes:
        assert isinstance(error, StoreError) and "locked" in str(error)
    assert await store.list_rooms() == []
    assert await store.append_batches(batches) == [None, None, None]


async def test_writer_thread_batches_share_one_transaction(thread_store: SqliteStore) -> None:
    store = thread_store
    assert store.append_batches_now([AppendBatch("a", [_change(1)], 0)]) is None
    commits = store.commits
    outcomes = await store.append_batches(
        [AppendBatch(room, [_change(1)], 0) for room in ("a", "b", "c", "d")]
        + [AppendBatch("a", [_change(3)], 1)]  # bad seqs: refused before the writer
    )
    assert outcomes[:4] == [None] * 4 and isinstance(outcomes[4], StoreError)
    assert store.commits == commits + 1
    for room in ("a", "b", "c", "d"):
        assert await store.changes_since(room, 0, limit=10) == [_change(1)]


async def test_cancelled_caller_does_not_wedge_the_writer(thread_store: SqliteStore) -> None:
    store = thread_store
    await store.load_room("r", now_ms=1)
    task = asyncio.ensure_future(store.append("r", [_change(1)], expected_head=0))
    await asyncio.sleep(0)  # the batch is queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.append("r", [_change(2)], expected_head=1)  # the cancelled batch committed first
    assert [c.seq for c in await store.changes_since("r", 0, limit=10)] == [1, 2]


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "rooms.db"
    store = SqliteStore(path, synchronous="full")
    await store.open()
    await store.load_room("r", now_ms=1)
    await store.append("r", [_change(1, "/a"), _change(2, "/b")], expected_head=0)
    await store.compact("r", 1)
    await store.close()
    again = SqliteStore(path)
    await again.open()
    try:
        assert again.migrations_applied == []
        loaded = await again.load_room("r", now_ms=2)
        assert (loaded.record.head, loaded.record.compacted_through) == (2, 1)
        assert loaded.entries == [_change(1, "/a"), _change(2, "/b")]
        assert await again.base_snapshot("r") == [_change(1, "/a")]
    finally:
        await again.close()


async def test_check_reports_a_broken_database(store: SqliteStore) -> None:
    await store.check()
    conn = _raw(store.path)
    try:
        conn.execute("DROP TABLE health")
    finally:
        conn.close()
    with pytest.raises(StoreError, match="health"):
        await store.check()


async def test_failed_open_leaves_no_threads(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    before = threading.active_count()
    store = SqliteStore(tmp_path / "file" / "rooms.db")
    with pytest.raises(StoreError):
        await store.open()
    assert threading.active_count() == before
    with pytest.raises(StoreError, match="not open"):
        await store.get_room("r")


def test_rejects_unknown_synchronous_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(tmp_path / "x.db", synchronous="NORMAL; DROP TABLE rooms")


async def test_not_json_policy_is_refused(store: SqliteStore) -> None:
    with pytest.raises(StoreError, match="policy"):
        await store.put_room(RoomRecord("p", created_ms=1, policy={"bad": object()}))


async def test_group_transactions_are_bounded(
    thread_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = thread_store
    monkeypatch.setattr(sqlite_module, "_GROUP_ROWS", 10)
    rooms = [f"r{i}" for i in range(12)]
    for room in rooms:
        await store.load_room(room, now_ms=1)
    await asyncio.gather(
        *(
            store.append(room, [_change(s, f"/{s}") for s in (1, 2, 3, 4)], expected_head=0)
            for room in rooms
        )
    )
    assert store.appends == 12
    assert store.commits >= 12 * 4 // 10
    for room in rooms:
        assert [c.seq for c in await store.changes_since(room, 0, limit=10)] == [1, 2, 3, 4]


async def test_caller_may_reuse_its_list(thread_store: SqliteStore) -> None:
    store = thread_store
    await store.load_room("r", now_ms=1)
    batch = [_change(1, "/a")]
    pending = asyncio.ensure_future(store.append("r", batch, expected_head=0))
    await asyncio.sleep(0)
    batch[0] = _change(1, "/mutated")
    await pending
    assert [c.path for c in await store.changes_since("r", 0, limit=10)] == ["/a"]


async def test_small_appends_commit_inline_big_ones_on_the_writer(store: SqliteStore) -> None:
    await store.load_room("r", now_ms=1)
    await store.append("r", [_change(1, "/a")], expected_head=0)
    assert (store.commits, store.inline_commits) == (1, 1)
    big = [_change(s, f"/{s}") for s in range(2, 2 + sqlite_module._INLINE_ROWS + 1)]
    pending = asyncio.ensure_future(store.append("r", big, expected_head=1))
    await asyncio.sleep(0)  # the big batch is on the writer thread now
    big_head = len(big) + 1
    small = _change(big_head + 1, "/z")
    # While the writer has work, a small append queues behind it instead of going inline.
    await asyncio.gather(pending, store.append("r", [small], expected_head=big_head))
    assert store.inline_commits == 1
    seqs = [c.seq for c in await store.changes_since("r", 0, limit=1000)]
    assert seqs == list(range(1, big_head + 2))
    await store.append("r", [_change(big_head + 2, "/y")], expected_head=big_head + 1)
    assert store.inline_commits == 2  # the writer is idle again


async def test_inline_append_waits_for_another_process_on_the_writer(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "rooms.db", busy_timeout_ms=5000)
    await store.open()
    try:
        await store.load_room("r", now_ms=1)
        blocker = _raw(store.path)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, blocker.execute, "ROLLBACK")
        started = loop.time()
        await store.append("r", [_change(1)], expected_head=0)  # waited on the writer thread
        assert loop.time() - started >= 0.15
        blocker.close()
        assert store.inline_commits == 0
        assert await store.changes_since("r", 0, limit=10) == [_change(1)]
        await store.append("r", [_change(2)], expected_head=1)
        assert store.inline_commits == 1
    finally:
        await store.close()


async def test_inline_refusal_fails_only_its_caller(store: SqliteStore) -> None:
    await store.load_room("r", now_ms=1)
    with pytest.raises(StoreError, match="expected seq 1, got 5"):
        await store.append("r", [_change(5)], expected_head=0)
    with pytest.raises(StoreError, match="expected seq 1, got 3"):
        await store.append("nope", [_change(3)], expected_head=0)
    assert await store.get_room("nope") is None  # the refused batch created nothing
    await store.append("r", [_change(1)], expected_head=0)
    assert await store.changes_since("r", 0, limit=10) == [_change(1)]


async def test_the_store_checkpoints_its_wal(store: SqliteStore) -> None:
    """Automatic checkpoints are off on the writing connection; the store's own keep the
    WAL about as small as SQLite's default would (1000 pages of 4 KiB)."""
    await store.load_room("r", now_ms=1)
    wal = store.path.with_name(store.path.name + "-wal")
    biggest = 0
    for seq in range(1, 3001):
        await store.append("r", [_change(seq, f"/{seq % 7}")], expected_head=seq - 1)
        if seq % 100 == 0:
            await asyncio.sleep(0.01)  # let a scheduled checkpoint run
            biggest = max(biggest, wal.stat().st_size)
    assert store.checkpoints >= 2
    assert store.inline_commits >= 2900  # a few went to the writer behind a checkpoint
    assert biggest < 1000 * 4096 * 1.5


async def test_appends_with_big_values_take_the_writer(store: SqliteStore) -> None:
    """Inline commits block the loop, so only small ones are made there: a batch with more
    than _INLINE_BYTES of values goes to the writer thread even when it is idle."""
    await store.load_room("r", now_ms=1)
    big = b"x" * (sqlite_module._INLINE_BYTES + 1)
    await store.append("r", [_change(1, "/big", big)], expected_head=0)
    assert (store.commits, store.inline_commits) == (1, 0)
    await store.append("r", [_change(2, "/small")], expected_head=1)
    assert (store.commits, store.inline_commits) == (2, 1)
    assert [c.value for c in await store.changes_since("r", 0, limit=10)] == [big, b"v"]


def _wal(store: SqliteStore) -> Path:
    return store.path.with_name(store.path.name + "-wal")


async def test_loading_unknown_rooms_writes_nothing(store: SqliteStore) -> None:
    """What a flood of refused hellos costs: each acquires (loads) a new room id."""
    for i in range(3000):
        loaded = await store.load_room(f"refused-{i}", now_ms=i)
        assert (loaded.record.head, loaded.entries) == (0, [])
    conn = _raw(store.path)
    try:
        assert conn.execute("SELECT count(*) FROM rooms").fetchone() == (0,)
    finally:
        conn.close()
    assert _wal(store).stat().st_size < 1 << 20
    assert await store.list_rooms() == []


async def test_append_creates_the_room_with_the_store_clock(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "rooms.db", now_ms=lambda: 4242)
    await store.open()
    try:
        loaded = await store.load_room("r", now_ms=1)
        assert loaded.record.created_ms == 1  # in memory only
        await store.append("r", [_change(1)], expected_head=0)
        assert await store.get_room("r") == RoomRecord("r", created_ms=4242, head=1)
        await store.put_room(RoomRecord("r", created_ms=7, locked=True))
        assert await store.get_room("r") == RoomRecord("r", created_ms=7, locked=True, head=1)
    finally:
        await store.close()


async def test_group_committed_first_appends_create_their_rooms(thread_store: SqliteStore) -> None:
    store = thread_store
    results = await asyncio.gather(
        store.append("x", [_change(1)], expected_head=0),
        store.append("y", [_change(2)], expected_head=1),  # refused in the group: creates nothing
        store.append("x", [_change(2)], expected_head=1),
        store.append("z", [_change(1)], expected_head=0),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [type(None), StoreConflict, type(None), type(None)]
    assert [r.room for r in await store.list_rooms()] == ["x", "z"]
    record = await store.get_room("x")
    assert record is not None and record.head == 2


@pytest.mark.parametrize("writes", ["health probes", "room records", "blob references"])
async def test_every_kind_of_write_keeps_the_wal_bounded(store: SqliteStore, writes: str) -> None:
    """Not only appends move the WAL: a server that only answers /readyz, or only
    records rooms and blob references, must see it checkpointed too."""
    wal = _wal(store)
    biggest = 0
    for i in range(3000):
        if writes == "health probes":
            await store.check()
        elif writes == "room records":
            await store.put_room(RoomRecord(f"room-{i:05d}", created_ms=i))
        else:
            await store.add_blob_ref("r", f"sha256:{i:064x}", 1, now_ms=i)
        biggest = max(biggest, wal.stat().st_size)
    assert store.checkpoints >= 2
    # As for appends (test_the_store_checkpoints_its_wal): about SQLite's default of 1000
    # pages. Without checkpoints these writes grow it to 12 MB (probes) - 32 MB (refs).
    assert biggest < 1000 * 4096 * 1.5


async def test_a_version_3_database_gains_the_probe_pad(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rooms.db"
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_module, "MIGRATIONS", MIGRATIONS[:3])
        old = SqliteStore(path)
        await old.open()
        await old.append("r", [_change(1)], expected_head=0)
        await old.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert store.migrations_applied == [4, 5, 6, 7, 8]
        await store.check()
        assert await store.changes_since("r", 0, limit=10) == [_change(1)]
    finally:
        await store.close()


_OPENER = """
import asyncio, sys, time
from roomsync.storage.sqlite import SqliteStore
start = float(sys.argv[2])
while time.time() < start:  # both processes open at the same instant
    pass
async def main():
    store = SqliteStore(sys.argv[1])
    await store.open()
    await store.close()
asyncio.run(main())
"""


def test_two_processes_opening_one_new_database_at_once(tmp_path: Path) -> None:
    """Switching a new database to WAL takes an exclusive lock; when two openers both
    hold a shared lock and want it, SQLite refuses one at once (no busy handler: it would
    deadlock). The store retries the switch; before, about one pair in 15 failed with
    "database is locked" (seen in the fencing tests under load)."""
    import subprocess
    import sys
    import time

    for round_ in range(8):
        path = tmp_path / f"new{round_}.db"
        start = time.time() + 0.8
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPENER, str(path), str(start)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
