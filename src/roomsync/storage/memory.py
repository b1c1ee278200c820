"""An in-process :class:`~roomsync.storage.base.Store` (tests, ``--storage memory``).

Keeps the same invariants as the durable stores (see :mod:`roomsync.storage.base`), except
that "durable" means "until the process exits". Every value handed in or out is copied
where it could be mutated (the ``policy`` dict; lists), so callers never alias stored state;
:class:`~roomsync.core.entries.Change` and :class:`~roomsync.storage.base.RoomRecord` are
frozen and their bytes immutable, so they are shared as they are.

Like the SQLite store, ``append`` is fenced: it compares ``expected_head`` with the room's
head and writes the batch in one step with no ``await`` in between, so of two appends with
the same expected head exactly one wins (the other gets :class:`StoreConflict`), and a
batch whose seqs do not continue ``expected_head`` is refused (:class:`StoreError`);
nothing of a refused batch is written. ``load_room`` of an unknown room stores nothing,
and the first ``append`` (``add_blob_ref``, ``put_room``) creates it.
"""

from __future__ import annotations

import copy
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ..core.entries import Change
from ..core.merge import merge_into
from ..core.query import QuerySpec, evaluate
from .base import (
    AppendBatch,
    AppendOutcome,
    ArchiveRecord,
    LoadedRoom,
    NodeBeat,
    ProposalRecord,
    Revocation,
    RevocationKind,
    RoomRecord,
    StoreConflict,
    StoreError,
    archive_cursor_key,
    check_archive,
    check_batch,
    check_page_limit,
    check_revocation,
    json_copy,
    merge_revocation,
    revocation_cursor,
    revocation_key,
    wall_clock_ms,
)
from .webhooks import WEBHOOK_LOG_KEEP, WebhookDelivery, WebhookResult

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Room:
    record: RoomRecord
    entries: dict[str, Change] = field(default_factory=dict)
    oplog: list[Change] = field(default_factory=list)  # seq order, gap-free
    base: dict[str, Change] = field(default_factory=dict)


def _copy_record(record: RoomRecord) -> RoomRecord:
    return replace(record, policy=copy.deepcopy(record.policy))


def _seq_of(change: Change) -> int:
    assert change.seq is not None  # append refuses changes without a seq
    return change.seq


