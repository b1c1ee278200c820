"""The client's local copy of a room (SPEC §1, §2), sans I/O: the SDK is a shell around it.

A :class:`Replica` holds what one client knows of a room and what it still owes the
server:

* ``entries``: ``path -> Change``, the LWW state (tombstones included) and its
  :class:`~roomsync.core.mst.MerkleSearchTree`, so :attr:`Replica.root_hex` is the
  canonical hash of SPEC §1, comparable with the server's ``mst-root``;
* a :class:`~roomsync.core.hlc.HybridClock` that stamps local writes and observes remote
  ones, so a local write always orders after everything this replica has seen;
* the *offline queue*: local writes not yet sent (at most one per path: a newer write of
  the same path replaces the unsent older one and moves to the back), and the FIFO of
  packs sent but not yet acknowledged (*in flight*);
* ``cursor``: the highest seq up to which this replica has every change of its
  subscription, i.e. what it sends as ``hello.cursor`` to resume.

Packs are cut from the queue by :mod:`.packing` (``take_outgoing`` takes the limits
of the welcome). It never reads the clock, sleeps, or touches a socket: the shell passes
``now_ms``, feeds it decoded server messages (:meth:`Replica.receive`,
:meth:`Replica.on_ack`) and asks it what to send (:meth:`Replica.start_session`,
:meth:`Replica.take_outgoing`, :meth:`Replica.expect_paths`,
:meth:`Replica.expect_subscribe`).

The cursor rule
---------------
The cursor only moves to seqs below which nothing of the subscription can be missing:

* a chunk of the catch-up that follows ``welcome``: to its ``head`` (chunks are in seq
  order, a chunk's ``head`` is its last seq and the ``done`` chunk's is the room head), so
  an interrupted catch-up resumes where it stopped;
* a broadcast: to the highest seq it carries (batches are broadcast in seq order);
* an ``ack``: to the seqs it reports (the server writes a batch's broadcast frames before
  its acks, so everything up to an acked seq has been received or is our own write);
* never for a ``request{paths}`` or ``subscribe`` answer, which carry a subset of the
  room, and never for a pack that may be such an answer: while one is outstanding, a pack
  without ``done`` cannot be told apart from a broadcast, so it does not move the cursor.

During an MST resync (:attr:`SyncMode.RECONCILE`, no catch-up) the cursor stays put until
:meth:`Replica.finish_resync`, which sets it to the welcome ``head`` (every older change is
covered by the reconcile, every newer one arrives as a broadcast) or to the highest seq
reached since, whichever is greater.

Authority
---------
Entries the server has confirmed are the server's to decide: after an authoritative
answer (a catch-up without cursor, a ``subscribe`` answer for the prefixes it adds, the
``request{paths}`` answer of a reconcile), every local entry in its scope that is not an
unacknowledged local write is replaced by what the server sent, or dropped when the server
sent nothing (its tombstone was compacted, or the room was restored). Only writes the
server has not confirmed are pushed; LWW decides them on the server. This is what keeps a
resync from resurrecting deleted paths.

Refused writes (``ack.refused``, a pack refused as a whole, a change too large to send)
are rolled back to the last server-confirmed entry of their path and reported as
:class:`RefusedChange`; nothing is dropped silently. A refusal that carries
``retry_after_ms`` (the server stored nothing and asks for the write again: a failed
commit, such as a full disk) is not a refusal of the write: the change goes back to the
front of the queue, like a pack refused ``rate-limited``, and is sent again.

Superseded writes
-----------------
A write the server acknowledged but that lost LWW to a newer entry (SPEC §1: "still
acknowledged but changes nothing") is reported as :class:`SupersededChange`, and the
replica converges to the server's entry. A write is superseded when

* the ack lists it in ``superseded[{index, seq}]`` (the server says so plainly);
* or its ack seq is not a new one: at most the highest seq this session had seen when the
  pack was sent (the welcome ``head``, received changes, earlier acks), and the write was
  never sent before (a re-sent write repeats one the server may already hold, which is
  acked with its own old seq);
* or the replica holds an entry with the ack seq and another ``(ts, counter, actor)``.

The last two rules let an older server that does not list ``superseded`` be understood
too; each is sound on its own (seqs are gap-free and increasing, SPEC §1). The write is
rolled back to the last server-confirmed entry of its path; when the replica does not
hold the winner yet (the path is outside the subscription, or its catch-up is still
running), the winner is *wanted*: :meth:`Replica.fetch_paths` names the paths to fetch
with ``request{paths}`` once the session is synced, and :attr:`Replica.idle` stays False
until they arrived. Every received change goes through the clock, so the next local
write of such a path orders after its winner and wins.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import islice
from typing import Any

from .entries import Change
from .hlc import HybridClock
from .merge import wins
from .mst import MerkleSearchTree
from .packing import PackLimits, next_pack_length, oversize
from .room import MAX_ACTOR_BYTES
from .types import any_prefix_matches, prefix_matches, validate_path, validate_prefix

DEFAULT_MAX_INFLIGHT = 4
"""Packs in flight at once. The server answers every pack with exactly one ``ack``, in
order (a pack refused as a whole too: ``refused[{index: -1}]``), so acks settle packs
FIFO. Writes made while the window is full are batched into the next pack."""


class SyncMode(Enum):
    """How a session brings the replica up to date after ``welcome``."""

    RESUME = "resume"
    """Catch-up from ``cursor``: the changes since then."""
    FULL = "full"
    """Catch-up of the whole subscribed state; authoritative (see module doc)."""
    RECONCILE = "reconcile"
    """``catchup: false``: the shell reconciles through the MST, then calls
    :meth:`Replica.finish_resync`."""


class AnswerKind(Enum):
    CATCHUP = "catchup"
    FULL = "full"
    PATHS = "paths"
    SUBSCRIBE = "subscribe"


@dataclass(eq=False)
class Answer:
    """A chunked ``pack`` answer the replica expects (it ends with a ``done`` chunk).

    ``seen`` collects, per path, the highest-seq server entry received while the answer
    was outstanding; at ``done`` it is the server's state for the answer's scope.
    """

    kind: AnswerKind
    scope_in: tuple[str, ...] = ()
    scope_out: tuple[str, ...] = ()
    paths: frozenset[str] | None = None
    seen: dict[str, Change] = field(default_factory=dict)

    def covers(self, path: str) -> bool:
        """True when the answer is authoritative for ``path``."""
        if self.paths is not None:
            return path in self.paths
        return any_prefix_matches(self.scope_in, path) and not (
            self.scope_out and any_prefix_matches(self.scope_out, path)
        )


@dataclass(frozen=True, slots=True)
class HelloPlan:
    """What to put in ``hello`` for the next session (see :meth:`Replica.start_session`)."""

    mode: SyncMode
    cursor: int | None
    catchup: bool
    subscribe: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RefusedChange:
    """A local write the server (or the replica, before sending) refused; it was rolled back."""

    change: Change
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class SupersededChange:
    """A local write the server acknowledged but that lost LWW to a newer entry.

    ``seq`` is the seq of the entry that beat it. The write changed nothing on the server;
    the replica rolled it back and holds (or fetches) the winner. Write again to override.
    """

    change: Change
    seq: int


@dataclass(frozen=True, slots=True)
class Settled:
    """What settling a pack produced.

    ``refused``: writes to report to the app. ``superseded``: acknowledged writes that
    lost LWW (see the module doc). ``reverted``: the entries (or tombstones of vanished
    paths) that rolling refused or superseded writes back made visible, for change
    callbacks. ``retry``: the pack, or some of its changes, was refused for now (rate
    limit, a failed commit with ``retry_after_ms``); it is back at the front of the queue.
    """

    refused: tuple[RefusedChange, ...] = ()
    reverted: tuple[Change, ...] = ()
    retry: bool = False
    superseded: tuple[SupersededChange, ...] = ()


@dataclass(eq=False, slots=True)
class _Flight:
    """A pack in flight: its changes, the highest seq the session had seen when it was
    sent, and which of its changes were sent for the first time."""

    changes: list[Change]
    floor: int
    first_send: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class Received:
    """What :meth:`Replica.receive` did: the visible changes, and the answer it completed."""

    changed: list[Change]
    finished: Answer | None = None


def _vanished(entry: Change) -> Change:
    """The event for a live entry that disappeared: a tombstone carrying its clock."""
    return Change(entry.path, entry.ts, entry.counter, entry.actor, None)


class Replica:
    """One client's replica of one room. Not thread-safe; driven by one shell."""

    def __init__(
        self,
        actor: str,
        *,
        subscribe: Sequence[str] = ("/",),
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
    ) -> None:
        if not actor or len(actor.encode("utf-8")) > MAX_ACTOR_BYTES:
            raise ValueError(f"actor must be 1..{MAX_ACTOR_BYTES} UTF-8 bytes")
        if max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")
        self.actor = actor
        self.max_inflight = max_inflight
        self.clock = HybridClock()
        self.entries: dict[str, Change] = {}
        self.tree = MerkleSearchTree()
        self.cursor = 0
        #: Prefixes the app wants; ``synced_prefixes``: those ``cursor`` is valid for.
        self.prefixes: tuple[str, ...] = _prefixes(subscribe)
        self.synced_prefixes: tuple[str, ...] = self.prefixes
        self._buffer: dict[str, Change] = {}
        self._inflight: deque[_Flight] = deque()
        # Unsettled local writes that were sent at least once (a re-send may repeat a
        # write the server already holds: see "Superseded writes").
        self._sent: set[Change] = set()
        # The highest seq known to be assigned, this session (welcome head, received
        # changes, acks): a pack sent now gets only greater seqs for its accepted changes.
        self._seen_seq = 0
        # Paths whose superseding entry (at least this seq) the replica still lacks.
        self._wanted: dict[str, int] = {}
        self._can_read = True
        # Unsettled local writes per path, and the last server-confirmed entry of each
        # such path (None: none) to roll back to when a write is refused.
        self._pending: dict[str, int] = {}
        self._base: dict[str, Change | None] = {}
        self._answers: deque[Answer] = deque()
        self._full: Answer | None = None
        self._needs_resync = False
        self.mode: SyncMode | None = None
        self._ready = False
        self._mark = 0
        self._welcome_head = 0

    # -- reading -------------------------------------------------------------------------

    @property
    def root_hex(self) -> str:
        """The canonical hash (SPEC §1) of the live entries."""
        return self.tree.root_hex

    def get(self, path: str) -> Change | None:
        """The live entry at ``path``, or None (absent or deleted)."""
        change = self.entries.get(path)
        return change if change is not None and change.value is not None else None

    def items(self, prefix: str = "/") -> Iterator[Change]:
        """Live entries at or below ``prefix``, sorted by path."""
        prefix = validate_prefix(prefix)
        for path in sorted(self.entries):
            change = self.entries[path]
            if change.value is not None and prefix_matches(prefix, path):
                yield change

    @property
    def idle(self) -> bool:
        """True when every local write is settled (acknowledged or refused) and the
        replica holds the entry that beat each superseded one (see :meth:`fetch_paths`)."""
        return not self._buffer and not self._inflight and not self._wanted

    @property
    def unsent(self) -> list[Change]:
        """The offline queue: local writes not sent yet, in sending order."""
        return list(self._buffer.values())

    @property
    def inflight(self) -> list[list[Change]]:
        """Packs sent and not yet acknowledged, oldest first."""
        return [list(f.changes) for f in self._inflight]

    @property
    def wanted(self) -> dict[str, int]:
        """Paths whose superseding entry the replica still lacks -> that entry's seq."""
        return dict(self._wanted)

    def is_pending(self, path: str) -> bool:
        """True when ``path`` has a local write the server has not settled."""
        return path in self._pending

    @property
    def synced(self) -> bool:
        """True once this session's catch-up (or resync) is complete."""
        return self._ready

    @property
    def needs_resync(self) -> bool:
        return self._needs_resync

    # -- local writes ----------------------------------------------------------------------

    def write(self, path: str, value: bytes | None, now_ms: int) -> Change:
        """Apply a local write (``value`` None deletes) and queue it for sending.

        Raises :class:`~roomsync.core.errors.InvalidPath` for an invalid path.
        """
        validate_path(path)
        if value is not None and not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"value must be bytes or None, not {type(value).__name__}")
        ts, counter = self.clock.tick(now_ms)
        change = Change(path, ts, counter, self.actor, None if value is None else bytes(value))
        if path not in self._pending:
            self._base[path] = self.entries.get(path)
        self._pending[path] = self._pending.get(path, 0) + 1
        older = self._buffer.pop(path, None)
        if older is not None:
            self._forget(older)
        self._buffer[path] = change
        self._set(change)
        return change

    def take_outgoing(self, max_changes: int, max_bytes: int) -> list[Change] | None:
        """The next pack to send, now in flight; None when there is nothing to send or
        ``max_inflight`` packs are already in flight.

        The pack takes queued writes in order while it stays within ``max_changes`` and
        ``max_bytes`` (postcard bytes). Its first change is always taken: call
        :meth:`refuse_oversize` first so that none is larger than ``max_bytes``.
        """
        if not self._buffer or len(self._inflight) >= self.max_inflight:
            return None
        queued = self._buffer.values()
        pack = list(islice(queued, next_pack_length(queued, PackLimits(max_changes, max_bytes))))
        first: list[bool] = []
        for change in pack:
            first.append(change not in self._sent)
            self._sent.add(change)
            del self._buffer[change.path]
        self._inflight.append(_Flight(pack, self._seen_seq, tuple(first)))
        return pack

    def refuse_oversize(self, max_bytes: int) -> Settled:
        """Refuse (code ``too-large``) queued writes that alone exceed ``max_bytes``."""
        big = oversize(self._buffer.values(), PackLimits(1, max_bytes))
        for change in big:
            del self._buffer[change.path]
        return self._refuse(
            big,
            "too-large",
            f"change larger than the largest pack this server accepts ({max_bytes} bytes)",
        )

    def refuse_unsent(self, code: str, message: str) -> Settled:
        """Refuse every queued write (e.g. the session has no ``write`` capability)."""
        changes = list(self._buffer.values())
        self._buffer.clear()
        return self._refuse(changes, code, message)

    # -- acknowledgements ------------------------------------------------------------------

    def on_ack(
        self,
        seqs: Sequence[int | None],
        refused: Sequence[Mapping[str, Any]] = (),
        superseded: Sequence[Mapping[str, Any]] = (),
    ) -> Settled:
        """Settle the oldest pack in flight with ``ack{seqs, refused, superseded}``.

        Accepted changes (a seq) advance the cursor; refused ones are rolled back and
        returned, except those refused with a ``retry_after_ms``, which go back to the
        front of the queue (``retry``). ``refused[{index: -1}]`` refuses the whole pack:
        ``rate-limited`` (or a ``retry_after_ms``) puts it back at the front of the queue
        (``retry``), anything else refuses every change.
        Acknowledged changes that lost LWW are rolled back and returned as ``superseded``
        (module doc, "Superseded writes"), whether or not the ack lists them.
        """
        if not self._inflight:
            return Settled()
        flight = self._inflight.popleft()
        pack = flight.changes
        reasons: dict[int, tuple[str, str]] = {}
        later: set[int] = set()  # refused for now: the server asks for them again
        for item in refused:
            index = item.get("index")
            if isinstance(index, int):
                reasons[index] = (str(item.get("code", "refused")), str(item.get("message", "")))
                hint = item.get("retry_after_ms")
                if isinstance(hint, int) and not isinstance(hint, bool) and hint >= 0:
                    later.add(index)
        if -1 in reasons:
            code, message = reasons[-1]
            if code == "rate-limited" or -1 in later:
                self._requeue([pack])
                return Settled(retry=True)
            return self._refuse(pack, code, message)
        again: list[Change] = []
        listed: set[int] = set()
        for item in superseded:
            index = item.get("index")
            if isinstance(index, int) and not isinstance(index, bool):
                listed.add(index)
        bad: list[tuple[Change, str, str]] = []
        lost: list[SupersededChange] = []
        for index, change in enumerate(pack):
            seq = seqs[index] if index < len(seqs) else None
            if isinstance(seq, int) and not isinstance(seq, bool):
                fresh = index < len(flight.first_send) and flight.first_send[index]
                if self._lost(change, seq, listed=index in listed, fresh=fresh, flight=flight):
                    lost.append(SupersededChange(change, seq))
                else:
                    self._forget(change)
                self._advance(seq)
                self._seen_seq = max(self._seen_seq, seq)
            elif index in later:
                again.append(change)
            else:
                code, message = reasons.get(index, ("internal", "the ack carried no seq"))
                bad.append((change, code, message))
        if again:
            self._requeue([again])
        settled = self._refuse_each(bad)
        reverted = list(settled.reverted)
        for superseded_change in lost:
            reverted += self._supersede(superseded_change)
        return Settled(settled.refused, tuple(reverted), retry=bool(again), superseded=tuple(lost))

    def _lost(
        self, change: Change, seq: int, *, listed: bool, fresh: bool, flight: _Flight
    ) -> bool:
        """True when the acknowledged ``change`` (acked with ``seq``) lost LWW."""
        if listed:
            return True
        if fresh and seq <= flight.floor:
            return True  # not a new seq, and not a repeat of an earlier send
        holder = self.entries.get(change.path)
        return (
            holder is not None
            and holder.seq == seq
            and holder.key != change.key
            and wins(holder, change)
        )

    def _supersede(self, item: SupersededChange) -> list[Change]:
        """Roll a superseded write back; want its winner when the replica lacks it."""
        change = item.change
        path = change.path
        reverted: list[Change] = []
        if self.entries.get(path) is change:
            base = self._base.get(path)
            if base is None:
                self._drop(path)
                if change.value is not None:
                    reverted.append(_vanished(change))
            else:
                self._set(base)
                reverted.append(base)
        self._forget(change)
        holder = self.entries.get(path)
        if self._can_read and (holder is None or (holder.seq or 0) < item.seq):
            self._wanted[path] = max(item.seq, self._wanted.get(path, 0))
        return reverted

    def fetch_paths(self) -> list[str]:
        """Paths to fetch with ``request{paths}`` (then :meth:`expect_paths`) now.

        The wanted winners of superseded writes that no outstanding request covers;
        nothing before the session is synced (its catch-up may bring them).
        """
        if not self._ready or not self._wanted:
            return []
        asked: set[str] = set()
        for answer in self._answers:
            if answer.kind is AnswerKind.PATHS and answer.paths is not None:
                asked |= answer.paths
        return sorted(p for p in self._wanted if p not in asked)

    def requeue_inflight(self) -> None:
        """After a disconnect: packs in flight go back to the front of the queue.

        They are the same changes, so re-sending them is idempotent on the server. An
        in-flight write superseded by a newer queued write of its path is dropped.
        """
        packs = [f.changes for f in self._inflight]
        self._inflight.clear()
        self._requeue(packs)

    def _requeue(self, packs: list[list[Change]]) -> None:
        front: dict[str, Change] = {}
        for pack in packs:
            for change in pack:
                older = front.pop(change.path, None)
                if older is not None:
                    self._forget(older)
                front[change.path] = change
        for path, change in list(front.items()):
            if path in self._buffer:
                del front[path]
                self._forget(change)
        front.update(self._buffer)
        self._buffer = front

    # -- sessions ------------------------------------------------------------------------

    def resync_required(self) -> None:
        """The server closed with 4001: the cursor is useless; the next session resyncs."""
        self._needs_resync = True

    def start_session(self, *, can_reconcile: bool) -> HelloPlan:
        """Plan the ``hello`` of a new connection and expect its catch-up.

        After a 4001, ``can_reconcile`` (the ``reconcile`` cap was granted) chooses an MST
        resync over a full catch-up when the replica subscribes to the whole room (the
        server's MST covers the whole room, so a reconcile of a subset would pull paths
        outside the subscription). A full catch-up interrupted by a disconnect resumes
        from the cursor it reached and stays authoritative.
        """
        self._answers.clear()
        self._ready = False
        self._mark = 0
        self._welcome_head = 0
        self._seen_seq = 0
        if self._needs_resync:
            self._full = None
            self.cursor = 0
            self.synced_prefixes = self.prefixes
            if can_reconcile and self.prefixes == ("/",):
                self.mode = SyncMode.RECONCILE
                return HelloPlan(self.mode, None, False, self.prefixes)
            self._needs_resync = False
        if self._full is None and self.cursor > 0:
            self.mode = SyncMode.RESUME
            self._answers.append(Answer(AnswerKind.CATCHUP, scope_in=self.synced_prefixes))
            return HelloPlan(self.mode, self.cursor, True, self.synced_prefixes)
        if self._full is None:
            self.synced_prefixes = self.prefixes
            self._full = Answer(AnswerKind.FULL, scope_in=self.prefixes)
        self.mode = SyncMode.FULL
        self._answers.append(self._full)
        return HelloPlan(self.mode, self.cursor or None, True, self._full.scope_in)

    def on_welcome(self, head: int, *, can_read: bool = True) -> None:
        """The session was welcomed at room ``head``.

        Without the ``read`` capability the server sends no catch-up: the replica stops
        waiting for one (it is write-only; its cursor stays where it was).
        """
        self._welcome_head = head
        self._seen_seq = max(self._seen_seq, head)
        self._can_read = can_read
        if not can_read:
            self._answers.clear()
            self._wanted.clear()  # nothing can be fetched: the rollback is all there is
            self._needs_resync = False
            self._ready = True

    def finish_resync(self) -> None:
        """The MST resync of this session is complete: publish the cursor (module doc)."""
        self._needs_resync = False
        self._ready = True
        self.cursor = max(self.cursor, self._welcome_head, self._mark)

    def expect_paths(self, paths: Iterable[str]) -> Answer:
        """Expect the answer of a ``request{paths}`` about to be sent (authoritative)."""
        answer = Answer(AnswerKind.PATHS, paths=frozenset(paths))
        self._answers.append(answer)
        return answer

    def impose_entries(self, changes: Sequence[Change]) -> list[Change]:
        """Merge the entries a batched MST reconcile received inline (``mst-sketch``),
        authoritative for their own paths as a ``request{paths}`` answer that carried
        exactly them would be (module doc, "Authority"); the cursor does not move.

        Returns the changes that became visible.
        """
        answer = Answer(AnswerKind.PATHS, paths=frozenset(c.path for c in changes))
        for change in changes:
            _see(answer, change)
        changed, _ = self._merge(changes)
        changed += self._impose(answer)
        return changed

    def set_prefixes(self, prefixes: Sequence[str]) -> None:
        """Change the wanted subscription; :meth:`expect_subscribe` tells what to send."""
        self.prefixes = _prefixes(prefixes)

    def expect_subscribe(self) -> Answer | None:
        """When the wanted prefixes differ from the synced ones and no ``subscribe`` is
        outstanding: expect its answer (send ``subscribe{paths: self.prefixes}``)."""
        if self.prefixes == self.synced_prefixes or any(
            a.kind is AnswerKind.SUBSCRIBE for a in self._answers
        ):
            return None
        answer = Answer(
            AnswerKind.SUBSCRIBE, scope_in=self.prefixes, scope_out=self.synced_prefixes
        )
        self._answers.append(answer)
        return answer

    def answer_failed(self, kind: AnswerKind) -> Answer | None:
        """The server refused the oldest outstanding request of ``kind`` with an error."""
        for answer in self._answers:
            if answer.kind is kind:
                self._answers.remove(answer)
                self._settle_wanted(answer)
                return answer
        return None

    # -- remote changes ------------------------------------------------------------------

    def _merge(self, changes: Sequence[Change]) -> tuple[list[Change], int]:
        """Merge server changes by LWW (what every received pack does, whatever its kind);
        returns those that won and the highest seq seen (0: none). Outstanding answers
        see each change, so an authoritative answer completed later keeps what it carried.

        The hot loop of a catch-up (100,000 changes into an empty replica): per change it
        does exactly what :func:`_see`, :func:`~.merge.wins` and :meth:`_set` do, inlined,
        and skips the ``_wanted`` and ``_base`` checks while those are empty.
        """
        changed: list[Change] = []
        if not changes:
            return changed, 0
        # Every received change moves the clock, whatever kind of pack carried it: the
        # next local write orders after it (SPEC §1). Observing is a max, so once with the
        # greatest (ts, counter) of the pack is the same as once per change.
        newest = max(changes, key=_clock_key)
        self.clock.observe(newest.ts, newest.counter)
        entries, put = self.entries, self.tree.put
        wanted, base = self._wanted, self._base
        seens = [answer.seen for answer in self._answers]
        append = changed.append
        top = 0
        for change in changes:
            path = change.path
            seq = change.seq
            if seq is not None:
                if seq > top:
                    top = seq
                if wanted and seq >= wanted.get(path, seq + 1):
                    del wanted[path]
                for seen in seens:  # _see(answer, change)
                    known = seen.get(path)
                    if known is None or (known.seq or 0) < seq:
                        seen[path] = change
            current = entries.get(path)
            if current is None or (change.ts, change.counter, change.actor) > (
                current.ts,
                current.counter,
                current.actor,
            ):  # wins(change, current): self._set(change)
                entries[path] = change
                put(change)
                append(change)
            if base and path in base and wins(change, base[path]):
                base[path] = change
        if top > self._seen_seq:
            self._seen_seq = top
        return changed, top

    def receive(self, changes: Sequence[Change], *, head: int | None, done: bool) -> Received:
        """Merge a server ``pack`` (broadcast, catch-up chunk or answer chunk).

        Returns the changes that became visible (won LWW, or were imposed by an
        authoritative answer that this pack completed) and that answer, if any.
        """
        changed, top = self._merge(changes)
        answer = self._answers[0] if self._answers else None
        if answer is not None and answer.kind in (AnswerKind.CATCHUP, AnswerKind.FULL):
            if head is not None:
                self.cursor = max(self.cursor, head)
            if not done:
                return Received(changed)
            self._answers.popleft()
            if answer.kind is AnswerKind.FULL:
                changed += self._impose(answer)
                self._full = None
            self._ready = True
            self.cursor = max(self.cursor, self._mark)
            return Received(changed, answer)
        if answer is not None:
            if not done:
                return Received(changed)  # ambiguous: answer chunk or broadcast
            self._answers.popleft()
            changed += self._impose(answer)
            self._settle_wanted(answer)
            if answer.kind is AnswerKind.SUBSCRIBE:
                self.synced_prefixes = answer.scope_in
            return Received(changed, answer)
        if top:
            self._advance(top)
        return Received(changed)

    # -- internals -----------------------------------------------------------------------

    def _settle_wanted(self, answer: Answer) -> None:
        """A ``request{paths}`` was answered (or refused): stop wanting its paths."""
        if answer.kind is AnswerKind.PATHS and answer.paths is not None:
            for path in answer.paths:
                self._wanted.pop(path, None)

    def _advance(self, seq: int) -> None:
        if self._ready:
            self.cursor = max(self.cursor, seq)
        else:
            self._mark = max(self._mark, seq)

    def _set(self, change: Change) -> None:
        self.entries[change.path] = change
        self.tree.put(change)

    def _drop(self, path: str) -> None:
        self.entries.pop(path, None)
        self.tree.remove(path)

    def _forget(self, change: Change) -> None:
        """One local write of ``change.path`` is settled (or superseded before sending)."""
        path = change.path
        left = self._pending.get(path, 0) - 1
        if left > 0:
            self._pending[path] = left
        else:
            self._pending.pop(path, None)
            self._base.pop(path, None)
        self._sent.discard(change)

    def _refuse(self, changes: Iterable[Change], code: str, message: str) -> Settled:
        return self._refuse_each([(c, code, message) for c in changes])

    def _refuse_each(self, items: list[tuple[Change, str, str]]) -> Settled:
        refused: list[RefusedChange] = []
        reverted: list[Change] = []
        for change, code, message in items:
            refused.append(RefusedChange(change, code, message))
            path = change.path
            if self.entries.get(path) is change:
                base = self._base.get(path)
                if base is None:
                    self._drop(path)
                    if change.value is not None:
                        reverted.append(_vanished(change))
                else:
                    self._set(base)
                    reverted.append(base)
            self._forget(change)
        return Settled(tuple(refused), tuple(reverted))

    def _impose(self, answer: Answer) -> list[Change]:
        """Make confirmed local entries in the answer's scope equal the server's."""
        changed: list[Change] = []
        seen, entries, pending = answer.seen, self.entries, self._pending
        if answer.paths is None and "/" in answer.scope_in and not answer.scope_out:
            paths = [p for p in entries if p not in pending]  # the whole room (a full resync)
        else:
            paths = [p for p in entries if answer.covers(p) and p not in pending]
        for path in paths:
            server = seen.get(path)
            mine = entries[path]
            if server is mine:
                continue  # the answer's own entry (most of a full catch-up)
            if server is None:
                self._drop(path)
                if mine.value is not None:
                    changed.append(_vanished(mine))
            elif server.key != mine.key or server.value != mine.value:
                self._set(server)
                changed.append(server)
        return changed


def _clock_key(change: Change) -> tuple[int, int]:
    return change.ts, change.counter


def _see(answer: Answer, change: Change) -> None:
    if change.seq is None:
        return
    known = answer.seen.get(change.path)
    if known is None or (known.seq or 0) < change.seq:
        answer.seen[change.path] = change


def _prefixes(prefixes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(prefixes, str):
        raise TypeError("prefixes must be a sequence of strings, not one string")
    return tuple(dict.fromkeys(validate_prefix(p) for p in prefixes)) or ("/",)
