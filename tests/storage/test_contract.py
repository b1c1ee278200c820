"""The store contract (:mod:`roomsync.testing.store_contract`) against every backend here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roomsync.storage.base import Store
from roomsync.storage.memory import MemoryStore
from roomsync.storage.postgres import PostgresStore
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


class TestPostgresStore(StoreContract):
    """PostgreSQL (a fresh schema per test in the session's database): appends go
    through the committer task and its group commit."""

    group_commits = True

    @pytest.fixture
    async def store(self, postgres_schema_dsn: str) -> AsyncIterator[Store]:
        store = PostgresStore(postgres_schema_dsn, max_size=4)
        await store.open()
        yield store
        await store.close()
