"""Fault injection for tests: a store whose commits fail on demand, and a small tmpfs
(:func:`tmpfs`) to fill up or remount read-only.

:class:`FaultyStore` wraps a real store (SQLite on a real file, or memory) and passes
every call through, except that :meth:`FaultyStore.fail_appends` makes the next appends
raise :class:`~roomsync.storage.base.StoreError` *without* writing anything, the way a
full disk or a lost database connection fails a commit::

    faulty = FaultyStore(SqliteStore(path))
    async with running_server(tmp_path, store=faulty.as_store()) as srv:
        faulty.fail_appends(1)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from ..core.entries import Change
from ..storage.base import AppendBatch, AppendOutcome, Store, StoreError


class FaultyStore:
    """A store that fails its next commits when told to: an ``append``, or an
    ``append_batches`` (``_now``) call, which fails every batch it holds, as a failed
    transaction does."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._failures = 0
        self._error = "database or disk is full (injected)"
        self.failed_appends = 0
        self._gate: asyncio.Event | None = None
        self._method_failures: dict[str, int] = {}

    def as_store(self) -> Store:
        """This wrapper, typed as the :class:`Store` it stands for."""
        return cast(Store, self)

    def fail_appends(self, n: int = 1, message: str | None = None) -> None:
        """Make the next ``n`` commits fail (nothing written), with ``message``: each an
        ``append``, or an ``append_batches`` call with all the rooms' batches it holds."""
        self._failures = n
        if message is not None:
            self._error = message

    def hold_appends(self) -> asyncio.Event:
        """Make appends wait until the returned event is set (a commit in flight), then
        fail or succeed as :meth:`fail_appends` says at that moment."""
        self._gate = asyncio.Event()
        return self._gate

    async def append(self, room: str, changes: Sequence[Change], *, expected_head: int) -> None:
        if self._gate is not None:
            await self._gate.wait()
        if self._failures > 0:
            self._failures -= 1
            self.failed_appends += 1
            raise StoreError(self._error)
        await self.inner.append(room, changes, expected_head=expected_head)

    async def append_batches(self, batches: Sequence[AppendBatch]) -> list[AppendOutcome]:
        if self._gate is not None:
            await self._gate.wait()
        failed = self._fail_commit(batches)
        if failed is not None:
            return failed
        return await self.inner.append_batches(batches)

    def append_batches_now(self, batches: Sequence[AppendBatch]) -> list[AppendOutcome] | None:
        if self._gate is not None:  # held: only the awaitable path can wait for the gate
            return None
        failed = self._fail_commit(batches)
        if failed is not None:
            return failed
        return self.inner.append_batches_now(batches)

    def _fail_commit(self, batches: Sequence[AppendBatch]) -> list[AppendOutcome] | None:
        """Every batch refused, as by one failed transaction, when a failure is due."""
        if self._failures <= 0 or not any(b.changes for b in batches):
            return None
        self._failures -= 1
        self.failed_appends += 1
        return [StoreError(self._error) if b.changes else None for b in batches]

    def fail_method(self, name: str, n: int = 1, message: str | None = None) -> None:
        """Make the next ``n`` calls of store method ``name`` (e.g. ``add_blob_ref``)
        raise :class:`StoreError` without calling the real store."""
        self._method_failures[name] = n
        if message is not None:
            self._error = message

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            left = self._method_failures.get(name, 0)
            if left > 0:
                self._method_failures[name] = left - 1
                raise StoreError(self._error)
            return await attr(*args, **kwargs)

        return call if asyncio.iscoroutinefunction(attr) else attr


@contextlib.contextmanager
def tmpfs(where: Path, *, size: str, why: str) -> Iterator[Path]:
    """Mount a ``size`` tmpfs on the new directory ``where`` for the block (a disk that
    fills up, or that :func:`read_only` makes refuse writes, root's too).

    Needs root: without it the test is skipped, except under ``CI=true``, where it fails
    (``why`` says what needs it), so CI never passes by skipping."""
    import pytest  # test-only dependency, as the rest of the kit's fixtures

    where.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why} needs root (mount -t tmpfs) in CI")
        pytest.skip("mount -t tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def read_only(where: Path) -> None:
    """Remount the tmpfs at ``where`` read-only: every write below it fails with EROFS."""
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
