"""The webhook outbox contract (:mod:`roomsync.testing.webhook_contract`) on PostgreSQL,
and its leases across two stores (two nodes) on one database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from roomsync.storage.postgres import PostgresStore
from roomsync.storage.webhooks import WebhookOutbox
from roomsync.testing.webhook_contract import WebhookOutboxContract, delivery


class TestPostgresOutbox(WebhookOutboxContract):
    @pytest.fixture
    async def outbox(self, postgres_schema_dsn: str) -> AsyncIterator[WebhookOutbox]:
        store = PostgresStore(postgres_schema_dsn, max_size=8)
        await store.open()
        yield store
        await store.close()


async def test_two_nodes_never_claim_the_same_delivery(postgres_schema_dsn: str) -> None:
    a, b = PostgresStore(postgres_schema_dsn, max_size=4), PostgresStore(postgres_schema_dsn)
    await asyncio.gather(a.open(), b.open())
    try:
        await a.add_webhooks([delivery(i) for i in range(60)])
        claims = await asyncio.gather(
            *(
                store.claim_webhooks(node=name, now_ms=0, lease_ms=1000, limit=9)
                for _ in range(4)
                for store, name in ((a, "a"), (b, "b"))
            )
        )
        ids = [d.id for batch in claims for d in batch]
        assert len(ids) == len(set(ids)) == 60
        assert await b.claim_webhooks(node="b", now_ms=999, lease_ms=10, limit=100) == []
        later = await b.claim_webhooks(node="b", now_ms=1000, lease_ms=10, limit=100)
        assert len(later) == 60  # every lease lapsed: b may take them all
    finally:
        await asyncio.gather(a.close(), b.close())
