"""The SDK's local replica API: reads, writes, flush, subscriptions, change listeners (SPEC §1-2).

:class:`LocalReplica` is the asyncio side of :class:`~roomsync.core.replica.Replica`,
which makes every protocol decision (what the cursor is, what to send, what a refusal
rolls back). Reads are local and synchronous; writes apply locally at once and are sent
in the background, one pack per event-loop turn, cut by the welcome's limits
(:mod:`roomsync.core.packing`), up to ``max_inflight`` packs at a time; writes made
meanwhile join the next one.

Acks (SPEC §2): the replica settles each pack; a refused write is reported to
``on_refused`` callbacks and ``refused``, a write that lost LWW to ``on_superseded``
callbacks and ``stats.superseded``, and when the replica lacks the winner the
:class:`~.reconciler.Reconciler` fetches it with ``request{paths}``. A pack refused whole
by the rate limiter is sent again after :func:`~roomsync.core.packing.rate_limit_pause_ms`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..core import messages as m
from ..core.binpack import client_frame
from ..core.codec import pack_data, unpack_data
from ..core.codes import ErrorCode
from ..core.entries import Change
from ..core.errors import CodecError
from ..core.limits import WelcomeLimits
from ..core.packing import PackLimits, rate_limit_pause_ms
from ..core.replica import (
    AnswerKind,
    RefusedChange,
    Replica,
    Settled,
    SupersededChange,
    SyncMode,
)
from .connection import Connection
from .errors import RequestRefused
from .events import ChangeStream, Listeners
from .link import Link
from .reconciler import Reconciler

log = logging.getLogger("roomsync.client")


class LocalReplica:
    """Reads, writes and subscriptions of the client's replica, and their wire traffic."""

    def __init__(self, connection: Connection, replica: Replica, reconciler: Reconciler) -> None:
        self._connection = connection
        self._replica = replica
        self._reconciler = reconciler
        #: Every write the server (or the client, before sending) refused, in order.
        self.refused: list[RefusedChange] = []
        self.changed = Listeners[Change]()
        self.refusals = Listeners[RefusedChange]()
        self.superseded = Listeners[SupersededChange]()
        self._flush_scheduled = False
        self._subscribe_failure: RequestRefused | None = None
        connection.end_with_client(self.changed)
        reconciler.emit = self.changed.emit
        connection.handle("pack", self._on_pack)
        connection.handle("ack", self._on_ack)
        connection.handle_error("request", self._on_request_refused)
        connection.handle_error("subscribe", self._on_subscribe_refused)
        connection.watch(self)

    # -- reading -----------------------------------------------------------------------------

    @property
    def root(self) -> str:
        return self._replica.root_hex

    @property
    def cursor(self) -> int:
        return self._replica.cursor

    @property
    def pending(self) -> int:
        return len(self._replica.unsent) + sum(len(p) for p in self._replica.inflight)

    def get(self, path: str) -> bytes | None:
        change = self._replica.get(path)
        return None if change is None else change.value

    def get_json(self, path: str, default: Any = None) -> Any:
        value = self.get(path)
        return default if value is None else json.loads(value)

    def items(self, prefix: str = "/") -> Iterator[tuple[str, bytes]]:
        for change in self._replica.items(prefix):
            assert change.value is not None
            yield change.path, change.value

    def entry(self, path: str) -> Change | None:
        return self._replica.entries.get(path)

    # -- writing -----------------------------------------------------------------------------

    def set(self, path: str, value: bytes) -> Change:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"value must be bytes, not {type(value).__name__}: use set_json")
        return self._write(path, bytes(value))

    def set_json(self, path: str, obj: Any) -> Change:
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return self._write(path, data)

    def delete(self, path: str) -> Change:
        return self._write(path, None)

    def _write(self, path: str, value: bytes | None) -> Change:
        self._connection.check_running()
        change = self._replica.write(path, value, int(time.time() * 1000))
        self.changed.emit(change)
        self.schedule_flush()
        return change

    # -- waiting -----------------------------------------------------------------------------

    async def flush(self, timeout: float | None) -> None:
        await asyncio.wait_for(self._connection.wait_for(lambda: self._replica.idle), timeout)

    async def wait_synced(self, timeout: float | None) -> None:
        await asyncio.wait_for(self._connection.wait_for(self._connection.is_synced), timeout)

    def changes(self) -> ChangeStream:
        return ChangeStream(self.changed)

    # -- subscriptions -----------------------------------------------------------------------

    async def subscribe(self, paths: Sequence[str]) -> None:
        """Replace the prefixes; returns once the server sent what they add."""
        self._replica.set_prefixes(paths)
        target = self._replica.prefixes
        failure = self._subscribe_failure
        link = self._connection.link
        if link is not None and link.synced and not link.closing:
            self._maybe_subscribe(link)

        def done() -> bool:
            if self._subscribe_failure is not failure and self._subscribe_failure is not None:
                raise self._subscribe_failure
            return self._replica.synced_prefixes == target or self._replica.prefixes != target

        await self._connection.wait_for(done)

    def _maybe_subscribe(self, link: Link) -> None:
        if link.closing:
            return
        answer = self._replica.expect_subscribe()
        if answer is None:
            return
        link.answers[answer] = asyncio.get_running_loop().create_future()
        link.answers[answer].add_done_callback(_ignore_result)
        link.send(m.Subscribe(paths=answer.scope_in).to_wire())

    # -- sessions ----------------------------------------------------------------------------

    def link_welcomed(self, link: Link) -> None:
        """Size packs by the welcome, then catch up, resync (4001) or start sending."""
        welcome = link.welcome
        assert welcome is not None
        link.pack_limits = PackLimits.from_welcome(WelcomeLimits.parse(welcome.limits))
        self._replica.on_welcome(welcome.head, can_read="read" in welcome.caps)
        if link.mode is SyncMode.RECONCILE and "read" in welcome.caps:
            if "reconcile" not in welcome.caps:
                # Not granted any more: reconnect for a full catch-up instead.
                link.abort()
                return
            link.tasks.append(asyncio.get_running_loop().create_task(self._resync(link)))
        elif self._replica.synced:
            self._synced(link)
        self.schedule_flush()

    def link_down(self, link: Link) -> None:
        """Packs in flight go back to the front of the queue, to be sent again."""
        self._replica.requeue_inflight()

    async def _resync(self, link: Link) -> None:
        if await self._reconciler.resync(link):
            self._synced(link)

    def _synced(self, link: Link) -> None:
        link.synced = True
        self._connection.stats.last_catchup_changes = link.catchup_changes
        self._maybe_subscribe(link)
        self._reconciler.fetch_winners(link)
        self.schedule_flush()
        self._connection.pulse.fire()

    # -- outgoing packs ----------------------------------------------------------------------

    def schedule_flush(self) -> None:
        """Send after this turn, so all writes of one event-loop turn share a pack."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_outgoing)

    def _flush_outgoing(self) -> None:
        self._flush_scheduled = False
        link = self._connection.link
        if link is None or link.welcome is None or link.closing:
            return
        if asyncio.get_running_loop().time() < link.pause_until:
            return
        if "write" not in link.welcome.caps:
            self._settled(
                self._replica.refuse_unsent(
                    str(ErrorCode.FORBIDDEN), "this session has no 'write' capability"
                )
            )
            self._connection.pulse.fire()
            return
        limits = link.pack_limits
        oversize = self._replica.refuse_oversize(limits.max_bytes)
        if oversize.refused:
            self._settled(oversize)
            self._connection.pulse.fire()
        pack = self._replica.take_outgoing(limits.max_changes, limits.max_bytes)
        if pack is not None:
            if link.binary:
                link.send_binary(client_frame(pack))
            else:
                link.send(m.PackMsg(data=pack_data(pack)).to_wire())

    def _settled(self, settled: Settled) -> None:
        for refusal in settled.refused:
            log.warning(
                "write refused: %s %s: %s", refusal.change.path, refusal.code, refusal.message
            )
            self.refused.append(refusal)
            self.refusals.emit(refusal)
        for lost in settled.superseded:
            log.info(
                "write superseded: %s lost LWW to the entry at seq %d (a newer write)",
                lost.change.path,
                lost.seq,
            )
            self._connection.stats.superseded += 1
            self.superseded.emit(lost)
        for change in settled.reverted:
            self.changed.emit(change)

    # -- incoming frames ---------------------------------------------------------------------

    def _on_pack(self, link: Link, msg: m.PackMsg) -> None:
        try:
            changes = unpack_data(msg.data)
        except CodecError as exc:
            log.error("server sent an undecodable pack (%s): reconnecting", exc.message)
            link.abort()
            return
        if not link.synced:
            link.catchup_changes += len(changes)
        received = self._replica.receive(changes, head=msg.head, done=bool(msg.done))
        if self.changed.active():  # a catch-up of 100,000 changes with nobody listening
            for change in received.changed:
                self.changed.emit(change)
        finished = received.finished
        if finished is None:
            return
        future = link.answers.pop(finished, None)
        if future is not None and not future.done():
            future.set_result(None)
        if finished.kind in (AnswerKind.CATCHUP, AnswerKind.FULL):
            self._synced(link)
        elif finished.kind is AnswerKind.SUBSCRIBE:
            self._maybe_subscribe(link)

    def _on_ack(self, link: Link, msg: m.Ack) -> None:
        settled = self._replica.on_ack(msg.seqs, msg.refused or (), msg.superseded or ())
        self._settled(settled)
        if settled.superseded:
            self._reconciler.fetch_winners(link)
        if settled.retry:
            # Rate-limited, or a failed commit (``retry_after_ms``): the changes are queued
            # again; pause, then resend (after the reconnect when the server closes).
            pause = rate_limit_pause_ms(link.rate_limited) / 1000
            link.rate_limited += 1
            loop = asyncio.get_running_loop()
            link.pause_until = loop.time() + pause
            loop.call_later(pause, self.schedule_flush)
            return
        link.rate_limited = 0
        self._flush_outgoing()

    def _on_request_refused(self, link: Link, error: m.Error, refused: RequestRefused) -> None:
        self._fail_answer(link, AnswerKind.PATHS, refused)

    def _on_subscribe_refused(self, link: Link, error: m.Error, refused: RequestRefused) -> None:
        self._subscribe_failure = refused
        self._fail_answer(link, AnswerKind.SUBSCRIBE, refused)

    def _fail_answer(self, link: Link, kind: AnswerKind, error: RequestRefused) -> None:
        answer = self._replica.answer_failed(kind)
        if answer is not None:
            future = link.answers.pop(answer, None)
            if future is not None and not future.done():
                future.set_exception(error)


def _ignore_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
