"""SqliteStore durability: acknowledged appends survive ``kill -9``; opening is safe.

The crash test runs a real writer in a child process, kills it with SIGKILL while it is
appending, and checks every seq it had acknowledged (printed after ``append`` returned).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from roomsync.storage.base import StoreError
from roomsync.storage.sqlite import SqliteStore

ROOMS = ("crash-a", "crash-b", "crash-c")
BATCH = 40

# One writer task per room, so the child also group-commits while it is killed.
_CHILD = f"""
import asyncio, sys
from pathlib import Path
from roomsync.core.entries import Change
from roomsync.storage.sqlite import SqliteStore

async def writer(store, room):
    seq = (await store.load_room(room, now_ms=1)).record.head
    while True:
        batch = [
            Change(f"/k/{{s}}", 1000 + s, 0, "w", b"v%d" % s, s)
            for s in range(seq + 1, seq + {BATCH} + 1)
        ]
        await store.append(room, batch, expected_head=seq)
        seq += {BATCH}
        print(room, seq, flush=True)

async def main():
    store = SqliteStore(Path(sys.argv[1]))
    await store.open()
    await asyncio.gather(*(writer(store, room) for room in {ROOMS!r}))

asyncio.run(main())
"""


def _run_and_kill(path: Path, acks_wanted: int) -> dict[str, int]:
    """Run the child until it acknowledged ``acks_wanted`` batches, SIGKILL it mid-write."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: dict[str, int] = {}
    try:
        assert child.stdout is not None
        for _ in range(acks_wanted):
            line = child.stdout.readline()
            if not line:
                assert child.stderr is not None
                pytest.fail(f"writer died early: {child.stderr.read()}")
            room, seq = line.split()
            acked[room] = int(seq)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return acked


def test_acknowledged_appends_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "crash" / "rooms.db"
    acked = _run_and_kill(path, acks_wanted=150)
    acked_again = _run_and_kill(path, acks_wanted=60)  # recovery, then more writes, killed again
    for room, seq in acked_again.items():
        assert seq > acked.get(room, 0)
    acked.update(acked_again)
    assert set(acked) == set(ROOMS)

    async def verify() -> None:
        store = SqliteStore(path)
        await store.open()
        try:
            assert store.migrations_applied == []
            for room, last_acked in acked.items():
                loaded = await store.load_room(room, now_ms=0)
                head = loaded.record.head
                assert head >= last_acked
                log = await store.changes_since(room, 0, limit=1_000_000)
                assert [c.seq for c in log] == list(range(1, head + 1))  # gap-free
                entry_seqs = sorted(c.seq or 0 for c in loaded.entries)
                assert entry_seqs == list(range(1, head + 1))
                for change in log:
                    assert change.value == b"v%d" % (change.seq or 0)
        finally:
            await store.close()

    asyncio.run(verify())


async def test_reopening_runs_no_migration_twice(tmp_path: Path) -> None:
    path = tmp_path / "rooms.db"
    applied: list[list[int]] = []
    for _ in range(3):
        store = SqliteStore(path)
        await store.open()
        await store.open()  # idempotent: no second migration pass
        applied.append(store.migrations_applied)
        await store.close()
    assert applied == [[1, 2, 3, 4, 5, 6, 7, 8], [], []]
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [version for version, _name in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    finally:
        conn.close()


@pytest.mark.parametrize("below", ["rooms.db", "sub/dir/rooms.db"])
async def test_path_under_a_regular_file_is_a_store_error(tmp_path: Path, below: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    path = blocker / below
    with pytest.raises(StoreError) as info:
        await SqliteStore(path).open()
    message = str(info.value)
    assert str(path) in message
    assert "not a directory" in message.lower()


async def test_read_only_directory_is_a_store_error(tmp_path: Path) -> None:
    data = tmp_path / "ro"
    data.mkdir()
    data.chmod(0o555)
    try:
        try:
            (data / "probe").write_text("x")
        except PermissionError:
            pass
        else:
            pytest.skip("chmod does not stop this user (root) from writing")
        path = data / "rooms.db"
        with pytest.raises(StoreError) as info:
            await SqliteStore(path).open()
        assert str(path) in str(info.value)
        assert "permission denied" in str(info.value).lower()
    finally:
        data.chmod(0o755)
