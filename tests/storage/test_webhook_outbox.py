"""The webhook outbox contract (:mod:`roomsync.testing.webhook_contract`) on each store
that has one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roomsync.storage.memory import MemoryStore
from roomsync.storage.sqlite import SqliteStore
from roomsync.storage.webhooks import WebhookOutbox
from roomsync.testing.webhook_contract import WebhookOutboxContract


class TestMemoryOutbox(WebhookOutboxContract):
    @pytest.fixture
    async def outbox(self) -> AsyncIterator[WebhookOutbox]:
        store = MemoryStore()
        await store.open()
        yield store
        await store.close()


class TestSqliteOutbox(WebhookOutboxContract):
    @pytest.fixture
    async def outbox(self, tmp_path: Path) -> AsyncIterator[WebhookOutbox]:
        store = SqliteStore(tmp_path / "rooms.db")
        await store.open()
        yield store
        await store.close()

    async def test_pending_deliveries_survive_a_reopen(self, tmp_path: Path) -> None:
        from roomsync.testing.webhook_contract import delivery

        path = tmp_path / "again.db"
        first = SqliteStore(path)
        await first.open()
        await first.add_webhooks([delivery(1), delivery(2)])
        await first.claim_webhooks(node="a", now_ms=0, lease_ms=10**9, limit=1)  # dies leased
        await first.close()
        second = SqliteStore(path)
        await second.open()
        try:
            got = await second.claim_webhooks(node="b", now_ms=0, lease_ms=10, limit=5)
            assert [d.id for d in got] == ["e2"]  # e1 waits for its lease to lapse
            later = await second.claim_webhooks(node="b", now_ms=10**9, lease_ms=10, limit=5)
            assert [d.id for d in later] == ["e1", "e2"]  # and e2, whose short lease lapsed
        finally:
            await second.close()
