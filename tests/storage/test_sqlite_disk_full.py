"""A full disk, for real: SqliteStore (and /readyz) on a small tmpfs that fills up.

After an append fails with "database or disk is full", ``check()`` must fail too, and keep
failing while the disk is full, although a small write may still succeed there: it reuses
the WAL frames the failed transaction wrote before it failed. Once space is freed the check
must pass again without a restart. Mounting needs root: the tests skip only when the mount
is refused to a non-root user.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from roomsync.core.entries import Change
from roomsync.storage.base import StoreError
from roomsync.storage.sqlite import SqliteStore
from roomsync.testing.server import running_server

# Once space is freed, the store needs room for the probe and, soon after, for a checkpoint
# that moves the WAL (where the whole database sits on this tiny disk) into the database file.
DISK_BYTES = 6 << 20
FILLER_BYTES = 3 << 20
BIG_VALUE = 65 * 1024  # more than an inline commit takes: this one fails on the writer thread


@contextlib.contextmanager
def small_disk(where: Path) -> Iterator[Path]:
    """A tmpfs of DISK_BYTES mounted at ``where`` for the duration (unmounted after)."""
    where.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mount.returncode != 0:
        if os.geteuid() != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {mount.stderr.strip()}")
        raise RuntimeError(f"mount failed as root: {mount.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True, timeout=30)


def _changes(first_seq: int, count: int, size: int) -> list[Change]:
    return [
        Change(f"/fill/{seq}", 1000 + seq, 0, "filler", os.urandom(size), seq)
        for seq in range(first_seq, first_seq + count)
    ]


async def _exhaust(store: SqliteStore, room: str, filler: Path) -> tuple[int, list[Change]]:
    """Fill the disk (1 KiB appends until one fails), free 64 KiB, and fail a big append
    into it. The WAL then ends with stale frames of that failed transaction, which a small
    write reuses without needing the disk: (the next seq, the big batch that failed)."""
    await store.load_room(room, now_ms=0)  # as the server does before the first append
    seq = 1
    while True:
        assert seq <= DISK_BYTES // 1024, "the disk never filled up"
        try:
            await store.append(room, _changes(seq, 1, 1024), expected_head=seq - 1)
        except StoreError as exc:
            assert "full" in str(exc)
            break
        seq += 1
    os.truncate(filler, FILLER_BYTES - 64 * 1024)
    big = _changes(seq, 1, BIG_VALUE)
    with pytest.raises(StoreError, match="disk is full"):
        await store.append(room, big, expected_head=seq - 1)
    return seq, big


async def test_check_fails_while_the_disk_is_full_and_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        filler = disk / "filler"
        filler.write_bytes(os.urandom(FILLER_BYTES))
        store = SqliteStore(disk / "rooms.db")
        await store.open()
        try:
            await store.check()
            seq, big = await _exhaust(store, "r", filler)
            for _ in range(3):  # the first probe after the failure, and every later one
                with pytest.raises(StoreError, match="disk is full") as info:
                    await store.check()
                assert str(store.path) in str(info.value)
            filler.unlink()
            await store.check()  # no restart: the probe proves there is room again
            await store.append("r", big, expected_head=seq - 1)
            await store.check()
            loaded = await store.load_room("r", now_ms=0)
            assert loaded.record.head == seq + len(big) - 1
        finally:
            await store.close()


async def test_readyz_reports_the_full_store_then_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        filler = disk / "filler"
        filler.write_bytes(os.urandom(FILLER_BYTES))
        async with running_server(disk / "data") as srv, aiohttp.ClientSession() as http:
            ready = await http.get(srv.url + "/readyz")
            assert ready.status == 200, await ready.text()
            store = srv.server.store
            assert isinstance(store, SqliteStore)
            await _exhaust(store, "fill", filler)
            ready = await http.get(srv.url + "/readyz")
            report = await ready.json()
            assert ready.status == 503, report
            assert report["checks"]["store"]["ok"] is False
            assert report["checks"]["store"]["backend"] == "sqlite"
            assert "disk is full" in report["checks"]["store"]["error"]
            filler.unlink()
            ready = await http.get(srv.url + "/readyz")
            assert ready.status == 200, await ready.text()
