"""The durable webhook outbox (``docs/hooks.md`` "Webhooks"): what a store keeps so that
no event is lost to a restart and each is delivered by one node.

A node writes each event it produces as one :class:`WebhookDelivery` per endpoint
(:meth:`WebhookOutbox.add_webhooks`). Deliverers *claim* due rows with a lease
(:meth:`~WebhookOutbox.claim_webhooks`): a claimed row is invisible to other claims until
its lease ends, so with several nodes on one store each delivery is attempted by one node
at a time, and a node that dies mid-delivery only delays it by the lease. Each attempt is
*settled* (:meth:`~WebhookOutbox.settle_webhook`): retried later (the row stays, unleased,
due at ``retry_at_ms``), or finished (the row goes, and a :class:`WebhookResult` joins the
room's short log that ``room get`` shows).

Invariants every implementation keeps:

- a delivery is returned by at most one claim whose lease has not ended;
- claims return due rows oldest first (``next_ms``, then insertion), at most ``limit``;
- settling a delivery that no longer exists (finished by another node after its lease
  lapsed) does nothing;
- the log keeps the newest :data:`WEBHOOK_LOG_KEEP` results per room, newest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "WEBHOOK_LOG_KEEP",
    "Outcome",
    "WebhookDelivery",
    "WebhookOutbox",
    "WebhookResult",
]

#: Results kept per room for ``room get``.
WEBHOOK_LOG_KEEP = 20

Outcome = Literal["delivered", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event for one endpoint. ``body`` is the exact JSON that is signed and sent;
    ``id`` is the event's id (its idempotency key, the same for every endpoint) and
    ``key`` this row's own key (``id`` + endpoint)."""

    key: str
    id: str
    room: str
    event: str
    url: str
    body: str
    created_ms: int
    next_ms: int
    attempts: int = 0
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """How a delivery ended: ``delivered`` (a 2xx), ``failed`` (retried until its time
    ran out, or refused with a 4xx other than 408/429) or ``cancelled`` (its endpoint was
    removed from the policy)."""

    id: str
    room: str
    event: str
    url: str
    outcome: Outcome
    status: int | None
    attempts: int
    at_ms: int
    error: str = ""


@runtime_checkable
class WebhookOutbox(Protocol):
    """Durable pending deliveries and the per-room log of finished ones."""

    async def add_webhooks(self, deliveries: Sequence[WebhookDelivery]) -> None:
        """Store ``deliveries`` (a key already stored is left as it is)."""

    async def claim_webhooks(
        self, *, node: str, now_ms: int, lease_ms: int, limit: int
    ) -> list[WebhookDelivery]:
        """Lease up to ``limit`` due deliveries (``next_ms <= now_ms``, unleased or with
        a lapsed lease) to ``node`` until ``now_ms + lease_ms``."""

    async def settle_webhook(
        self,
        key: str,
        *,
        retry_at_ms: int | None = None,
        error: str = "",
        result: WebhookResult | None = None,
    ) -> None:
        """End an attempt: with ``retry_at_ms``, keep it (attempts + 1, unleased, due
        then, ``error`` kept); with ``result``, remove it and log ``result``."""

    async def pending_webhooks(self) -> int:
        """Deliveries not yet finished (for the outbox gauge and ``/readyz`` detail)."""

    async def webhook_log(self, room: str, *, limit: int = WEBHOOK_LOG_KEEP) -> list[WebhookResult]:
        """The room's newest finished deliveries, newest first."""
