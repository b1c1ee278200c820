"""The store contract (:mod:`roomsync.testing.store_contract`) against every backend here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roomsync.storage.base import Store
from roomsync.storage.memory import MemoryStore
from roomsync.storage.sqlite import SqliteStore
from roomsync.testing.store_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        store = MemoryStore()
        await store.open()
        yield store
        await store.close()


class TestSqliteStore(StoreContract):
    """The default: small appends commit inline on the loop's thread (synchronous=NORMAL)."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        store = SqliteStore(tmp_path / "data" / "rooms.db")
        await store.open()
        yield store
        await store.close()


class TestSqliteStoreWriterThread(StoreContract):
    """synchronous=FULL: every append goes through the writer thread and its group commit."""

    group_commits = True

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        store = SqliteStore(tmp_path / "data" / "rooms.db", synchronous="FULL")
        await store.open()
        yield store
        await store.close()
