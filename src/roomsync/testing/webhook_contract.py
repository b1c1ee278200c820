"""The webhook outbox contract (:mod:`roomsync.storage.webhooks`), run by
``tests/storage/test_webhook_outbox.py`` against every store that implements it.

A subclass provides an async ``outbox`` fixture (an open store) and, for the lease check
across nodes, ``second`` (another store object on the same data, when the backend has
one; None otherwise).
"""

from __future__ import annotations

import asyncio

from ..storage.webhooks import (
    WEBHOOK_LOG_KEEP,
    Outcome,
    WebhookDelivery,
    WebhookOutbox,
    WebhookResult,
)


def delivery(
    n: int, *, room: str = "r", next_ms: int = 0, url: str = "http://h/x"
) -> WebhookDelivery:
    return WebhookDelivery(
        key=f"e{n}|{url}",
        id=f"e{n}",
        room=room,
        event="peer.joined",
        url=url,
        body=f'{{"id":"e{n}"}}',
        created_ms=next_ms,
        next_ms=next_ms,
    )


def result(d: WebhookDelivery, outcome: Outcome = "delivered", at_ms: int = 0) -> WebhookResult:
    return WebhookResult(d.id, d.room, d.event, d.url, outcome, 200, d.attempts + 1, at_ms)


class WebhookOutboxContract:
    async def test_claims_are_due_oldest_first_and_leased(self, outbox: WebhookOutbox) -> None:
        await outbox.add_webhooks([delivery(1, next_ms=10), delivery(2, next_ms=5),
                                   delivery(3, next_ms=50)])  # fmt: skip
        await outbox.add_webhooks([delivery(1, next_ms=0)])  # a stored key is kept as it is
        got = await outbox.claim_webhooks(node="a", now_ms=20, lease_ms=100, limit=10)
        assert [d.id for d in got] == ["e2", "e1"]
        assert got[1].next_ms == 10 and got[1].body == '{"id":"e1"}'
        # Leased: nobody else gets them until the lease ends; e3 is not due yet.
        assert await outbox.claim_webhooks(node="b", now_ms=60, lease_ms=100, limit=10) == [
            delivery(3, next_ms=50)
        ]
        again = await outbox.claim_webhooks(node="b", now_ms=121, lease_ms=100, limit=1)
        assert [d.id for d in again] == ["e2"]  # e2's lease (until 120) lapsed: oldest first
        assert await outbox.pending_webhooks() == 3

    async def test_retry_and_finish(self, outbox: WebhookOutbox) -> None:
        d = delivery(1)
        await outbox.add_webhooks([d])
        [claimed] = await outbox.claim_webhooks(node="a", now_ms=0, lease_ms=1000, limit=5)
        await outbox.settle_webhook(claimed.key, retry_at_ms=500, error="connection refused")
        assert await outbox.claim_webhooks(node="a", now_ms=499, lease_ms=1000, limit=5) == []
        [retried] = await outbox.claim_webhooks(node="a", now_ms=500, lease_ms=1000, limit=5)
        assert retried.attempts == 1 and retried.last_error == "connection refused"
        await outbox.settle_webhook(retried.key, result=result(retried, at_ms=7))
        assert await outbox.pending_webhooks() == 0
        assert await outbox.webhook_log("r") == [result(retried, at_ms=7)]
        # Settling what is gone (another node finished it) does nothing.
        await outbox.settle_webhook(retried.key, result=result(retried, "failed"))
        await outbox.settle_webhook(retried.key, retry_at_ms=1)
        assert await outbox.webhook_log("r") == [result(retried, at_ms=7)]
        assert await outbox.pending_webhooks() == 0

    async def test_the_log_keeps_the_newest_per_room(self, outbox: WebhookOutbox) -> None:
        items = [delivery(i) for i in range(WEBHOOK_LOG_KEEP + 5)] + [delivery(99, room="other")]
        await outbox.add_webhooks(items)
        claimed = await outbox.claim_webhooks(node="a", now_ms=0, lease_ms=10, limit=1000)
        assert len(claimed) == len(items)
        for i, d in enumerate(claimed):
            await outbox.settle_webhook(d.key, result=result(d, at_ms=i))
        log = await outbox.webhook_log("r")
        assert len(log) == WEBHOOK_LOG_KEEP
        assert [r.at_ms for r in log] == list(range(WEBHOOK_LOG_KEEP + 4, 4, -1))
        assert [r.id for r in await outbox.webhook_log("other")] == ["e99"]
        assert len(await outbox.webhook_log("r", limit=3)) == 3

    async def test_concurrent_claims_never_share_a_delivery(self, outbox: WebhookOutbox) -> None:
        await outbox.add_webhooks([delivery(i) for i in range(40)])
        batches = await asyncio.gather(
            *(outbox.claim_webhooks(node=f"n{k}", now_ms=0, lease_ms=1000, limit=7)
              for k in range(8))
        )  # fmt: skip
        ids = [d.id for batch in batches for d in batch]
        assert len(ids) == len(set(ids)) == 40