class MemoryStore:
    """Rooms, state, op log, blob references and revocations in dicts; each call is atomic
    (no ``await`` inside).

    ``commits`` counts committed ``append`` and ``append_batches`` calls (one
    "transaction" each), so contract checks can read it on any store. ``now_ms`` stamps
    ``created_ms`` of the rooms that ``append`` creates.
    """

    def __init__(self, *, now_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.now_ms = now_ms
        self._rooms: dict[str, _Room] = {}
        self._blob_refs: dict[str, dict[str, int]] = {}
        self._revocations: dict[tuple[str, str], Revocation] = {}
        # ref -> (record, chunks, insertion number: the newest-first order of listings)
        self._archives: dict[str, tuple[ArchiveRecord, tuple[bytes, ...], int]] = {}
        self._archive_seq = 0
        self._proposals: dict[str, ProposalRecord] = {}
        self._queries: dict[str, dict[str, object]] = {}
        self._settings: dict[str, dict[str, object]] = {}
        self._nodes: dict[str, NodeBeat] = {}
        # key -> (delivery, lease holder, lease end, insertion number)
        self._webhooks: dict[str, tuple[WebhookDelivery, str | None, int, int]] = {}
        self._webhook_seq = 0
        self._webhook_log: dict[str, list[WebhookResult]] = {}
        self._open = False
        self.commits = 0

    def _require_open(self) -> None:
        if not self._open:
            raise StoreError("memory store is not open")

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def check(self) -> None:
        self._require_open()

    async def get_room(self, room: str) -> RoomRecord | None:
        self._require_open()
        state = self._rooms.get(room)
        return None if state is None else _copy_record(state.record)

    async def put_room(self, record: RoomRecord) -> None:
        self._require_open()
        state = self._rooms.get(record.room)
        if state is None:
            fresh = replace(_copy_record(record), head=0, compacted_through=0)
            self._rooms[record.room] = _Room(fresh)
        else:
            old = state.record
            state.record = replace(
                _copy_record(record), head=old.head, compacted_through=old.compacted_through
            )

    async def list_rooms(self, *, limit: int = 100, cursor: str | None = None) -> list[RoomRecord]:
        self._require_open()
        names = sorted(r for r in self._rooms if cursor is None or r > cursor)
        return [_copy_record(self._rooms[r].record) for r in names[: max(limit, 0)]]

    async def ticking_rooms(self) -> list[RoomRecord]:
        self._require_open()
        return [
            _copy_record(self._rooms[r].record)
            for r in sorted(self._rooms)
            if self._rooms[r].record.tick_interval_ms > 0
        ]

    async def delete_room(self, room: str) -> bool:
        self._require_open()
        self._blob_refs.pop(room, None)
        return self._rooms.pop(room, None) is not None

    async def add_blob_ref(self, room: str, hash: str, size: int, *, now_ms: int) -> None:
        self._require_open()
        if room not in self._rooms:
            self._rooms[room] = _Room(RoomRecord(room=room, created_ms=now_ms))
        self._blob_refs.setdefault(room, {})[hash] = size

    async def has_blob_ref(self, room: str, hash: str) -> bool:
        self._require_open()
        return hash in self._blob_refs.get(room, {})

    async def blob_refs(
        self, *, limit: int, cursor: str | None = None
    ) -> tuple[list[str], str | None]:
        self._require_open()
        check_page_limit(limit)
        hashes = sorted({h for refs in self._blob_refs.values() for h in refs})
        start = 0 if cursor is None else bisect_right(hashes, cursor)
        page = hashes[start : start + limit]
        more = start + limit < len(hashes)
        return page, page[-1] if more else None

    # -- revocations -------------------------------------------------------------------

    async def add_revocation(
        self, kind: RevocationKind, value: str, *, now_ms: int, expires_ms: int | None = None
    ) -> bool:
        self._require_open()
        check_revocation(kind, value)
        stored, new = merge_revocation(
            self._revocations.get((kind, value)),
            kind,
            value,
            now_ms=now_ms,
            expires_ms=expires_ms,
        )
        self._revocations[(kind, value)] = stored
        return new

    async def is_revoked(self, sub: str | None, jti: str | None, *, now_ms: int) -> bool:
        self._require_open()
        for kind, value in (("sub", sub), ("jti", jti)):
            revocation = None if value is None else self._revocations.get((kind, value))
            if revocation is not None and revocation.applies(now_ms):
                return True
        return False

    async def list_revocations(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Revocation], str | None]:
        self._require_open()
        check_page_limit(limit)
        keys = sorted(self._revocations)
        start = 0 if cursor is None else bisect_right(keys, revocation_key(cursor))
        page = [self._revocations[k] for k in keys[start : start + limit]]
        more = start + limit < len(keys)
        return page, revocation_cursor(page[-1]) if more else None

    async def load_room(self, room: str, *, now_ms: int) -> LoadedRoom:
        self._require_open()
        state = self._rooms.get(room)
        if state is None:  # never written: nothing to store until its first write
            return LoadedRoom(record=RoomRecord(room=room, created_ms=now_ms), entries=[])
        entries = [state.entries[p] for p in sorted(state.entries)]
        return LoadedRoom(record=_copy_record(state.record), entries=entries)

    async def append(self, room: str, changes: Sequence[Change], *, expected_head: int) -> None:
        self._require_open()
        if changes:
            self._append(room, changes, expected_head)
            self.commits += 1

    async def append_batches(self, batches: Sequence[AppendBatch]) -> list[AppendOutcome]:
        return self.append_batches_now(batches)

    def append_batches_now(self, batches: Sequence[AppendBatch]) -> list[AppendOutcome]:
        """Every batch at once (nothing here ever waits); one "transaction" counted."""
        if not self._open:
            return [StoreError("memory store is not open") for _ in batches]
        outcomes: list[AppendOutcome] = []
        for batch in batches:
            try:
                if batch.changes:
                    self._append(batch.room, batch.changes, batch.expected_head)
            except StoreError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        if any(outcome is None and b.changes for outcome, b in zip(outcomes, batches, strict=True)):
            self.commits += 1
        return outcomes

    def _append(self, room: str, changes: Sequence[Change], expected_head: int) -> None:
        """One fenced batch, all or nothing (:class:`StoreError` refuses it)."""
        check_batch(room, expected_head, changes)
        state = self._rooms.get(room)
        head = 0 if state is None else state.record.head
        if head != expected_head:
            raise StoreConflict(room, expected_head, head)
        if state is None:
            state = self._rooms[room] = _Room(RoomRecord(room=room, created_ms=self.now_ms()))
        batch = list(changes)
        state.oplog.extend(batch)
        for change in batch:
            state.entries[change.path] = change
        state.record = replace(state.record, head=_seq_of(batch[-1]))

    async def replace_state(
        self, room: str, entries: Sequence[Change], *, expected_head: int
    ) -> int:
        self._require_open()
        state = self._rooms.get(room)
        head = 0 if state is None else state.record.head
        if head != expected_head:
            raise StoreConflict(room, expected_head, head)
        if state is None:
            state = self._rooms[room] = _Room(RoomRecord(room=room, created_ms=self.now_ms()))
        live = sorted((c for c in entries if c.value is not None), key=lambda c: c.path)
        if len({c.path for c in live}) != len(live):
            raise StoreError(f"replace_state of room {room!r}: a path is given twice")
        fresh: dict[str, Change] = {}
        seq = expected_head
        for change in live:
            mine = state.entries.get(change.path)
            if mine is not None and mine.key == change.key and mine.value == change.value:
                fresh[change.path] = mine  # already there: it keeps its seq
            else:
                seq += 1
                fresh[change.path] = change.with_seq(seq)
        new_head = seq + 1
        state.entries = fresh
        state.base = dict(fresh)
        state.oplog = []
        state.record = replace(state.record, head=new_head, compacted_through=new_head)
        return new_head

    async def changes_since(self, room: str, since: int, *, limit: int) -> list[Change]:
        self._require_open()
        state = self._rooms.get(room)
        if state is None or limit <= 0:
            return []
        start = bisect_right(state.oplog, since, key=_seq_of)
        return state.oplog[start : start + limit]

    async def base_snapshot(self, room: str) -> list[Change]:
        self._require_open()
        state = self._rooms.get(room)
        if state is None:
            return []
        return [state.base[p] for p in sorted(state.base)]

    async def compact(self, room: str, through_seq: int) -> int:
        self._require_open()
        state = self._rooms.get(room)
        if state is None:
            raise StoreError(f"compact of unknown room {room!r}")
        through = min(through_seq, state.record.head)
        if through <= state.record.compacted_through:
            return 0
        cut = bisect_right(state.oplog, through, key=_seq_of)
        folded, state.oplog = state.oplog[:cut], state.oplog[cut:]
        merge_into(state.base, folded)
        # The base is the live state as of ``through``: tombstones there have done their job.
        for path in [p for p, c in state.base.items() if c.value is None]:
            del state.base[path]
        for path in [
            p for p, c in state.entries.items() if c.value is None and _seq_of(c) <= through
        ]:
            del state.entries[path]
        state.record = replace(state.record, compacted_through=through)
        return len(folded)

    # -- archives ------------------------------------------------------------------------

    async def put_archive(self, record: ArchiveRecord, chunks: Sequence[bytes]) -> bool:
        self._require_open()
        check_archive(record, chunks)
        if record.ref in self._archives:
            return False
        self._archive_seq += 1
        self._archives[record.ref] = (record, tuple(chunks), self._archive_seq)
        return True

    async def get_archive(self, ref: str) -> ArchiveRecord | None:
        self._require_open()
        held = self._archives.get(ref)
        return None if held is None else held[0]

    async def archive_chunk(self, ref: str, index: int) -> bytes:
        self._require_open()
        held = self._archives.get(ref)
        if held is None or not 0 <= index < len(held[1]):
            raise StoreError(f"archive {ref} has no chunk {index}")
        return held[1][index]

    async def list_archives(
        self, room: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[ArchiveRecord], str | None]:
        self._require_open()
        check_page_limit(limit)
        after = archive_cursor_key(cursor)
        mine = sorted(
            ((n, rec) for rec, _, n in self._archives.values() if rec.room == room and n < after),
            key=lambda item: -item[0],
        )
        page = mine[:limit]
        more = len(mine) > limit
        return [rec for _, rec in page], str(page[-1][0]) if more else None

    async def delete_archive(self, ref: str) -> bool:
        self._require_open()
        held = self._archives.pop(ref, None)
        if held is None:
            return False
        parent = held[0].parent
        for other, (rec, chunks, n) in list(self._archives.items()):
            if rec.parent == ref:
                self._archives[other] = (replace(rec, parent=parent), chunks, n)
        for state in self._rooms.values():
            if state.record.lineage_head == ref:
                state.record = replace(state.record, lineage_head=parent)
        return True

    async def forks_of(self, ref: str) -> list[str]:
        self._require_open()
        return sorted(r for r, state in self._rooms.items() if state.record.checkpoint == ref)

    # -- proposals, query specs, settings ------------------------------------------------

    async def put_proposal(self, record: ProposalRecord) -> None:
        self._require_open()
        self._proposals[record.proposal] = record

    async def get_proposal(self, proposal: str) -> ProposalRecord | None:
        self._require_open()
        return self._proposals.get(proposal)

    async def put_query(self, name: str, spec: dict[str, object]) -> bool:
        self._require_open()
        new = name not in self._queries
        self._queries[name] = json_copy(spec, what=f"query {name!r}")
        return new

    async def get_query(self, name: str) -> dict[str, object] | None:
        self._require_open()
        spec = self._queries.get(name)
        return None if spec is None else copy.deepcopy(spec)

    async def list_queries(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[tuple[str, dict[str, object]]], str | None]:
        self._require_open()
        check_page_limit(limit)
        names = sorted(self._queries)
        start = 0 if cursor is None else bisect_right(names, cursor)
        page = names[start : start + limit]
        more = start + limit < len(names)
        return [(n, copy.deepcopy(self._queries[n])) for n in page], page[-1] if more else None

    async def delete_query(self, name: str) -> bool:
        self._require_open()
        return self._queries.pop(name, None) is not None

    async def run_query(
        self,
        room: str,
        spec: QuerySpec,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, object]], str | None]:
        self._require_open()
        state = self._rooms.get(room)
        entries = [] if state is None else [state.entries[p] for p in sorted(state.entries)]
        return evaluate(spec, entries, limit=limit, cursor=cursor)

    async def get_setting(self, key: str) -> dict[str, object] | None:
        self._require_open()
        value = self._settings.get(key)
        return None if value is None else copy.deepcopy(value)

    async def put_setting(self, key: str, value: dict[str, object]) -> None:
        self._require_open()
        self._settings[key] = json_copy(value, what=f"setting {key!r}")

    # -- node registry -----------------------------------------------------------------

    async def beat(self, node: str, info: dict[str, object], *, now_ms: int) -> None:
        self._require_open()
        self._nodes[node] = NodeBeat(node, now_ms, json_copy(info, what=f"node {node!r}"))

    async def list_nodes(self) -> list[NodeBeat]:
        self._require_open()
        return [
            NodeBeat(b.node, b.beat_ms, copy.deepcopy(b.info))
            for _, b in sorted(self._nodes.items())
        ]

    async def forget_node(self, node: str) -> bool:
        self._require_open()
        return self._nodes.pop(node, None) is not None

    # -- webhook outbox (storage/webhooks.py) ----------------------------------------------

    async def add_webhooks(self, deliveries: Sequence[WebhookDelivery]) -> None:
        self._require_open()
        for d in deliveries:
            if d.key not in self._webhooks:
                self._webhook_seq += 1
                self._webhooks[d.key] = (d, None, 0, self._webhook_seq)

    async def claim_webhooks(
        self, *, node: str, now_ms: int, lease_ms: int, limit: int
    ) -> list[WebhookDelivery]:
        self._require_open()
        due = sorted(
            (
                (d.next_ms, n, d)
                for d, holder, until, n in self._webhooks.values()
                if d.next_ms <= now_ms and (holder is None or until <= now_ms)
            ),
            key=lambda item: (item[0], item[1]),
        )[: max(0, limit)]
        for _, n, d in due:
            self._webhooks[d.key] = (d, node, now_ms + lease_ms, n)
        return [d for _, _, d in due]

    async def settle_webhook(
        self,
        key: str,
        *,
        retry_at_ms: int | None = None,
        error: str = "",
        result: WebhookResult | None = None,
    ) -> None:
        self._require_open()
        held = self._webhooks.get(key)
        if held is None:
            return
        d, _, _, n = held
        if result is not None:
            del self._webhooks[key]
            log = self._webhook_log.setdefault(result.room, [])
            log.insert(0, result)
            del log[WEBHOOK_LOG_KEEP:]
        elif retry_at_ms is not None:
            again = replace(d, attempts=d.attempts + 1, next_ms=retry_at_ms, last_error=error)
            self._webhooks[key] = (again, None, 0, n)

    async def pending_webhooks(self) -> int:
        self._require_open()
        return len(self._webhooks)

    async def webhook_log(self, room: str, *, limit: int = WEBHOOK_LOG_KEEP) -> list[WebhookResult]:
        self._require_open()
        return list(self._webhook_log.get(room, [])[: max(0, limit)])
