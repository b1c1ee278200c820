"""Loaded rooms: apply, persist, then broadcast and acknowledge; load on first use, unload
when idle.

Data flow for a client ``pack`` (SPEC §2)::

    ws handler -> RoomHost.submit_pack -> RoomState.apply(pending) (seqs assigned, MST updated)
               -> the room's queue -> GroupCommit (end of the loop turn: every room's queue)
               -> Store.append_batches(_now) (one transaction for all those rooms)
               -> per room: RoomState.committed -> broadcast (one frame per subscription
                  group) -> acks

Invariant: no peer ever receives a change the store does not hold. A change is applied
at once (so its seq and the LWW outcome are known), but it stays *pending* until its
commit: broadcasts are written only after the commit, and every read that hands changes
to a peer (catch-up, ``request``, ``subscribe``) uses the state's durable view. All packs
that arrive while a commit runs go into the next one (group commit), and their
broadcasts share one frame per subscription group; the packs of every room that arrive
in one event-loop turn share one store transaction (:class:`GroupCommit`), each room's
batch fenced on its own. The broadcast of a batch goes out before its acks, so a client
whose cursor follows its acks never skips a change.

If a commit fails, nothing of it was broadcast or acknowledged: the authors get
``refused: internal`` acks, the room's peers are closed with 1011 and a retry hint, and
the room is evicted at once, so the next hello loads it again from what the store
really holds (and the seq of the failed change is reused by a change that exists). A
failed transaction of several rooms fails each of them so; a batch the store refuses
inside it (a head another node moved) fails its room alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..bus.base import Bus, RoomEvent, Subscription
from ..bus.memory import MemoryBus
from ..config import Policy
from ..core import mst as mst_mod
from ..core.binpack import server_frame
from ..core.catchup import BlockCache, seq_blocks
from ..core.codec import b64encode
from ..core.codes import CloseCode, ErrorCode
from ..core.entries import Change
from ..core.errors import (
    Overload,
    RateLimited,
    ResyncRequired,
    RoomClosed,
)
from ..core.limits import announced
from ..core.postcard import encode_pack
from ..core.presence import PresenceTable
from ..core.room import ApplyLimits, RoomState, client_changes
from ..core.sketch import serve_probe_message
from ..core.types import any_prefix_matches
from ..hooks import ChangesContext, CommitEvent, PeerEvent, RoomInfo
from ..storage.base import AppendBatch, RoomRecord, Store, StoreConflict, StoreError
from .capture import MAX_RECEIVER_IDS, Capture
from .hooks import AppHooks
from .logs import event
from .metrics import Metrics
from .outbox import FrameSnapshot, FullStateSnapshot, binary_frame, text_frame
from .peer import Peer
from .webhooks import WebhookDispatcher

log = logging.getLogger("roomsync.rooms")

#: Presence is coalesced over at least this window even when broadcast_window_ms is 0.
PRESENCE_MIN_WINDOW_MS = 10
#: A committed batch this large gets its MST root hashed at once (see _hash_ahead).
EAGER_ROOT_BATCH = 100
#: Smaller batches get it hashed after the room has been quiet this long (give or take
#: half of it: one timer serves every room, see QuietRehash)...
ROOT_IDLE_S = 0.2
#: ... once they add up to this many changes since the root was last hashed. Fewer are
#: left for whoever reads the root next (a welcome re-hashes at most this many paths,
#: well under a millisecond): a room of light traffic costs no wake-up and no re-hash
#: per write, and the writes between two reads share one re-hash of the nodes above.
QUIET_ROOT_CHANGES = 64
#: A room of at least this many entries gets its full-state catch-up encoded ahead once
#: it is quiet (see RoomHost.on_quiet), so the next joiner's frames are a copy: about
#: 1.5 ms of encoding per thousand entries that the joiner would otherwise wait for.
#: Smaller rooms encode on demand in less time than a round trip.
WARM_CATCHUP_ENTRIES = 10_000
#: Groups of a full catch-up (``catchup_chunk`` changes each) encoded per loop turn
#: while warming: other work runs between them.
WARM_GROUPS_PER_TURN = 2
#: Packs of one peer waiting for the app's validate hook (or for their commit) at most;
#: a peer past it is closed with 1011 and a retry hint, so a slow hook bounds memory.
MAX_VALIDATING_PACKS = 64
#: Full-state snapshots kept per room at one head (one per distinct subscription).
MAX_SNAPSHOTS = 8
#: Scopes (catch-up chunk, prefixes) whose encoded full-state groups a room keeps.
MAX_BLOCK_CACHES = 4
#: Rows read per store call when a room catches up on other nodes' commits.
SYNC_PAGE = 2000
#: Times a pack may lose the race for its seqs to another node's commit before it is
#: refused (``internal`` with a retry hint: the SDK sends it again later).
MAX_CONFLICTS = 20
#: Answers (catch-up, ``request``, ``subscribe``) queued for one peer at most, the one
#: streaming included. Waiting answers are built only when their turn comes, so a peer
#: that asks and never reads holds one answer in memory, not one per request.
MAX_QUEUED_ANSWERS = 8


class _GroupFrame:
    """One broadcast ``pack``: the changes a subscription sees, encoded once as postcard
    and framed on first use as JSON text and/or binary (SPEC §2 cap ``binary``), with
    how many peers it was written to (counted as it goes out, for the metrics and the
    capture) and their ids while the capture lists them (``to``, small rooms only)."""

    __slots__ = ("_binary", "_text", "changes", "head", "pack", "receivers", "to")

    def __init__(self, pack: bytes, changes: int, head: int) -> None:
        self.pack = pack
        self.changes = changes
        self.head = head
        self._text: bytes | None = None
        self._binary: bytes | None = None
        self.receivers = 0
        self.to: list[str] | None = None

    def frame(self, binary: bool) -> bytes:
        if binary:
            if self._binary is None:
                self._binary = binary_frame(server_frame(self.pack, head=self.head))
            return self._binary
        if self._text is None:
            self._text = text_frame(
                {"type": "pack", "data": b64encode(self.pack), "head": self.head}
            )
        return self._text

    @property
    def size(self) -> int:
        """The size of the frame written (the JSON one when both were)."""
        frame = self._text if self._text is not None else self._binary
        return 0 if frame is None else len(frame)


def _group_frame(
    pairs: list[tuple[str | None, Change]],
    prefixes: tuple[str, ...],
    head: int,
    excluded: str | None,
) -> _GroupFrame | None:
    """The ``pack`` frame of the changes a subscription sees (minus ``excluded``'s own);
    None when it sees none."""
    everything = prefixes == ("/",)
    changes = [
        c
        for author, c in pairs
        if (excluded is None or author is not excluded)
        and (everything or any_prefix_matches(prefixes, c.path))
    ]
    if not changes:
        return None
    return _GroupFrame(encode_pack(changes), len(changes), head)


@dataclass(slots=True)
class _Validating:
    """A decoded client pack waiting for the app's ``validate`` hook."""

    peer: Peer
    changes: list[Change]
    t0: float


def _peer_event(room: str, peer: Peer) -> PeerEvent:
    s = peer.session
    return PeerEvent(room, peer.id, s.actor, tuple(s.caps), peer.claims)


def _peer_data(peer: Peer) -> dict[str, Any]:
    s = peer.session
    return {"peer": peer.id, "actor": s.actor, "caps": list(s.caps)}


def _internal_refusal(peer: Peer, t0: float) -> _Submitted:
    return _Submitted(
        peer,
        [],
        [{"index": -1, "code": str(ErrorCode.INTERNAL), "message": "internal error: retry"}],
        [],
        t0,
    )


@dataclass(slots=True)
class _Submitted:
    peer: Peer | None
    result_seqs: list[int | None]
    refused: list[dict[str, object]]
    accepted: list[Change]
    t0: float
    superseded: list[dict[str, int]] = field(default_factory=list)
    #: What was applied (to apply it again after another node committed first), with
    #: the app's refusals; None for a refusal of the whole pack.
    changes: list[Change] | None = None
    refuse: dict[int, tuple[str, str]] | None = None
    #: Commits of it the store refused because another node had taken its seqs.
    conflicts: int = 0


@dataclass(slots=True)
class RoomHost:
    """One loaded room. Lives on the event loop; all methods are called from it."""

    record: RoomRecord
    state: RoomState
    policy: Policy
    store: Store
    metrics: Metrics
    now_ms: Callable[[], int]
    bus: Bus = field(default_factory=MemoryBus)
    node: str = ""
    commit_window_ms: int = 0
    peers: set[Peer] = field(default_factory=set)
    refs: int = 0
    closed: bool = False
    unload_handle: asyncio.TimerHandle | None = None
    #: Commits this room's writes with those of the other rooms of the same loop turn.
    group_commit: GroupCommit | None = None
    _queue: list[_Submitted] = field(default_factory=list)
    _scheduled: bool = False  # waiting for its commit window or in group_commit's list
    _committing: bool = False  # a batch of it is being committed
    _compact_task: asyncio.Task[None] | None = None
    quiet: QuietRehash | None = None
    #: Changes committed since the root was hashed ahead (see :meth:`_hash_ahead`).
    unhashed: int = 0
    #: Changes committed since the full catch-up was last encoded ahead (:meth:`on_quiet`).
    unwarmed: int = 0
    #: Why the room failed (a commit failed); it is evicted and refuses writes.
    failed: str | None = None
    #: Called once when a commit fails (the registry evicts the room).
    on_failed: Callable[[RoomHost], None] | None = None
    #: The app's hooks (``docs/hooks.md``): ``validate`` gates packs, events follow commits.
    hooks: AppHooks | None = None
    # With a validate hook: packs (and whole-pack refusals) of this room waiting for their
    # validation, in arrival order, and the task working through them.
    _gate: deque[_Validating | _Submitted] = field(default_factory=deque)
    _gating: asyncio.Task[None] | None = None
    #: Signed event webhooks (``policy.webhooks``): peers, commits and blobs of this room.
    webhooks: WebhookDispatcher | None = None
    _snapshots: dict[tuple[int, tuple[str, ...]], FrameSnapshot] = field(default_factory=dict)
    _block_caches: dict[tuple[int, tuple[str, ...]], BlockCache] = field(default_factory=dict)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    presence: PresenceTable = field(init=False)
    #: The room's recent envelopes, redacted (``room capture``; ``policy.capture_envelopes``).
    capture: Capture = field(init=False)
    _subscription: Subscription | None = None
    _presence_flush: asyncio.TimerHandle | None = None
    _presence_tick: asyncio.TimerHandle | None = None
    # Rooms are created on the running loop; asking for it per write costs a getpid().
    _loop: asyncio.AbstractEventLoop = field(init=False)
    _limits: ApplyLimits | None = None
    _limits_of: Policy | None = None
    # Several nodes (SPEC §8): the highest seq other nodes announced on the bus, whether
    # the bus may have missed some (``resync``), and the task that reads the store up
    # to them (:meth:`_sync`); while it runs, nothing of this room is committed.
    #: Sends a signal to the other nodes (kind, room, data); None with one node.
    signal: Callable[[str, dict[str, Any]], None] | None = None
    #: Several nodes: whether this node owns a room's compaction (and ticks) by its
    #: record (``server/cluster.py``); None with one node (it owns everything).
    owns: Callable[[RoomRecord], bool] | None = None
    #: Other nodes' presence members of this room: node -> peer -> its wire entry.
    remote_presence: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _remote_head: int = 0
    _resync: bool = False
    _syncing: asyncio.Task[None] | None = None
    _publishing: bool = False

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle.set()
        if self.group_commit is None:
            self.group_commit = GroupCommit(self.store, self.metrics)
        # Delivery consumes the room's events from the bus, whoever committed them.
        self._subscription = self.bus.subscribe(self.record.room, self._on_event)
        p = self.policy
        self.presence = PresenceTable(
            ttl_ms=p.presence_ttl_ms,
            max_bytes=p.presence_max_bytes,
            max_members=p.presence_max_members,
            leave_grace_ms=p.presence_leave_grace_ms,
        )
        self.capture = Capture(p.capture_envelopes, self.now_ms)

    @property
    def room(self) -> str:
        return self.record.room

    def limits(self) -> ApplyLimits:
        """The apply limits of the room's effective policy (built once per policy)."""
        policy = self.policy
        if self._limits_of is not policy:
            self._limits = ApplyLimits(
                max_value_bytes=policy.max_value_bytes,
                max_clock_skew_ms=policy.max_clock_skew_ms,
            )
            self._limits_of = policy
        assert self._limits is not None
        return self._limits

    # -- membership --------------------------------------------------------------------

    def join(self, peer: Peer, cursor: int | None, *, catchup: bool = True) -> None:
        """Welcome has been sent; bring ``peer`` up to date and start its broadcasts.

        ``catchup`` False (hello ``catchup: false``) skips the catch-up: the client will
        reconcile through the MST instead of receiving the whole state.
        """
        self.peers.add(peer)
        hooks = self.hooks
        if hooks is not None and hooks.events:
            hooks.emit("on_join", _peer_event(self.room, peer))
        self.notify("peer.joined", _peer_data(peer))
        if not peer.reads or not catchup:
            return
        state = self.state
        prefixes = peer.session.prefixes
        if cursor:
            self._queue_answer(peer, lambda: self._snapshot(state.changes_since(cursor, prefixes)))
            return
        # A full catch-up: peers that join together share one lazily encoded snapshot.
        key = (state.durable_head, prefixes)
        snap = self._snapshots.get(key)
        if snap is None:
            if len(self._snapshots) >= MAX_SNAPSHOTS or any(
                k[0] != state.durable_head for k in self._snapshots
            ):
                self._snapshots = {
                    k: v
                    for k, v in self._snapshots.items()
                    if k[0] == state.durable_head and v.readers
                }
            snap = self._snapshots[key] = self._full_snapshot(prefixes)
        self._queue_answer(peer, snap)

    def _full_snapshot(self, prefixes: tuple[str, ...]) -> FrameSnapshot:
        """The full state under ``prefixes`` at the durable head, cut by seq range so
        that the groups no write touched since an earlier joiner are copies."""
        chunk = max(1, self.policy.catchup_chunk)
        groups = seq_blocks(self.state.changes_since(0, prefixes), chunk)
        caches = self._block_caches
        scope = (chunk, prefixes)
        cache = caches.pop(scope, None)
        if cache is None:
            cache = BlockCache()
            while len(caches) >= MAX_BLOCK_CACHES:
                del caches[next(iter(caches))]  # the least recently used scope
        caches[scope] = cache
        cache.retain(groups)
        return FullStateSnapshot(groups, self.state.durable_head, cache)

    @property
    def head(self) -> int:
        """The highest durable seq: what a peer can be caught up to."""
        return self.state.durable_head

    def refuse_pack(self, peer: Peer, code: str, message: str) -> None:
        """Refuse a whole pack with an ack that keeps its place among the pending acks."""
        peer.pending_acks += 1
        item = _Submitted(
            peer, [], [{"index": -1, "code": code, "message": message}], [], time.perf_counter()
        )
        if self._gating is not None:  # behind packs still being validated
            self._gate.append(item)
        else:
            self._enqueue(item)

    def notify(self, event_type: str, data: dict[str, Any]) -> None:
        """Send webhook event ``event_type`` of this room to the endpoints that want it."""
        webhooks = self.webhooks
        if webhooks is not None and webhooks.wants(self.policy):
            webhooks.emit(event_type, self.room, data, self.policy)

    def leave(self, peer: Peer) -> None:
        if peer in self.peers:
            hooks = self.hooks
            if hooks is not None and hooks.events:
                hooks.emit("on_leave", _peer_event(self.room, peer))
            self.notify("peer.left", _peer_data(peer))
        self.peers.discard(peer)
        if peer.id in self.presence.entries:
            self.presence.disconnect(peer.id, self.now_ms())
            self._expire_presence()

    # -- presence (SPEC §5) ------------------------------------------------------------------

    def set_presence(self, peer: Peer, state: object, size: int) -> None:
        """``presence{state}``; a null state means "no presence" and sends presence-leave."""
        if state is None:
            self.presence.clear(peer.id)
        else:
            self.presence.update(peer.id, peer.session.actor, state, size, self.now_ms())
        self.metrics.presence_updates.inc()
        self._schedule_presence()

    def touch(self, peer: Peer, now_ms: int) -> None:
        self.presence.touch(peer.id, now_ms)

    def _schedule_presence(self) -> None:
        loop = asyncio.get_running_loop()
        if self._presence_flush is None and self.presence.has_pending():
            window = max(self.policy.broadcast_window_ms, PRESENCE_MIN_WINDOW_MS) / 1000
            self._presence_flush = loop.call_later(window, self._flush_presence)
        if self._presence_tick is None:
            due = self.presence.next_deadline()  # the core says when someone may expire
            if due is not None:
                delay = max(0, due - self.now_ms()) / 1000
                self._presence_tick = loop.call_later(delay, self._expire_presence)

    def _expire_presence(self) -> None:
        self._presence_tick = None
        expired = self.presence.expire(self.now_ms())
        if expired:
            self.metrics.presence_expired.inc(len(expired))
        self._schedule_presence()

    def _flush_presence(self) -> None:
        """One ``presence`` batch and the ``presence-leave`` messages of this window."""
        self._presence_flush = None
        changed, left = self.presence.take_dirty()
        # Leaves first: after a quick reconnect, the old peer goes before the new one shows.
        if (changed or left) and self.signal is not None:
            self.signal("presence", {"changed": changed, "left": left})
        self._send_presence(changed, left)
        self._schedule_presence()

    def _send_presence(self, changed: list[dict[str, Any]], left: list[str]) -> None:
        """``presence-leave`` for ``left``, then one ``presence`` of ``changed``, to every
        peer of this node that has the ``presence`` capability."""
        msgs: list[dict[str, Any]] = [{"type": "presence-leave", "peer": p} for p in left]
        if changed:
            msgs.append({"type": "presence", "peers": changed})
        if msgs:
            frames = [text_frame(msg) for msg in msgs]
            receivers = 0
            for peer in list(self.peers):
                if "presence" in peer.session.caps and not peer.closing:
                    receivers += 1
                    for frame in frames:
                        peer.out.send_frame(frame)
            if changed:
                self.metrics.msg_out("presence", len(self.peers))
            if left:
                self.metrics.msg_out("presence-leave", len(left) * len(self.peers))
            if self.capture.size and receivers:
                for msg, frame in zip(msgs, frames, strict=True):
                    self.capture.record_out("*", msg, len(frame), receivers=receivers)

    def presence_members(self) -> list[dict[str, Any]]:
        """Everyone present in the room: this node's members, then the other nodes'."""
        members = self.presence.snapshot()
        for peers in self.remote_presence.values():
            members.extend(peers.values())
        return members

    def remote_presence_diff(
        self, node: str, changed: list[dict[str, Any]], left: list[str], *, full: bool = False
    ) -> None:
        """Another node's presence diff of this room: kept, and what it changes passed to
        this node's peers (its members are bounded like a node's own:
        ``presence_max_members`` in all, the newest beyond it ignored). ``full``: it is
        that node's whole membership of the room (the periodic repair of a lost signal):
        whoever it does not list left."""
        peers = self.remote_presence.setdefault(node, {})
        if full:
            listed = {e.get("peer") for e in changed}
            left = [*left, *(p for p in peers if p not in listed)]
        gone = [p for p in left if peers.pop(p, None) is not None]
        room_for = (
            self.policy.presence_max_members
            - len(self.presence)
            - sum(len(v) for v in self.remote_presence.values())
        )
        kept: list[dict[str, Any]] = []
        for entry in changed:
            peer = entry.get("peer")
            if not isinstance(peer, str):
                continue
            known = peers.get(peer)
            if known is None:
                if room_for <= 0:
                    continue
                room_for -= 1
            elif known == entry:
                continue  # nothing new for this node's peers
            peers[peer] = entry
            kept.append(entry)
        if not peers:
            del self.remote_presence[node]
        if kept or gone:
            self._send_presence(kept, gone)

    def drop_node_presence(self, node: str) -> None:
        """A node stopped (or died): its members leave."""
        peers = self.remote_presence.pop(node, None)
        if peers:
            self._send_presence([], list(peers))

    def stop_timers(self) -> None:
        """Stop everything this host does by itself: its presence timers, its rehash and
        its subscription to the bus. The other nodes are told that this node's members
        of the room left (the room unloads here: no later flush would say so)."""
        if self.signal is not None:
            _, left = self.presence.take_dirty()
            gone = set(left) | set(self.presence.entries)
            if gone:
                self.signal("presence", {"changed": [], "left": sorted(gone)})
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        for handle in (self._presence_flush, self._presence_tick):
            if handle is not None:
                handle.cancel()
        self._presence_flush = self._presence_tick = None
        if self.quiet is not None:
            self.quiet.forget(self)

    def _snapshot(self, changes: list[Change]) -> FrameSnapshot:
        """The frames of an answer of durable ``changes``, ending at the durable head."""
        return FrameSnapshot(changes, self.state.durable_head, max(1, self.policy.catchup_chunk))

    def _queue_answer(self, peer: Peer, job: FrameSnapshot | Callable[[], FrameSnapshot]) -> None:
        """Stream an answer to ``peer`` after the ones queued before it (see
        :meth:`~.outbox.Outbox.queue_answer`): built from the durable state when its turn
        comes, paced by backpressure, broadcasts held meanwhile."""
        peer.out.queue_answer(job)

    def _admit_answer(self, peer: Peer) -> None:
        """Refuse a request (``rate-limited``, the session survives) when ``peer`` already
        has :data:`MAX_QUEUED_ANSWERS` answers queued."""
        queued = peer.out.answers_queued()
        if queued >= MAX_QUEUED_ANSWERS:
            self.metrics.rate_limited.inc()
            raise RateLimited(
                f"{queued} answers are already queued for this peer: read them (wait for "
                "their done) before sending more requests",
                close=None,
            )

    # -- writes ------------------------------------------------------------------------

    def submit_pack(self, peer: Peer, data: str | bytes) -> None:
        """Decode, apply and queue a client pack for persistence; broadcast and ack follow
        the commit."""
        t0 = time.perf_counter()
        self._check_writable()
        changes = client_changes(
            data,
            max_pack_bytes=self.policy.max_pack_bytes,
            max_changes=self.policy.max_changes_per_pack,
            bound_actor=peer.actor_bound,
        )
        hooks = self.hooks
        if hooks is not None and hooks.validates:
            if peer.pending_acks >= MAX_VALIDATING_PACKS:
                raise Overload(
                    f"{peer.pending_acks} packs wait for the app's validate hook: slow down "
                    "and retry",
                    retry_after_ms=1000,
                )
            peer.pending_acks += 1
            self._gate_push(_Validating(peer, changes, t0))
            return
        peer.pending_acks += 1
        self._apply_pack(peer, changes, t0, None)

    def _apply_pack(
        self,
        peer: Peer,
        changes: list[Change],
        t0: float,
        refuse: dict[int, tuple[str, str]] | None,
    ) -> None:
        """Apply a decoded pack (minus the changes ``refuse`` names) and queue it for
        persistence; its ack is already counted in ``peer.pending_acks``."""
        result = self.state.apply(
            changes, now_ms=self.now_ms(), limits=self.limits(), pending=True, refuse=refuse
        )
        m = self.metrics
        m.pack_apply.observe(time.perf_counter() - t0)
        if result.accepted:
            m.changes_applied.inc(len(result.accepted))
        if result.superseded:
            m.changes_superseded.inc(len(result.superseded))
        for r in result.refused:
            m.changes_refused.labels(str(r["code"])).inc()
        self._enqueue(
            _Submitted(
                peer,
                result.seqs,
                result.refused,
                result.accepted,
                t0,
                result.superseded,
                changes,
                refuse,
            )
        )

    def _gate_push(self, item: _Validating | _Submitted) -> None:
        self._gate.append(item)
        if self._gating is None:
            self._idle.clear()
            self._gating = self._loop.create_task(self._run_gate())

    async def _run_gate(self) -> None:
        """Validate the gated packs one at a time, in order, then apply each (the app's
        refusals folded into its ack); whole-pack refusals queued behind a pack keep
        their place. A failing hook refuses its pack (fail closed, :class:`AppHooks`)."""
        hooks = self.hooks
        assert hooks is not None
        gate = self._gate
        try:
            while gate:
                item = gate.popleft()
                if isinstance(item, _Submitted):
                    self._enqueue(item)
                    continue
                peer = item.peer
                ctx = ChangesContext(
                    self.room, peer.id, peer.session.actor, peer.claims, tuple(item.changes)
                )
                try:
                    refuse = await hooks.validate(ctx)
                except Exception:  # AppHooks answers every failure; this is a bug of ours
                    log.exception("validating a pack of room %r failed", self.room)
                    self._enqueue(_internal_refusal(peer, item.t0))
                    continue
                if self.closed or self.failed is not None:
                    # Its peers were closed (4004, or 1011 with a retry hint): the SDK
                    # sends unacknowledged writes again after reconnecting.
                    continue
                try:
                    self._apply_pack(peer, item.changes, item.t0, refuse)
                except Exception:  # a bug must not leave the packs behind it unanswered
                    log.exception("applying a validated pack of room %r failed", self.room)
                    self._enqueue(_internal_refusal(peer, item.t0))
        finally:
            self._gating = None
            if not self._queue and not self._scheduled and not self._committing:
                self._idle.set()

    def _check_writable(self) -> None:
        if self.failed is not None:
            raise Overload(
                f"room {self.room!r} is reloading after a store failure ({self.failed}): reconnect",
                retry_after_ms=1000,
            )
        if self.closed:
            raise RoomClosed(f"room {self.room!r} is closed")

    def apply_local(self, changes: list[Change]) -> list[int | None]:
        """Apply server-side changes (control plane): persisted, then broadcast like a pack."""
        self._check_writable()
        result = self.state.apply(changes, now_ms=self.now_ms(), limits=self.limits(), pending=True)
        self._enqueue(
            _Submitted(
                None,
                result.seqs,
                result.refused,
                result.accepted,
                time.perf_counter(),
                changes=changes,
            )
        )
        return result.seqs

    def _enqueue(self, item: _Submitted) -> None:
        self._queue.append(item)
        if not self._scheduled and not self._committing:
            self._schedule()

    def _schedule(self) -> None:
        """Hand the queue to the group commit: at the end of this loop turn, or once the
        commit window (``storage.commit_window_ms``, ``policy.broadcast_window_ms``) has
        gathered more."""
        self._idle.clear()
        if self._syncing is not None:
            return  # the sync applies the queue again and schedules it when it ends
        self._scheduled = True
        assert self.group_commit is not None
        wait_ms = max(self.commit_window_ms, self.policy.broadcast_window_ms)
        if wait_ms > 0:
            self._loop.call_later(wait_ms / 1000, self.group_commit.ready, self)
        else:
            self.group_commit.ready(self)

    def _take(self) -> tuple[list[_Submitted], list[Change]]:
        """The queued packs and their accepted changes, for one commit (the group commit
        calls it); the room counts as committing until :meth:`_commit_done`."""
        self._scheduled = False
        if self._syncing is not None:  # its seqs are being re-assigned: not now
            return [], []
        items, self._queue = self._queue, []
        if items:
            self._committing = True
        elif not self._committing:
            self._idle.set()
        return items, [c for item in items for c in item.accepted]

    def _commit_done(
        self, items: list[_Submitted], accepted: list[Change], error: BaseException | None
    ) -> None:
        """The commit of ``items`` ended (``error``: it failed, nothing of it is stored).

        Invariant: only now, after the store holds the changes, are they broadcast (the
        bus delivers them to every node's peers) and then acknowledged."""
        self._committing = False
        try:
            if isinstance(error, StoreConflict):
                self._conflicted(items, error)
                return
            if error is not None:
                self._store_failed(items, error)
                return
            if accepted:
                self.state.committed(accepted[-1].seq or 0)
                if self._snapshots:
                    # The head moved: snapshots nobody is reading are stale.
                    self._snapshots = {k: v for k, v in self._snapshots.items() if v.readers}
                committed = RoomEvent(
                    self.room,
                    tuple(accepted),
                    tuple(
                        item.peer.id if item.peer is not None else None
                        for item in items
                        for _ in item.accepted
                    ),
                    self.node,
                )
                self._publishing = True  # the bus hands it back to _on_event at once
                try:
                    self.bus.publish(committed)
                finally:
                    self._publishing = False
                self._after_commit(committed)
                self.metrics.broadcast.observe(time.perf_counter() - items[0].t0)
            self._deliver(items)
            self._maybe_compact()
            self._hash_ahead(len(accepted))
        finally:
            self._maybe_sync()
            if self._syncing is not None:
                pass  # it schedules the queue when it ends
            elif self._queue and self.failed is None:
                self._schedule()
            else:
                self._idle.set()

    # -- several nodes: other nodes' commits (SPEC §8) -------------------------------------

    def _conflicted(self, items: list[_Submitted], exc: StoreConflict) -> None:
        """The store refused the batch: another node committed to this room first, so
        its seqs are taken. Nothing of it was stored, broadcast or acknowledged; the
        packs go back to the front of the queue and are applied again on top of what
        the store holds (:meth:`_sync`). A pack that keeps losing the race is refused
        with a retry hint (the SDK sends it again)."""
        self.metrics.commit_conflicts.inc()
        again: list[_Submitted] = []
        for item in items:
            item.conflicts += 1
            if item.conflicts <= MAX_CONFLICTS or item.changes is None:
                again.append(item)
            elif item.peer is not None:
                self._refuse_all(item, "the room is written from several nodes at once: retry")
        self._queue = again + self._queue
        self._remote_head = max(self._remote_head, exc.actual)
        self._resync = True

    def _refuse_all(self, item: _Submitted, message: str) -> None:
        """Answer ``item`` with an ack refusing each of its changes (``internal``, with a
        retry hint: nothing of it was stored, the SDK sends it again)."""
        peer = item.peer
        if peer is None:
            return
        peer.pending_acks -= 1
        n = len(item.changes) if item.changes is not None else len(item.result_seqs)
        peer.send(
            {
                "type": "ack",
                "seqs": [None] * n,
                "refused": [
                    {
                        "index": i,
                        "code": str(ErrorCode.INTERNAL),
                        "message": message,
                        "retry_after_ms": 250,
                    }
                    for i in range(n)
                ],
            }
        )

    def resync(self) -> None:
        """Other nodes' commits to this room may have been missed (the bus subscription
        just became active, at load or after a reconnect): read the store from the
        durable head on."""
        self._resync = True
        self._maybe_sync()

    def _remote(self, event: RoomEvent) -> None:
        """Another node committed ``event``: deliver it in seq order, each seq once.

        In the usual case it follows the durable head and nothing of this node is
        pending: it is absorbed into the state and broadcast at once. A duplicate is
        dropped; one that leaves a gap behind it (a lost or late bus message), or that
        arrives while this node has writes of its own pending (their seqs are taken:
        their commit is refused or will be), is read from the store instead."""
        if self.failed is not None or self.closed:
            return
        state = self.state
        last = event.last_seq
        if last <= state.durable_head:
            self.metrics.bus_events.labels("duplicate").inc()
            return
        self._remote_head = max(self._remote_head, last)
        if (
            event.first_seq == state.durable_head + 1
            and self._syncing is None
            and not self._committing
            and not self._queue
            and not state.pending
        ):
            self.metrics.bus_events.labels("delivered").inc()
            state.absorb(event.changes)
            self._absorbed(event.changes, event.node)
            return
        if event.first_seq > state.durable_head + 1:
            self.metrics.bus_events.labels("gap").inc()
        else:
            self.metrics.bus_events.labels("deferred").inc()
        self._maybe_sync()

    def heard_head(self, seq: int) -> None:
        """Another node says this room's durable head is ``seq`` (its ``heads`` signal):
        when that is past this node's head, the bus lost the last events (no later one
        shows the gap): read the store up to it."""
        if self.failed is not None or self.closed or seq <= self.state.durable_head:
            return
        if seq > self._remote_head:
            self.metrics.bus_events.labels("gap").inc()
            self._remote_head = seq
        self._maybe_sync()

    def _absorbed(self, changes: Sequence[Change], node: str) -> None:
        """Broadcast durable changes another node committed to this node's peers."""
        if not changes:
            return
        if self._snapshots:  # the head moved: snapshots nobody is reading are stale
            self._snapshots = {k: v for k, v in self._snapshots.items() if v.readers}
        self._broadcast(RoomEvent(self.room, tuple(changes), (None,) * len(changes), node))
        self._hash_ahead(len(changes))

    def _maybe_sync(self) -> None:
        if (
            self._syncing is not None
            or self._committing
            or self.closed
            or self.failed is not None
            or not (self._resync or self._remote_head > self.state.durable_head)
        ):
            return
        self._idle.clear()
        self._syncing = self._loop.create_task(self._sync())

    async def _sync(self) -> None:
        """Read what other nodes committed after the durable head from the store (the seq
        authority), roll this node's pending writes back, absorb and broadcast what was
        read, and apply the pending writes again on top (their LWW outcome and seqs may
        change; nothing of them was acknowledged). Runs with no commit of this room in
        flight, and none starts until it ends."""
        state = self.state
        try:
            while self._resync or self._remote_head > state.durable_head:
                self._resync = False
                since = state.durable_head
                fetched: list[Change] = []
                while True:
                    rows = await self.store.changes_since(self.room, since, limit=SYNC_PAGE)
                    fetched += rows
                    if len(rows) < SYNC_PAGE:
                        break
                    since = rows[-1].seq or since
                if self.closed or self.failed is not None:
                    return
                state.rollback()
                try:
                    state.absorb(fetched)
                except ValueError as exc:
                    # The op log was compacted past this node's head (it was cut off for
                    # long): its peers reconnect and catch up from a fresh load.
                    self._store_failed([], StoreError(f"cannot catch up: {exc}"))
                    return
                if fetched:
                    self.metrics.bus_events.labels("fetched").inc()
                    self._absorbed(fetched, "store")
                # The store is the seq authority: what it does not hold was not committed.
                self._remote_head = min(self._remote_head, state.durable_head)
                self._reapply()
        except (StoreError, OSError) as exc:
            self.metrics.store_errors.inc()
            event(log, "room.sync_failed", level=logging.WARNING, room=self.room, error=str(exc))
            self._resync = True
            # Try again in a moment; meanwhile nothing of this room is committed.
            self._loop.call_later(0.5, self._retry_sync)
        finally:
            self._syncing = None
            if self._resync:
                pass  # _retry_sync starts it again
            elif self._queue and self.failed is None:
                self._schedule()
            else:
                self._idle.set()

    def _retry_sync(self) -> None:
        self._maybe_sync()

    def _reapply(self) -> None:
        """Apply the queued packs again on the state just synced (their previous outcome
        was computed against a head another node moved)."""
        now = self.now_ms()
        limits = self.limits()
        for item in self._queue:
            if item.changes is None:
                continue
            result = self.state.apply(
                item.changes, now_ms=now, limits=limits, pending=True, refuse=item.refuse
            )
            item.result_seqs = result.seqs
            item.refused = result.refused
            item.accepted = result.accepted
            item.superseded = result.superseded

    def _after_commit(self, ev: RoomEvent) -> None:
        """What follows a commit besides delivery: webhooks (``room.created``, the
        debounced ``changes.committed``) and the app's ``on_commit``."""
        first, last = ev.first_seq, ev.last_seq
        webhooks = self.webhooks
        if webhooks is not None and webhooks.wants(self.policy):
            if first == 1:
                self.notify("room.created", {"head": last})
            paths = [c.path for c in ev.changes]
            webhooks.committed(self.room, first, last, paths, self.policy)
        hooks = self.hooks
        if hooks is not None and hooks.events:
            hooks.emit(
                "on_commit",
                CommitEvent(self.room, first, last, ev.changes, ev.authors, self.node),
            )

    def _hash_ahead(self, batch_size: int) -> None:
        """Keep the MST root mostly computed, off the welcome path.

        The root is hashed lazily (writes only mark nodes dirty), so the first ``welcome``
        or ``mst-root`` after a burst of writes would pay for the whole burst. Big batches
        (bulk loads) are hashed right after their commit, where it costs about a
        microsecond per change; small ones once the room has been quiet for a moment,
        when they add up to :data:`QUIET_ROOT_CHANGES` (fewer are hashed by the next read).
        """
        if batch_size >= EAGER_ROOT_BATCH or self.quiet is None:
            self.state.tree.root_hash  # noqa: B018 - computes and caches the root
            self.unhashed = 0
        elif batch_size:
            self.unhashed += batch_size
            if self.unhashed >= QUIET_ROOT_CHANGES:
                self.quiet.touch(self)
        self.unwarmed += batch_size
        if (
            self.quiet is not None
            and self.unwarmed >= QUIET_ROOT_CHANGES
            and len(self.state.entries) >= WARM_CATCHUP_ENTRIES
        ):
            self.quiet.touch(self)

    def on_quiet(self) -> None:
        """The room has been quiet for a moment after enough writes (:class:`QuietRehash`):
        hash its MST root and, for a large room, encode its full-state catch-up ahead.

        Warming builds the snapshot a joiner subscribed to everything would be given at
        this head, and encodes its frames a few groups per loop turn. A write meanwhile
        makes the snapshot stale and stops the warming (the groups already encoded stay
        in the block cache, so the next quiet moment resumes where it stopped). Only the
        binary frames are built: a JSON reader's base64 comes from the same cached bytes.
        """
        self.state.tree.root_hash  # noqa: B018 - computes and caches the root
        self.unhashed = 0
        if (
            self.unwarmed < QUIET_ROOT_CHANGES
            or len(self.state.entries) < WARM_CATCHUP_ENTRIES
            or len(self._snapshots) >= MAX_SNAPSHOTS
        ):
            return
        key = (self.state.durable_head, ("/",))
        snap = self._snapshots.get(key)
        if snap is None:
            snap = self._snapshots[key] = self._full_snapshot(key[1])
        self._warm(key, snap, 0)

    def _warm(self, key: tuple[int, tuple[str, ...]], snap: FrameSnapshot, start: int) -> None:
        if self.closed or self.failed is not None or self._snapshots.get(key) is not snap:
            return  # unloaded, failed, or written since: the next quiet moment warms again
        end = min(len(snap), start + WARM_GROUPS_PER_TURN)
        for i in range(start, end):
            snap.frame(i, True)
        if end < len(snap):
            self._loop.call_soon(self._warm, key, snap, end)
        else:
            self.unwarmed = 0

    def _store_failed(self, batch: list[_Submitted], exc: BaseException) -> None:
        """A commit failed: nothing of it (or queued after it) was broadcast or acked.

        Tell the authors (``refused: internal`` with ``retry_after_ms``: send it again),
        close the room's peers with 1011 and a retry hint, and evict the room at once so
        the next hello reloads it from what the store really holds; the pending changes
        die with this host (the SDK sends its refused writes again).
        """
        self.metrics.store_errors.inc()
        event(log, "store.append_failed", level=logging.ERROR, room=self.room, error=str(exc))
        self.failed = str(exc) or type(exc).__name__
        for item in batch + self._queue:
            if item.peer is not None:
                item.peer.send(
                    {
                        "type": "ack",
                        "seqs": [None] * len(item.result_seqs),
                        "refused": [
                            {
                                "index": i,
                                "code": "internal",
                                "message": "store write failed: nothing was stored, retry",
                                # Not the write's fault: the SDK sends it again.
                                "retry_after_ms": 1000,
                            }
                            for i in range(len(item.result_seqs))
                        ],
                    }
                )
        self._queue = []
        if self.on_failed is not None:
            self.on_failed(self)
        err = {
            "type": "error",
            "code": "overload",
            "message": "store write failed; reconnect and retry",
            "retry_after_ms": 1000,
        }
        for peer in list(self.peers):
            peer.close(CloseCode.INTERNAL, err)

    def _deliver(self, batch: list[_Submitted]) -> None:
        """Ack each pack of a committed batch (its changes were broadcast already)."""
        for item in batch:
            peer = item.peer
            if peer is None:
                continue
            peer.pending_acks -= 1
            ack: dict[str, Any] = {"type": "ack", "seqs": item.result_seqs}
            if item.refused:
                ack["refused"] = item.refused
            if item.superseded:
                ack["superseded"] = item.superseded
            peer.send(ack)
        self.metrics.msg_out("ack", len(batch))

    def _on_event(self, event: RoomEvent) -> None:
        """The bus calls it with every event of this room: this node's own commit
        (inside :meth:`_commit_done`) is broadcast at once, another node's goes through
        :meth:`_remote` (seq order)."""
        if self._publishing:
            self._broadcast(event)
        else:
            self._remote(event)

    def _broadcast(self, event: RoomEvent) -> None:
        """Deliver a durable room event to this node's peers.

        One encode per (subscription, excluded author) group, the same bytes to each peer.
        This loop runs once per receiving peer per broadcast, so it keeps to a dict lookup
        by the peer's prefixes; only authors (excluded from their own changes unless
        ``echo_to_sender``) get frames of their own.
        """
        if self.failed is not None:
            return
        pairs = list(zip(event.authors, event.changes, strict=True))
        head = event.last_seq
        authors = (
            set() if self.policy.echo_to_sender else {a for a in event.authors if a is not None}
        )
        frames: dict[tuple[str, ...], _GroupFrame | None] = {}
        own: list[tuple[str, _GroupFrame]] = []  # authors' frames, one peer each
        # Small rooms: the capture names who got each frame (``capture diff``).
        name_receivers = bool(self.capture.size) and len(self.peers) <= MAX_RECEIVER_IDS
        for peer in list(self.peers):
            if peer.closing or not peer.reads:
                continue
            prefixes = peer.session.prefixes
            if authors and peer.id in authors:
                entry = _group_frame(pairs, prefixes, head, peer.id)
                if entry is not None:
                    own.append((peer.id, entry))
            elif prefixes in frames:
                entry = frames[prefixes]
            else:
                entry = frames[prefixes] = _group_frame(pairs, prefixes, head, None)
            out = peer.out
            if entry is not None and out.send_frame(entry.frame(out.binary)):
                entry.receivers += 1
                if name_receivers:
                    if entry.to is None:
                        entry.to = [peer.id]
                    else:
                        entry.to.append(peer.id)
        # Counted per frame, not per delivery: the loop above stays one increment a peer.
        groups = [("*", g) for g in frames.values() if g is not None and g.receivers]
        if own:
            groups += [(author, g) for author, g in own if g.receivers]
        if not groups:
            return
        sent = deliveries = 0
        for _, g in groups:
            sent += g.receivers
            deliveries += g.receivers * g.changes
        self.metrics.deliveries.inc(deliveries)
        self.metrics.frames_broadcast.inc(sent)
        self.metrics.msg_out("pack", sent)
        capture = self.capture
        if capture.size:  # one record per frame, with its receivers
            for to, g in groups:
                capture.record_frame(
                    to, "pack", g.size,
                    "changes", g.changes, "head", head, "receivers", g.receivers,
                    *(() if g.to is None else ("to", g.to)),
                )  # fmt: skip

    def _maybe_compact(self) -> None:
        retention = self.policy.retention_changes
        state = self.state
        if self._compact_task is not None:
            return  # one compaction at a time
        if self.owns is not None and not self.owns(self.record):
            return  # another node compacts this room (topology place, or rendezvous)
        if state.head - state.compacted_through > retention + max(1000, retention // 10):
            through = state.head - retention
            self._compact_task = asyncio.get_running_loop().create_task(self._compact(through))

    async def _compact(self, through: int) -> None:
        try:
            await self.store.compact(self.room, through)
        except (StoreError, OSError) as exc:
            self.metrics.store_errors.inc()
            event(
                log, "store.compact_failed", level=logging.WARNING, room=self.room, error=str(exc)
            )
            return
        finally:
            self._compact_task = None
        self.state.forget_tombstones(through)
        event(log, "room.compacted", room=self.room, through=through)

    def is_idle(self) -> bool:
        """True when nothing is waiting to be persisted or acknowledged."""
        return self._idle.is_set()

    async def flush(self) -> None:
        """Wait until every queued change is persisted and delivered."""
        await self._idle.wait()

    # -- reads -------------------------------------------------------------------------

    def answer_since(self, peer: Peer, since: int) -> None:
        state = self.state
        if since < state.compacted_through:
            raise ResyncRequired(
                f"request since {since} is older than retention "
                f"(compacted through {state.compacted_through}); do a full resync"
            )
        self._admit_answer(peer)
        prefixes = peer.session.prefixes
        self._queue_answer(peer, lambda: self._snapshot(state.changes_since(since, prefixes)))

    def answer_paths(self, peer: Peer, paths: Iterable[str]) -> None:
        self._admit_answer(peer)
        wanted = tuple(paths)

        def build() -> FrameSnapshot:
            changes = self.state.get_paths(wanted)
            changes.sort(key=lambda c: c.seq or 0)
            return self._snapshot(changes)

        self._queue_answer(peer, build)

    def resubscribe(self, peer: Peer, paths: tuple[str, ...]) -> None:
        """``subscribe``: admit its answer (``rate-limited`` refuses it and changes
        nothing), replace the peer's prefixes, then send the state the new ones add.

        The added paths are found through the sorted path index (one range per new
        prefix), so the cost is the answer's, not the room's; the answer waits its turn
        like any other. (``subscribe`` needs ``read``, so the peer always reads.)
        """
        self._admit_answer(peer)
        old = peer.session.resubscribe(paths)
        new = peer.session.prefixes
        self._queue_answer(
            peer, lambda: self._snapshot(self.state.changes_under(new, excluding=old))
        )

    def broadcast_message(self, obj: dict[str, Any]) -> None:
        """One frame to every peer that can read the room (e.g. ``blob-available``)."""
        frame = text_frame(obj)
        n = 0
        for peer in list(self.peers):
            caps = peer.session.caps
            if (
                not peer.closing
                and ("read" in caps or "blob" in caps)
                and peer.out.send_frame(frame)
            ):
                n += 1
        self.metrics.msg_out(str(obj["type"]), n)
        if n:
            self.capture.record_out("*", obj, len(frame), receivers=n)

    def mst_root(self) -> dict[str, Any]:
        return {"type": "mst-root", "root": self.state.root, "count": self.state.live_count()}

    def mst_nodes(self, hashes: Iterable[str]) -> dict[str, Any]:
        found = mst_mod.serve_nodes(self.state.tree, [bytes.fromhex(h) for h in hashes])
        return {
            "type": "mst-nodes",
            "nodes": [{"hash": h.hex(), "data": b64encode(data)} for h, data in found],
        }

    def mst_sketch(self, data: str) -> dict[str, Any]:
        """Answer ``mst-probe`` from this room's tree (batched reconcile): its cost is
        bounded by :mod:`roomsync.core.sketch`'s limits; a refusal (``too-large``,
        ``malformed-envelope``) leaves the session up."""
        return {"type": "mst-sketch", "data": serve_probe_message(self.state.tree, data)}

    # -- lifecycle ---------------------------------------------------------------------

    def close_all(
        self, code: CloseCode, error_code: str | None, message: str, *, reason: str | None = None
    ) -> None:
        """Close every peer with ``code``, after an ``error`` (``error_code``, ``message``,
        ``reason`` when given: e.g. why a resync is required)."""
        err = {"type": "error", "code": error_code, "message": message} if error_code else None
        for peer in list(self.peers):
            peer.close(code, err, reason=reason)

    def welcome_limits(self, max_frame_bytes: int) -> dict[str, Any]:
        """``welcome.limits`` for this room's effective policy (:mod:`roomsync.core.limits`)."""
        return announced(self.policy, max_frame_bytes=max_frame_bytes)

    # -- control plane: live policy and ticks (SPEC §6) --------------------------------

    def apply_policy(self, policy: Policy) -> None:
        """Make ``policy`` the room's effective policy now (``policy set``).

        What is read from ``self.policy`` per message (pack and value limits, broadcast
        settings, retention, ``max_peers`` at the next join) follows at once; what was
        copied out of it is updated here: the presence table's limits (a shorter TTL
        expires present peers by it, the expiry timer is re-armed), and every present
        peer's rate limiter (its buckets keep their level, capped at the new bursts) and
        stream budget, and the capture ring's size.
        """
        self.policy = policy
        table = self.presence
        table.ttl_ms = policy.presence_ttl_ms
        table.max_bytes = policy.presence_max_bytes
        table.max_members = policy.presence_max_members
        table.leave_grace_ms = policy.presence_leave_grace_ms
        self.capture.resize(policy.capture_envelopes)
        now = self.now_ms()
        for peer in self.peers:
            peer.session.limiter.reconfigure(policy, now_ms=now)
            peer.out.budget = policy.stream_budget_bytes
        if self._presence_tick is not None:  # armed for the old TTL: may be due sooner
            self._presence_tick.cancel()
            self._presence_tick = None
        self._schedule_presence()

    def send_tick(self, n: int, at: int) -> int:
        """``tick{n, at}`` (SPEC §2) to every peer that reads the room; how many got it.
        Like a broadcast ``pack``, it waits behind an answer a peer is being streamed."""
        frame = text_frame({"type": "tick", "n": n, "at": at})
        sent = 0
        for peer in list(self.peers):
            if peer.reads and not peer.closing and peer.out.send_frame(frame):
                sent += 1
        self.metrics.msg_out("tick", sent)
        return sent


class GroupCommit:
    """Commits the queued writes of every room that has some, once per event-loop turn,
    in one store call (:meth:`~roomsync.storage.base.OpLog.append_batches`): one
    transaction for the packs of many rooms that arrived in the same turn.

    A room with a commit under way is not handed in again until it ends; what it queues
    meanwhile goes into its next one, so each room's batches commit in order. When the
    store can commit at once (:meth:`~roomsync.storage.base.OpLog.append_batches_now`:
    SQLite's inline commits, the memory store) the whole turn's commit runs right in this
    callback, with no task or future; otherwise one task awaits it for all the rooms.
    Rooms then broadcast and acknowledge, each only its own batch, and only when the
    store reported that batch durable; a batch refused, or a transaction that failed,
    fails exactly the rooms whose changes it held (:meth:`RoomHost._store_failed`).
    """

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._ready: list[RoomHost] = []
        self._handle: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Store calls made, and the room batches they carried (tests, diagnostics).
        self.calls = 0
        self.batches = 0

    def ready(self, host: RoomHost) -> None:
        """Commit ``host``'s queue with the others' at the end of this loop turn."""
        self._ready.append(host)
        if self._handle is None:
            # After every frame this turn read: they all join the same commit.
            self._handle = host._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._handle = None
        hosts, self._ready = self._ready, []
        work: list[tuple[RoomHost, list[_Submitted], list[Change]]] = []
        batches: list[AppendBatch] = []
        for host in hosts:
            items, accepted = host._take()
            if not items:
                continue
            work.append((host, items, accepted))
            if accepted:
                batches.append(AppendBatch(host.room, accepted, (accepted[0].seq or 0) - 1))
        if not batches:
            self._finish(work, [], 0.0)
            return
        self.calls += 1
        self.batches += len(batches)
        t0 = time.perf_counter()
        try:
            outcomes: Sequence[BaseException | None] | None = self.store.append_batches_now(batches)
        except Exception as exc:  # a failed commit, whatever raised it
            outcomes = [exc] * len(batches)
        if outcomes is None:
            task = hosts[0]._loop.create_task(self._commit(work, batches, t0))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)
            return
        self._finish(work, outcomes, t0)

    async def _commit(
        self,
        work: list[tuple[RoomHost, list[_Submitted], list[Change]]],
        batches: list[AppendBatch],
        t0: float,
    ) -> None:
        outcomes: Sequence[BaseException | None]
        try:
            outcomes = await self.store.append_batches(batches)
        except Exception as exc:  # a failed commit, whatever raised it
            outcomes = [exc] * len(batches)
        self._finish(work, outcomes, t0)

    def _finish(
        self,
        work: list[tuple[RoomHost, list[_Submitted], list[Change]]],
        outcomes: Sequence[BaseException | None],
        t0: float,
    ) -> None:
        if outcomes:
            self.metrics.persist.observe(time.perf_counter() - t0)
        results = iter(outcomes)
        for host, items, accepted in work:
            error = next(results) if accepted else None
            try:
                host._commit_done(items, accepted, error)
            except Exception:  # one room's bug must not leave the others undelivered
                log.exception("delivering the commit of room %r failed", host.room)


class QuietRehash:
    """Hashes the MST root of rooms that have been quiet for ``ROOT_IDLE_S`` after at
    least :data:`QUIET_ROOT_CHANGES` changes, with one timer for all of them: a write
    costs a dict store instead of a timer of its own, and the process wakes for this at
    most ``2 / ROOT_IDLE_S`` times a second however many rooms write (with 500 rooms
    writing, a timer per write was a wake-up per write; a re-hash per write of a light
    room cost about as much as its commit). A large room's full-state catch-up is
    encoded ahead at the same moment (:meth:`RoomHost.on_quiet`)."""

    def __init__(self) -> None:
        self._due: dict[str, tuple[float, RoomHost]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def touch(self, host: RoomHost) -> None:
        loop = host._loop
        self._due[host.room] = (loop.time() + ROOT_IDLE_S, host)
        if self._timer is None:
            self._timer = loop.call_later(ROOT_IDLE_S, self._run)

    def forget(self, host: RoomHost) -> None:
        entry = self._due.get(host.room)
        if entry is not None and entry[1] is host:
            del self._due[host.room]

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()

    def _run(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        later: float | None = None
        for room, (due, host) in list(self._due.items()):
            if due <= now:
                del self._due[room]
                if not host.closed:
                    host.on_quiet()
            elif later is None or due < later:
                later = due
        if later is not None:
            # Not before half a window from now: rooms falling due close together share
            # one wake-up.
            self._timer = loop.call_at(max(later, now + ROOT_IDLE_S / 2), self._run)


class RoomRegistry:
    """Loads rooms on first use (once, however many peers race), unloads idle ones."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        policy: Policy,
        idle_unload_ms: int,
        now_ms: Callable[[], int],
        commit_window_ms: int = 0,
        bus: Bus | None = None,
        node: str = "",
        hooks: AppHooks | None = None,
    ) -> None:
        self.commit_window_ms = commit_window_ms
        #: The app's hooks (``docs/hooks.md``), handed to every room.
        self.hooks = hooks
        #: Signed event webhooks (set by the server), handed to every room.
        self.webhooks: WebhookDispatcher | None = None
        self.bus: Bus = bus if bus is not None else MemoryBus()
        self.node = node
        self.store = store
        self.metrics = metrics
        self.policy = policy
        self.idle_unload_ms = idle_unload_ms
        self.now_ms = now_ms
        self.hosts: dict[str, RoomHost] = {}
        # A room being loaded, or held out of service (exclusive(): result None).
        self._loading: dict[str, asyncio.Future[RoomHost | None]] = {}
        self._unloading: set[asyncio.Task[None]] = set()
        self.loads = 0  # rooms loaded / unloaded since start (also exported as metrics)
        self.unloads = 0
        self.quiet = QuietRehash()
        #: Commits the writes of every room of a loop turn in one store call.
        self.group_commit = GroupCommit(store, metrics)
        # One lock per room whose record is being changed (see change_record).
        self._record_locks: dict[str, _RecordLock] = {}
        #: Called with every record change_record stored (the tick scheduler watches).
        self.record_watchers: list[Callable[[RoomRecord], None]] = []
        #: Several nodes (``server/cluster.py``): sends a signal (kind, room, data) to the
        #: other nodes. With it, record changes read the record from the store (another
        #: node may have changed it) and tell the other nodes what they stored.
        self.signal: Callable[[str, str | None, dict[str, Any]], None] | None = None
        #: Several nodes: whether this node owns a room's compaction, by its record.
        self.owns: Callable[[RoomRecord], bool] | None = None

    async def acquire(self, room: str) -> RoomHost:
        """The loaded room, loading it if needed; the caller must :meth:`release` it."""
        host = self.hosts.get(room)
        if host is None:
            fut = self._loading.get(room)
            if fut is None:
                fut = asyncio.get_running_loop().create_future()
                self._loading[room] = fut
                try:
                    host = await self._load(room)
                except BaseException as exc:
                    fut.set_exception(exc)
                    fut.exception()  # mark retrieved: waiters re-raise it themselves
                    raise
                finally:
                    del self._loading[room]
                fut.set_result(host)
            else:
                waited = await asyncio.shield(fut)
                if waited is None:  # it was held out of service: load what is stored now
                    return await self.acquire(room)
                host = waited
        if self.hosts.get(room) is not host:
            # It was unloaded between its load and our turn: load it again.
            return await self.acquire(room)
        host.refs += 1
        if host.unload_handle is not None:
            host.unload_handle.cancel()
            host.unload_handle = None
        return host

    async def _load(self, room: str) -> RoomHost:
        loaded = await self.store.load_room(room, now_ms=self.now_ms())
        rec = loaded.record
        state = RoomState(
            room, loaded.entries, head=rec.head, compacted_through=rec.compacted_through
        )
        policy = self.policy.patched(rec.policy) if rec.policy else self.policy
        host = RoomHost(
            rec,
            state,
            policy,
            self.store,
            self.metrics,
            self.now_ms,
            bus=self.bus,
            node=self.node,
            commit_window_ms=self.commit_window_ms,
            quiet=self.quiet,
            on_failed=self._failed,
            group_commit=self.group_commit,
            hooks=self.hooks,
            webhooks=self.webhooks,
            signal=self._room_signal(room),
            owns=self.owns,
        )
        self.hosts[room] = host
        if self.signal is not None:  # the other nodes' members of it, please
            self.signal("presence-sync", room, {})
        self.metrics.rooms.set(len(self.hosts))
        self.metrics.room_loads.inc()
        self.loads += 1
        self._room_event("on_room_loaded", host)
        return host

    def _room_signal(self, room: str) -> Callable[[str, dict[str, Any]], None] | None:
        signal = self.signal
        if signal is None:
            return None

        def send(kind: str, data: dict[str, Any]) -> None:
            signal(kind, room, data)

        return send

    def resync(self, room: str) -> None:
        """The bus may have missed other nodes' events of ``room``: catch up from the store."""
        host = self.hosts.get(room)
        if host is not None:
            host.resync()

    def record_heard(self, record: RoomRecord) -> None:
        """Another node stored ``record``: the loaded room applies it as if stored here
        (policy, lock, close, ticks), and the watchers (tick placement) see it."""
        host = self.hosts.get(record.room)
        if host is not None:
            before = host.record
            self._apply_record(host, before, record)
            if (record.tick_n, record.tick_at_ms) != (before.tick_n, before.tick_at_ms):
                host.send_tick(record.tick_n, record.tick_at_ms)  # the owner's advance
        for watcher in self.record_watchers:
            watcher(record)

    def evict_heard(
        self, room: str, code: CloseCode, error_code: str, message: str, reason: str | None
    ) -> None:
        """Another node replaced or deleted ``room``'s state (restore, fork, delete): the
        copy loaded here is stale. Its peers are closed as that node closed its own, and
        the next hello loads what the store holds."""
        host = self.hosts.get(room)
        if host is not None:
            host.close_all(code, error_code, message, reason=reason)
            self.evict(room)

    def _apply_record(self, host: RoomHost, current: RoomRecord, record: RoomRecord) -> None:
        host.record = record
        if record.policy != current.policy:
            host.apply_policy(self.policy.patched(record.policy))
        if record.closed:
            host.close_all(CloseCode.ROOM_CLOSED, "room-closed", f"room {record.room!r} is closed")

    def _room_event(self, name: str, host: RoomHost) -> None:
        hooks = self.hooks
        if hooks is not None and hooks.has(name):
            hooks.emit(name, RoomInfo(host.room, host.state.durable_head, len(host.state.entries)))

    def release(self, host: RoomHost) -> None:
        host.refs -= 1
        if host.refs <= 0 and self.hosts.get(host.room) is host:
            loop = asyncio.get_running_loop()
            # A room that holds nothing (a refused hello's, or one never written) costs
            # nothing to load again: unload it now, so refused hellos to many room ids
            # do not keep a host each in memory for room_idle_unload_ms.
            if self.idle_unload_ms <= 0 or host.closed or not host.state.entries:
                self._start_unload(host)
            else:
                host.unload_handle = loop.call_later(
                    self.idle_unload_ms / 1000, self._start_unload, host
                )

    def _start_unload(self, host: RoomHost) -> None:
        task = asyncio.get_running_loop().create_task(self._unload(host))
        self._unloading.add(task)  # keep a reference until it is done
        task.add_done_callback(self._unloading.discard)

    async def _unload(self, host: RoomHost) -> None:
        host.unload_handle = None
        await host.flush()
        if (
            host.refs > 0
            or self.hosts.get(host.room) is not host
            or not host.is_idle()
            or host.room in self._loading
        ):
            return
        del self.hosts[host.room]
        host.stop_timers()
        self.metrics.rooms.set(len(self.hosts))
        self.metrics.room_unloads.inc()
        self.unloads += 1
        self._room_event("on_room_unloaded", host)

    async def update_record(self, room: str, **changes: Any) -> RoomRecord:
        """Change a room's durable record (``locked``, ``closed``, ``policy``): persisted
        first, then seen by the loaded room at once. Closing ends its live sessions with
        4004 (``room-closed``). This is the one way room records change (it is
        :meth:`change_record` with fixed ``changes``, so it is serialized with the
        others)."""
        record = await self.change_record(room, lambda _current: changes)
        assert record is not None  # creating, and the changes are never None
        return record

    def _failed(self, host: RoomHost) -> None:
        """A commit of ``host`` failed: forget it now, so new peers load a fresh copy
        from the store instead of waiting for the failed one's peers to go."""
        if self.hosts.get(host.room) is host:
            self.evict(host.room)

    def evict(self, room: str) -> None:
        """Forget a loaded room now (after a restore, delete or store failure)."""
        host = self.hosts.pop(room, None)
        if host is not None:
            host.closed = True
            host.stop_timers()  # and its bus subscription: a reload subscribes anew
            self.metrics.rooms.set(len(self.hosts))
            self._room_event("on_room_unloaded", host)

    @contextlib.asynccontextmanager
    async def exclusive(
        self,
        room: str,
        code: CloseCode,
        error_code: str,
        message: str,
        *,
        reason: str | None = None,
    ) -> AsyncIterator[RoomState | None]:
        """:meth:`_out_of_service` while holding the room's record lock: no change of its
        record by another task (a tick timer) runs during the block, so none can read the
        record before a ``room delete`` and store it back after. The block's own record
        changes (the same task) pass: the lock is the task's.

        Yields the state the room had when it was put out of service, when it was loaded
        and every change of it was durable (so it equals what the store holds), else None:
        the block can archive it without reading the room back from the store."""
        async with (
            self._record_lock(room),
            self._out_of_service(room, code, error_code, message, reason) as state,
        ):
            yield state
        if self.signal is not None:  # the other nodes' copies are stale now
            self.signal(
                "evict",
                room,
                {"code": int(code), "error": error_code, "message": message, "reason": reason},
            )

    @contextlib.asynccontextmanager
    async def _out_of_service(
        self, room: str, code: CloseCode, error_code: str, message: str, reason: str | None
    ) -> AsyncIterator[RoomState | None]:
        """Hold ``room`` out of service for a change of its whole state (``archive
        restore``, ``room fork``, ``room delete``).

        The loaded room's peers are closed with ``code`` (``error_code``, ``message``,
        ``reason``),
        its queued commits finish, and it is forgotten; hellos for the room wait until
        the block ends and then load what the store holds. So nothing the block writes
        races a write of the old copy, and no peer keeps the old copy's view.
        """
        while (pending := self._loading.get(room)) is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        fut: asyncio.Future[RoomHost | None] = asyncio.get_running_loop().create_future()
        self._loading[room] = fut
        try:
            host = self.hosts.get(room)
            state = None
            if host is not None:
                host.close_all(code, error_code, message, reason=reason)
                await host.flush()
                self.evict(room)
                if host.failed is None and not host.state.pending:
                    state = host.state
            yield state
        finally:
            del self._loading[room]
            fut.set_result(None)

    async def flush_all(self) -> None:
        await asyncio.gather(*(h.flush() for h in list(self.hosts.values())))

    async def change_record(
        self,
        room: str,
        changes: Callable[[RoomRecord], Mapping[str, Any] | None],
        *,
        create: bool = True,
    ) -> RoomRecord | None:
        """Read, change and store a room's record, one change at a time per room.

        ``changes(current)`` gives the fields to replace, or None to change nothing
        (then None is returned). An unknown room starts from an empty record, or (with
        ``create`` False) is left alone: None. The new record is persisted first, then
        the loaded room sees it at once (a changed ``policy`` becomes its effective
        policy over the global one; ``closed`` ends its sessions with 4004), then every
        :attr:`record_watchers` is told.

        Invariant: changes of one room's record never interleave. Without the lock, two
        changes (a tick timer's advance and a ``room lock``) would each read the record,
        and whichever stored second would put back the field the other had just changed.
        """
        async with self._record_lock(room):
            host = self.hosts.get(room)
            if host is not None and self.signal is None:
                current: RoomRecord | None = host.record
            else:  # another node may have changed it: the store has the latest
                current = await self.store.get_room(room)
            if current is None:
                if not create:
                    return None
                current = RoomRecord(room=room, created_ms=self.now_ms())
            fields = changes(current)
            if fields is None:
                return None
            record = dataclasses.replace(current, **fields)
            await self.store.put_room(record)
            host = self.hosts.get(room)  # the await may have loaded or unloaded it
            if host is not None:
                self._apply_record(host, current, record)
            for watcher in self.record_watchers:
                watcher(record)
            if self.signal is not None:
                self.signal("record", room, {"record": dataclasses.asdict(record)})
        return record

    @contextlib.asynccontextmanager
    async def _record_lock(self, room: str) -> AsyncIterator[None]:
        """Hold ``room``'s record lock (a task that holds it already passes: see
        :meth:`exclusive`); the lock is forgotten when nobody holds or waits for it."""
        task = asyncio.current_task()
        entry = self._record_locks.get(room)
        if entry is not None and task is not None and entry.owner is task:
            yield
            return
        if entry is None:
            entry = self._record_locks[room] = _RecordLock()
        entry.users += 1
        try:
            async with entry.lock:
                entry.owner = task
                try:
                    yield
                finally:
                    entry.owner = None
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._record_locks[room]

    def set_policy(self, policy: Policy) -> None:
        """Make ``policy`` the global effective policy (``policy set`` without a room):
        rooms loaded from now on start from it, and every loaded room applies it at once,
        with its own overrides on top (:meth:`RoomHost.apply_policy`)."""
        self.policy = policy
        for host in list(self.hosts.values()):
            host.apply_policy(policy.patched(host.record.policy) if host.record.policy else policy)


class _RecordLock:
    """A room's record lock, the task holding it, and how many hold it or wait for it."""

    __slots__ = ("lock", "owner", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.owner: asyncio.Task[Any] | None = None
        self.users = 0
