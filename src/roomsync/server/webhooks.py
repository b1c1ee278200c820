"""Signed event webhooks with a durable outbox and retries (``docs/hooks.md`` "Webhooks").

:class:`WebhookDispatcher` is the node's one producer and deliverer:

- :meth:`~WebhookDispatcher.emit` (synchronous, on the loop) turns an event into one
  :class:`~..storage.webhooks.WebhookDelivery` per endpoint that wants it (the room's
  effective ``policy.webhooks`` plus the global ones) and queues them; a writer task puts
  queued deliveries into the store's outbox, in batches, a moment later. Rooms without
  endpoints cost a list check.
- ``changes.committed`` is debounced per room (``webhooks.debounce_ms``): one event with
  the seq range, the number of changes and the paths (at most
  :data:`MAX_EVENT_PATHS`) of every commit in the window.
- A deliverer task claims due deliveries from the outbox with a lease (so with several
  nodes on one store each is attempted by one node at a time), POSTs each with its
  signature, and settles it: delivered on a 2xx; retried with exponential backoff and
  jitter on a network error, a timeout, 408, 429 or 5xx, for at most
  ``webhooks.retry_for_ms`` after the event; failed at once on any other status. An
  endpoint removed from the policy meanwhile cancels its deliveries.

Events are in memory only between :meth:`emit` and the outbox write (about
``webhooks.flush_ms``) and, for ``changes.committed``, during its debounce window; from
the outbox on, a restart or a ``kill -9`` loses none: the next start delivers them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..config import Policy
from ..config.policy import Webhook
from ..hooks.webhooks import EVENT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, sign
from ..storage.webhooks import Outcome, WebhookDelivery, WebhookOutbox, WebhookResult
from .logs import event
from .metrics import Metrics

log = logging.getLogger("roomsync.webhooks")

__all__ = ["MAX_EVENT_PATHS", "WebhookDispatcher", "WebhookTiming"]

#: Paths listed in one ``changes.committed`` event at most (``paths_truncated`` says more).
MAX_EVENT_PATHS = 100
#: Deliveries claimed per round and attempted at once.
CLAIM_BATCH = 16
#: Endpoints of deleted rooms remembered for their room.deleted deliveries at most.
MAX_GONE_ENDPOINTS = 1000
#: First retry delay; each retry doubles it up to ``max_backoff_ms``.
FIRST_BACKOFF_MS = 1000


@dataclass(frozen=True, slots=True)
class WebhookTiming:
    """The ``[webhooks]`` settings the dispatcher runs on."""

    timeout_ms: int = 5000
    retry_for_ms: int = 86_400_000
    max_backoff_ms: int = 60_000
    debounce_ms: int = 1000
    lease_ms: int = 30_000
    flush_ms: int = 50
    poll_ms: int = 1000


@dataclass(slots=True)
class _Committed:
    """``changes.committed`` of one room, gathering during its debounce window."""

    policy: Policy
    first_seq: int
    last_seq: int
    changes: int = 0
    paths: dict[str, None] = field(default_factory=dict)
    truncated: bool = False


class WebhookDispatcher:
    """Produces and delivers this node's webhook events (module docstring).

    ``outbox`` None (a store without one) disables webhooks. ``global_policy()`` is the
    node's current global policy; ``room_policy(room)`` a room's effective one, read when
    a delivery is attempted (the secret and the endpoint list may have changed).
    """

    def __init__(
        self,
        outbox: WebhookOutbox | None,
        metrics: Metrics,
        *,
        node: str,
        global_policy: Callable[[], Policy],
        room_policy: Callable[[str], Awaitable[Policy]],
        timing: WebhookTiming | None = None,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self.node = node
        self.global_policy = global_policy
        self.room_policy = room_policy
        self.timing = timing or WebhookTiming()
        self.now_ms = now_ms
        self._queued: list[WebhookDelivery] = []
        # room.deleted of a room with endpoints of its own: the room's policy goes with its
        # record, so its endpoints are remembered here for the delivery (in memory: after
        # a restart, such a delivery finds no endpoint and is cancelled).
        self._gone: dict[tuple[str, str], Webhook] = {}
        self._committed: dict[str, _Committed] = {}
        self._wake_writer: asyncio.Event | None = None
        self._wake_deliverer: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._closing = False

    # -- producing -------------------------------------------------------------------------

    def endpoints(self, policy: Policy, event_type: str) -> list[Webhook]:
        """The endpoints of a room with effective ``policy`` that want ``event_type``:
        the global ones and the room's own, once each by URL."""
        seen: dict[str, Webhook] = {}
        for hook in (*self.global_policy().webhooks, *policy.webhooks):
            if event_type in hook.events and hook.url not in seen:
                seen[hook.url] = hook
        return list(seen.values())

    def wants(self, policy: Policy) -> bool:
        """True when any endpoint may want events of a room with effective ``policy``."""
        return self.outbox is not None and bool(policy.webhooks or self.global_policy().webhooks)

    def emit(self, event_type: str, room: str, data: dict[str, Any], policy: Policy) -> None:
        """Queue event ``event_type`` of ``room`` for every endpoint that wants it."""
        if self.outbox is None or self._closing:
            return
        targets = self.endpoints(policy, event_type)
        if not targets:
            return
        now = self.now_ms()
        event_id = "evt_" + uuid.uuid4().hex
        body = json.dumps(
            {
                "id": event_id,
                "type": event_type,
                "room": room,
                "created_ms": now,
                "node": self.node,
                "data": data,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        if event_type == "room.deleted":
            for hook in targets:
                self._gone[(room, hook.url)] = hook
            while len(self._gone) > MAX_GONE_ENDPOINTS:
                del self._gone[next(iter(self._gone))]
        for hook in targets:
            self._queued.append(
                WebhookDelivery(
                    key=f"{event_id}|{hook.url}",
                    id=event_id,
                    room=room,
                    event=event_type,
                    url=hook.url,
                    body=body,
                    created_ms=now,
                    next_ms=now,
                )
            )
        if self._wake_writer is not None:
            self._wake_writer.set()

    def committed(self, room: str, first_seq: int, last_seq: int, paths: Sequence[str],
                  policy: Policy) -> None:  # fmt: skip
        """A commit of ``room``: folded into its debounced ``changes.committed``."""
        if self.outbox is None or not self.endpoints(policy, "changes.committed"):
            return
        pending = self._committed.get(room)
        if pending is None:
            pending = self._committed[room] = _Committed(policy, first_seq, last_seq)
            asyncio.get_running_loop().call_later(
                self.timing.debounce_ms / 1000, self._emit_committed, room
            )
        pending.policy = policy
        pending.last_seq = max(pending.last_seq, last_seq)
        pending.changes += len(paths)
        for path in paths:
            if len(pending.paths) >= MAX_EVENT_PATHS:
                pending.truncated = pending.truncated or path not in pending.paths
                continue
            pending.paths[path] = None

    def _emit_committed(self, room: str) -> None:
        pending = self._committed.pop(room, None)
        if pending is None:
            return
        self.emit(
            "changes.committed",
            room,
            {
                "first_seq": pending.first_seq,
                "last_seq": pending.last_seq,
                "changes": pending.changes,
                "paths": list(pending.paths),
                "paths_truncated": pending.truncated,
            },
            pending.policy,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.outbox is None or self._tasks:
            return
        self._wake_writer = asyncio.Event()
        self._wake_deliverer = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write_loop()), loop.create_task(self._deliver_loop())]

    async def stop(self) -> None:
        """Emit the debounced events, write what is queued, stop delivering (undelivered
        events stay in the outbox for the next start)."""
        if not self._tasks:
            return
        for room in list(self._committed):
            self._emit_committed(room)
        self._closing = True
        await self._write_queued()
        for wake in (self._wake_writer, self._wake_deliverer):
            if wake is not None:
                wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=self.timing.timeout_ms / 1000 + 1)
        self._tasks = []
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- writing the outbox ----------------------------------------------------------------

    async def _write_loop(self) -> None:
        assert self._wake_writer is not None
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            await asyncio.sleep(self.timing.flush_ms / 1000)  # gather a batch
            await self._write_queued()

    async def _write_queued(self) -> None:
        assert self.outbox is not None
        batch, self._queued = self._queued, []
        if not batch:
            return
        try:
            await self.outbox.add_webhooks(batch)
        except Exception as exc:  # the store is down: keep them and try again
            self._queued = batch + self._queued
            self.metrics.webhooks.labels("store-error").inc()
            event(log, "webhook.outbox_failed", level=logging.ERROR, error=str(exc))
            await asyncio.sleep(1.0)
            if self._wake_writer is not None:
                self._wake_writer.set()
            return
        if self._wake_deliverer is not None:
            self._wake_deliverer.set()

    # -- delivering ------------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        assert self._wake_deliverer is not None and self.outbox is not None
        wake = self._wake_deliverer
        while not self._closing:
            try:
                due = await self.outbox.claim_webhooks(
                    node=self.node,
                    now_ms=self.now_ms(),
                    lease_ms=self.timing.lease_ms,
                    limit=CLAIM_BATCH,
                )
            except Exception as exc:
                event(log, "webhook.claim_failed", level=logging.ERROR, error=str(exc))
                due = []
            if due:
                await asyncio.gather(*(self._attempt(d) for d in due))
                continue
            wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as its timeout fires, and the loop would outlive stop().
            try:
                async with asyncio.timeout(self.timing.poll_ms / 1000):
                    await wake.wait()
            except TimeoutError:
                pass

    async def _attempt(self, d: WebhookDelivery) -> None:
        assert self.outbox is not None
        try:
            policy = await self.room_policy(d.room)
        except Exception as exc:  # the room's record cannot be read now: later
            await self._retry(d, f"policy unavailable: {exc}")
            return
        hook = next((h for h in self.endpoints(policy, d.event) if h.url == d.url), None)
        if hook is None and d.event == "room.deleted":
            hook = self._gone.get((d.room, d.url))
        if hook is None:
            await self._finish(d, "cancelled", None, "the endpoint was removed from the policy")
            return
        body = d.body.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: d.id,
            EVENT_HEADER: d.event,
            SIGNATURE_HEADER: sign(hook.secret, body, timestamp=int(time.time())),
            "User-Agent": "roomsync-webhooks",
        }
        t0 = time.perf_counter()
        status: int | None = None
        try:
            http = self._session()
            async with http.post(d.url, data=body, headers=headers, allow_redirects=False) as r:
                status = r.status
                await r.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        else:
            error = f"HTTP {status}"
        finally:
            self.metrics.webhook_seconds.observe(time.perf_counter() - t0)
        if status is not None and 200 <= status < 300:
            await self._finish(d, "delivered", status, "")
        elif status is None or status in (408, 429) or status >= 500:
            await self._retry(d, error, status)
        else:
            await self._finish(d, "failed", status, f"{error}: not retried")

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timing.timeout_ms / 1000)
            )
        return self._http

    async def _retry(self, d: WebhookDelivery, error: str, status: int | None = None) -> None:
        assert self.outbox is not None
        now = self.now_ms()
        backoff = min(self.timing.max_backoff_ms, FIRST_BACKOFF_MS * 2 ** min(d.attempts, 20))
        at = now + int(backoff * random.uniform(0.5, 1.0))
        if at - d.created_ms > self.timing.retry_for_ms:
            await self._finish(d, "failed", status, f"{error}: gave up after {d.attempts + 1}")
            return
        self.metrics.webhooks.labels("retry").inc()
        try:
            await self.outbox.settle_webhook(d.key, retry_at_ms=at, error=error)
        except Exception as exc:  # the lease lapses and it is claimed again
            event(log, "webhook.settle_failed", level=logging.ERROR, error=str(exc))

    async def _finish(
        self, d: WebhookDelivery, outcome: Outcome, status: int | None, error: str
    ) -> None:
        assert self.outbox is not None
        result = WebhookResult(
            d.id,
            d.room,
            d.event,
            d.url,
            outcome,
            status,
            d.attempts + 1,
            self.now_ms(),
            error,
        )
        self.metrics.webhooks.labels(outcome).inc()
        if outcome != "delivered":
            event(log, "webhook." + outcome, level=logging.WARNING, room=d.room, id=d.id,
                  url=d.url, error=error)  # fmt: skip
        try:
            await self.outbox.settle_webhook(d.key, result=result)
        except Exception as exc:
            event(log, "webhook.settle_failed", level=logging.ERROR, error=str(exc))
