"""What a node needs from a store (SPEC §1, §2, §8), as small Protocols, one per concept.

::

    Store  (what the server holds; existing type hints keep using it)
     ├── StoreLifecycle   open, close, check
     ├── RoomCatalog      get_room, put_room, list_rooms, delete_room, load_room,
 │                    ticking_rooms
     ├── OpLog            append (fenced by expected_head), append_batches(_now) (several
     │                    rooms' batches in one transaction), changes_since,
     │                    base_snapshot, compact
     ├── BlobRefs         add_blob_ref, has_blob_ref, blob_refs (paged); all_blob_refs(store)
     ├── Revocations      add_revocation, is_revoked, list_revocations
     ├── Archives         put_archive, get_archive, archive_chunk, list_archives,
     │                    delete_archive, forks_of; lineage(store, room)
     ├── Proposals        put_proposal, get_proposal
     ├── QuerySpecs       put_query, get_query, list_queries, delete_query, run_query
     ├── Settings         get_setting, put_setting (node-wide, e.g. the global policy)
     └── NodeRegistry     beat, list_nodes, forget_node (nodes sharing the store)

Code that needs one concept asks for its Protocol (replay needs a ``RoomCatalog`` and an
``OpLog``, blob garbage collection ``BlobRefs``), so a new backend, or a wrapper in a test,
implements what is used and nothing more. Implementations: :mod:`.memory` (tests,
``--storage memory``), :mod:`.sqlite` (the embedded default, WAL, one writer) and later
``postgres`` (issue 15). :mod:`roomsync.testing.store_contract` is the one contract suite,
one section per Protocol, that ``tests/storage/test_contract.py`` runs against every
implementation.

Invariants every store keeps:

- **The store is the seq authority (fencing).** ``append(room, changes, expected_head=h)``
  writes only if the room's head in the store is ``h`` at the moment of the write, checked
  atomically with it (SQLite: inside the same ``BEGIN IMMEDIATE`` transaction), and only
  if the batch's seqs are exactly ``h+1 .. h+n``. A head that moved is refused with
  :class:`StoreConflict` (room, expected and actual head), a batch that does not continue
  ``h`` with :class:`StoreError`; either way nothing of the batch is written. So two
  writers (two nodes, or a node and a stale copy of itself) can never write the same
  seq: of two appends with the same expected head exactly one wins, and the loser must
  reload the room from the store. A room never written has head 0.
- ``append`` writes the op-log rows *and* the state entries of a batch in one transaction;
  when it returns, the batch is durable (it survives ``kill -9`` of the process).
  ``append_batches`` does the same for several batches (of several rooms) at once, in one
  transaction where the backend can: each batch is fenced and checked on its own (a
  refused batch fails alone and writes nothing), while a transaction that fails fails
  every batch it held. Its outcome says, per batch, whether it is durable.
- seqs in the op log of a room are gap-free and increasing.
- the state table holds, per path, the winning change (tombstones included) with the seq
  that last changed it; it always equals ``base snapshot + op log`` replayed with LWW.
- ``compact(room, through_seq)`` folds op-log rows ``<= through_seq`` into the base
  snapshot, drops them from the log, purges tombstones whose seq ``<= through_seq`` from
  the state, and records ``compacted_through``; a cursor older than that cannot catch up.
- only ``append`` and ``replace_state`` move ``head``, and only ``compact`` and
  ``replace_state`` move ``compacted_through``: ``put_room`` writes a room's metadata
  (``created_ms``, ``locked``, ``closed``, ``policy``, lineage, placement, tick) and
  never those two, whatever the record it is given says.
- archives are kept when their room is deleted (so a deleted room can be restored), as
  are its proposals; query specs and settings are node-wide.
- a room never written costs nothing: ``load_room`` of an unknown room only reads and
  hands out an empty record (head 0) that nothing stores; the first write that needs the
  room (``append`` of seq 1, ``add_blob_ref``, ``put_room``) creates it. Until then it is
  not listed, ``get_room`` returns None and ``delete_room`` returns False.
- revocations are node-wide, not per room (``delete_room`` keeps them), and shared by
  every node on the same store: a token revoked through one node is refused by all.
- paged listings (``list_rooms``, ``blob_refs``, ``list_revocations``) are ordered by
  their key and resume strictly after the cursor, so a page never repeats an item; a
  cursor is opaque to callers.

The rules every backend applies alike are functions here, so no two backends disagree:
:func:`check_batch` (the batch shape ``append`` accepts), :func:`check_page_limit`,
:func:`check_revocation` and :func:`merge_revocation` (what re-revoking stores), and
:func:`revocation_cursor` / :func:`revocation_key` (the listing cursor).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, TypeAlias

from ..core.entries import Change
from ..core.errors import InternalError
from ..core.query import QuerySpec

__all__ = [
    "BLOB_REFS_PAGE",
    "LINEAGE_MAX",
    "REVOCATION_KINDS",
    "AppendBatch",
    "AppendOutcome",
    "ArchiveRecord",
    "Archives",
    "BlobRefs",
    "LineageReader",
    "LoadedRoom",
    "NodeBeat",
    "NodeRegistry",
    "OpLog",
    "ProposalRecord",
    "ProposalState",
    "Proposals",
    "QuerySpecs",
    "Revocation",
    "RevocationKind",
    "Revocations",
    "RoomCatalog",
    "RoomRecord",
    "Settings",
    "Store",
    "StoreConflict",
    "StoreError",
    "StoreLifecycle",
    "all_blob_refs",
    "archive_cursor_key",
    "check_archive",
    "check_batch",
    "check_page_limit",
    "check_revocation",
    "json_copy",
    "lineage",
    "merge_revocation",
    "revocation_cursor",
    "revocation_key",
    "wall_clock_ms",
]


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """Durable room metadata. ``policy`` holds per-room policy overrides (JSON-able).

    Control-plane state of the room lives here too: ``lineage_head`` (the newest archive
    of its lineage, SPEC §6), ``source``/``checkpoint`` (for a forked child: its parent
    and the archive it was forked from), ``node`` (``topology place``: the node that owns
    its ticks and compaction) and the tick counter (``tick_n``, ``tick_interval_ms`` (0:
    no timer), ``tick_at_ms``: when it last advanced).
    """

    room: str
    created_ms: int
    locked: bool = False
    closed: bool = False
    head: int = 0
    compacted_through: int = 0
    policy: dict[str, object] = field(default_factory=dict)
    lineage_head: str | None = None
    source: str | None = None
    checkpoint: str | None = None
    node: str | None = None
    tick_n: int = 0
    tick_interval_ms: int = 0
    tick_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """An archive (SPEC §6): a snapshot of ``room`` at ``head`` (format and ``ref`` in
    :mod:`roomsync.core.archive`), stored as ``chunks`` chunks of ``size`` bytes in all.
    ``root`` and ``count`` are the state's canonical root and live entries; ``parent`` is
    the archive before it in the room's lineage (None: the first)."""

    ref: str
    room: str
    head: int
    root: str
    count: int
    size: int
    chunks: int
    created_ms: int
    parent: str | None = None


ProposalState = Literal["draft", "validated", "invalid", "promoted", "rejected"]


@dataclass(frozen=True, slots=True)
class ProposalRecord:
    """A promotion proposal (SPEC §6): the child ``room``'s ``changes`` since
    ``checkpoint`` (an archive of ``source``, its parent), in path order, without seqs.
    ``validate`` records ``conflicts``, the ``resolve`` choice and the parent's head it
    saw (``validated_head``); ``promote`` needs that head unchanged."""

    proposal: str
    room: str
    source: str
    checkpoint: str
    state: ProposalState
    changes: tuple[Change, ...]
    created_ms: int
    conflicts: tuple[str, ...] = ()
    resolve: str | None = None
    validated_head: int | None = None


@dataclass(frozen=True, slots=True)
class AppendBatch:
    """One room's changes for :meth:`OpLog.append_batches`: exactly what
    :meth:`OpLog.append` takes, fenced and checked the same way."""

    room: str
    changes: Sequence[Change]
    expected_head: int


@dataclass(frozen=True, slots=True)
class LoadedRoom:
    """Everything needed to bring a room into memory."""

    record: RoomRecord
    entries: list[Change]  # the state table, tombstones included, each with its seq


RevocationKind = Literal["sub", "jti"]
#: What a revocation names: every token of a subject (``sub``) or one token (``jti``).
REVOCATION_KINDS: tuple[RevocationKind, ...] = ("sub", "jti")


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revoked subject or token id. From ``expires_ms`` on (None: never) it no longer
    applies; for a ``jti`` that is usually the token's own ``exp``, after which the token
    is refused anyway."""

    kind: RevocationKind
    value: str
    created_ms: int
    expires_ms: int | None = None

    def applies(self, now_ms: int) -> bool:
        return self.expires_ms is None or now_ms < self.expires_ms


def wall_clock_ms() -> int:
    """Wall-clock milliseconds: the default clock of stores (``created_ms`` of rooms that
    ``append`` creates); tests inject their own."""
    return time.time_ns() // 1_000_000


class StoreError(InternalError):
    """The store failed (I/O, permissions, corruption) or refused a write; the message
    names the cause (for operators: it may name files and databases, so the server logs
    it and tells peers only that the store failed, with a retry hint)."""


class StoreConflict(StoreError):
    """``append`` found the room's head elsewhere than the caller expected: another writer
    committed first (fencing). Nothing was written; reload the room from the store."""

    def __init__(self, room: str, expected: int, actual: int) -> None:
        super().__init__(
            f"append to room {room!r} refused: expected head {expected}, the store has "
            f"{actual} (another writer moved it; reload the room)"
        )
        self.room = room
        self.expected = expected
        self.actual = actual


def check_batch(room: str, expected_head: int, changes: Sequence[Change]) -> None:
    """Raise :class:`StoreError` unless ``changes`` carry exactly the seqs
    ``expected_head+1 .. expected_head+n`` (the shape ``append`` accepts; the store then
    compares ``expected_head`` with its head)."""
    if expected_head < 0:
        raise StoreError(f"append to room {room!r}: expected head {expected_head} is negative")
    expected = expected_head + 1
    for change in changes:
        if change.seq != expected:
            raise StoreError(
                f"append to room {room!r}: expected seq {expected}, got {change.seq} "
                f"(a batch after head {expected_head} carries seqs {expected_head + 1}.."
                f"{expected_head + len(changes)} without gaps)"
            )
        expected += 1


#: What :meth:`OpLog.append_batches` says of one batch: None when it is committed (durable),
#: else the error that refused it or the failed transaction that held it (nothing of the
#: batch written either way).
AppendOutcome: TypeAlias = StoreError | None


def check_page_limit(limit: int) -> None:
    """Raise :class:`ValueError` for a page size a cursor listing cannot advance with."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


def check_revocation(kind: str, value: str) -> None:
    """Raise :class:`ValueError` for a revocation no store accepts."""
    if kind not in REVOCATION_KINDS:
        raise ValueError(f"revocation kind must be one of {list(REVOCATION_KINDS)}, not {kind!r}")
    if not isinstance(value, str) or not value:
        raise ValueError(f"revocation {kind} must be a non-empty string")


def merge_revocation(
    stored: Revocation | None,
    kind: RevocationKind,
    value: str,
    *,
    now_ms: int,
    expires_ms: int | None,
) -> tuple[Revocation, bool]:
    """What ``add_revocation`` stores when ``stored`` is there, and whether it is new."""
    if stored is not None and stored.applies(now_ms):
        longer = (
            None
            if stored.expires_ms is None or expires_ms is None
            else max(stored.expires_ms, expires_ms)
        )
        return replace(stored, expires_ms=longer), False
    return Revocation(kind, value, now_ms, expires_ms), True


def check_archive(record: ArchiveRecord, chunks: Sequence[bytes]) -> None:
    """Raise :class:`ValueError` unless ``chunks`` are what ``record`` describes."""
    if len(chunks) != record.chunks or sum(len(c) for c in chunks) != record.size:
        raise ValueError(
            f"archive {record.ref}: {len(chunks)} chunks of {sum(len(c) for c in chunks)} "
            f"bytes, the record says {record.chunks} of {record.size}"
        )


def archive_cursor_key(cursor: str | None) -> int:
    """The insertion number a newest-first archive listing resumes below."""
    if cursor is None:
        return 1 << 62
    try:
        return int(cursor)
    except ValueError:
        raise ValueError(f"not an archive cursor: {cursor!r}") from None


def json_copy(value: dict[str, object], *, what: str) -> dict[str, object]:
    """A deep copy of a JSON object through its JSON text (:class:`StoreError` when it is
    not JSON), so a store holds exactly what it would read back from disk."""
    try:
        copied = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(copied, dict):
        raise StoreError(f"{what} is not a JSON object")
    return copied


def revocation_cursor(revocation: Revocation) -> str:
    """The cursor that resumes a listing after ``revocation``."""
    return f"{revocation.kind}:{revocation.value}"


def revocation_key(cursor: str | None) -> tuple[str, str]:
    """``(kind, value)`` a listing resumes after (``("", "")``: from the start)."""
    if cursor is None:
        return "", ""
    kind, sep, value = cursor.partition(":")
    if not sep or kind not in REVOCATION_KINDS:
        raise ValueError(f"not a revocation cursor: {cursor!r}")
    return kind, value


class StoreLifecycle(Protocol):
    async def open(self) -> None:
        """Connect, create or migrate the schema. Idempotent."""

    async def close(self) -> None:
        """Flush pending writes and release connections. Idempotent; ``open`` again
        brings the same data back."""

    async def check(self) -> None:
        """Raise :class:`StoreError` when the store cannot serve reads and writes (readyz).

        A store that failed to write keeps failing its check until a write big enough to
        prove the failure over commits: the check makes such a real write itself.
        """


class RoomCatalog(Protocol):
    async def get_room(self, room: str) -> RoomRecord | None:
        """The stored record, or None for a room never written (or deleted)."""

    async def put_room(self, record: RoomRecord) -> None:
        """Insert or replace a room's metadata (``created_ms``, ``locked``, ``closed``,
        ``policy``). Never its ``head`` or ``compacted_through``: a new room starts at 0,
        an existing one keeps its own, whatever ``record`` says."""

    async def list_rooms(self, *, limit: int = 100, cursor: str | None = None) -> list[RoomRecord]:
        """Rooms ordered by id, starting after ``cursor`` (the last id of the previous
        page), at most ``limit``."""

    async def ticking_rooms(self) -> list[RoomRecord]:
        """The records of every room whose tick timer runs (``tick_interval_ms`` > 0),
        ordered by id: what a node's tick scheduler resumes when it starts. Few rooms
        tick, so it is one list, not a paged one."""

    async def delete_room(self, room: str) -> bool:
        """Remove a room, its state, op log and blob references. True when it existed."""

    async def load_room(self, room: str, *, now_ms: int) -> LoadedRoom:
        """The room's record and state. Only reads: for a room never written, an empty
        record (head 0, ``created_ms`` = ``now_ms``) that is not stored."""


class OpLog(Protocol):
    async def append(self, room: str, changes: Sequence[Change], *, expected_head: int) -> None:
        """Durably append accepted changes to the op log and state, fenced.

        ``expected_head`` is the head the caller believes the room has: the seq before the
        batch's first change. The write happens only if the store's head is exactly that,
        checked atomically with the write (else :class:`StoreConflict`), and the batch's
        seqs must be ``expected_head+1 .. expected_head+n`` (else :class:`StoreError`);
        a refused batch writes nothing. An empty batch writes and checks nothing.

        The first append to a room never written (``expected_head`` 0) creates its record,
        with ``created_ms`` from the store's clock. Concurrent calls may be group-committed
        into one transaction; each call returns only once its own changes are committed,
        and batches of one room are applied in call order.
        """

    async def append_batches(self, batches: Sequence[AppendBatch]) -> list[AppendOutcome]:
        """Durably append several batches, usually of several rooms, at once: in one
        transaction where the backend can (a group commit across rooms); the outcome of
        each batch, in order.

        Each batch is fenced and checked exactly like :meth:`append`, on its own: a batch
        refused (:class:`StoreConflict`, bad seqs) fails alone and writes nothing, the
        others still commit. A transaction that fails (disk full, lost connection) fails
        every batch it held, each with a :class:`StoreError`, and writes nothing of them.
        Batches of one room are applied in list order (a later one is fenced on the head
        the earlier one leaves). It returns only once every batch reported None is
        durable; an empty batch is None and writes nothing. Never raises for a batch's
        sake: a store that is not open fails every batch.
        """

    def append_batches_now(self, batches: Sequence[AppendBatch]) -> list[AppendOutcome] | None:
        """:meth:`append_batches` done right here on the caller's thread, with no
        ``await``, when the backend can commit these batches at once without waiting for
        anything (memory: always; SQLite: small batches while its writer thread is idle,
        under ``synchronous`` NORMAL or OFF, where a commit is a ``write()`` to the page
        cache); None when it cannot, having written nothing: then await
        :meth:`append_batches`. A networked backend (PostgreSQL) always answers None.

        The server's commit path calls it once per event-loop turn, for the writes of
        every room of that turn, so a commit costs no task, future or thread switch.
        """

    async def replace_state(
        self, room: str, entries: Sequence[Change], *, expected_head: int
    ) -> int:
        """Replace the room's whole state with the live ``entries`` (``archive restore``,
        ``room fork``), fenced like :meth:`append`; return the new head.

        An entry the room already holds as it is (same path, ``(ts, counter, actor)`` and
        value) keeps its seq; the ``d`` others get the seqs ``expected_head+1 ..
        expected_head+d`` in path order; paths not among ``entries`` are removed. The head
        becomes ``expected_head + d + 1`` (a replace always moves it), the op log is
        emptied and the room is compacted through the new head (base = state), so every
        cursor from before it needs a full resync. Tombstones among ``entries`` are
        dropped; a path given twice is a :class:`StoreError`. A room never written is
        created (with ``expected_head`` 0). One transaction: on failure nothing changed.
        """

    async def changes_since(self, room: str, since: int, *, limit: int) -> list[Change]:
        """Op-log rows with ``seq > since`` in seq order, at most ``limit``."""

    async def base_snapshot(self, room: str) -> list[Change]:
        """The compacted base (state as of ``compacted_through``), for replay."""

    async def compact(self, room: str, through_seq: int) -> int:
        """Fold op-log rows ``<= through_seq`` into the base; return rows removed."""


class BlobRefs(Protocol):
    """Blob references (SPEC §4: blobs are room-scoped; unreferenced ones are collected)."""

    async def add_blob_ref(self, room: str, hash: str, size: int, *, now_ms: int) -> None:
        """Record that ``hash`` was announced in ``room`` (idempotent); creates the room's
        record (``created_ms`` = ``now_ms``) if it was never written."""

    async def has_blob_ref(self, room: str, hash: str) -> bool:
        """True when ``hash`` was announced in ``room``."""

    async def blob_refs(
        self, *, limit: int, cursor: str | None = None
    ) -> tuple[list[str], str | None]:
        """One page of the hashes referenced by any room, each once, in order, after
        ``cursor``: ``(hashes, next_cursor)``, ``next_cursor`` None on the last page.
        ``limit`` (at least 1, else :class:`ValueError`) bounds the page."""


class Revocations(Protocol):
    """Revoked token subjects and ids (``room revoke``), shared by every node."""

    async def add_revocation(
        self, kind: RevocationKind, value: str, *, now_ms: int, expires_ms: int | None = None
    ) -> bool:
        """Revoke every token of subject ``value`` (``kind`` ``sub``) or the token with id
        ``value`` (``jti``), until ``expires_ms`` (None: for good). True when no revocation
        of it applied at ``now_ms`` yet. Revoking again while it applies keeps the longer
        of the two expiries (and its ``created_ms``); once it has lapsed, revoking again
        starts a new one. A kind other than ``sub``/``jti`` or an empty value raise
        :class:`ValueError`, and nothing is written."""

    async def is_revoked(self, sub: str | None, jti: str | None, *, now_ms: int) -> bool:
        """True when a token with this ``sub`` or this ``jti`` (either may be None) is
        revoked at ``now_ms``."""

    async def list_revocations(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Revocation], str | None]:
        """One page of revocations ordered by ``(kind, value)``, expired ones included
        (with their ``expires_ms``): ``(revocations, next_cursor)``, None on the last page.
        ``limit`` (at least 1, else :class:`ValueError`) bounds the page."""


class Archives(Protocol):
    """Archive snapshots and their lineage links (SPEC §6 ``archive``)."""

    async def put_archive(self, record: ArchiveRecord, chunks: Sequence[bytes]) -> bool:
        """Store an archive's record and chunks in one transaction; True when it is new.
        An archive with the same ref is kept as it is (same bytes, by construction) and
        False returned. ``chunks`` must match ``record.chunks`` and ``record.size``
        (else :class:`ValueError`, nothing written)."""

    async def get_archive(self, ref: str) -> ArchiveRecord | None:
        """The record of ``ref``, or None."""

    async def archive_chunk(self, ref: str, index: int) -> bytes:
        """Chunk ``index`` (0: the header) of archive ``ref``; :class:`StoreError` when
        it is not stored."""

    async def list_archives(
        self, room: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[ArchiveRecord], str | None]:
        """One page of the archives of ``room``, newest first: ``(records, next_cursor)``,
        None on the last page. ``limit`` (at least 1, else :class:`ValueError`)."""

    async def delete_archive(self, ref: str) -> bool:
        """Remove an archive and its chunks; True when it existed. Lineage stays linked:
        archives whose ``parent`` was ``ref`` get ``ref``'s parent, and a room whose
        ``lineage_head`` was ``ref`` gets it too. (Refusing to delete a fork's checkpoint
        is the caller's rule, with :meth:`forks_of`.)"""

    async def forks_of(self, ref: str) -> list[str]:
        """The rooms whose ``checkpoint`` is ``ref``, by id."""


class Proposals(Protocol):
    """Promotion proposals (SPEC §6 ``room propose``..``reject``)."""

    async def put_proposal(self, record: ProposalRecord) -> None:
        """Insert or replace a proposal."""

    async def get_proposal(self, proposal: str) -> ProposalRecord | None:
        """The proposal, or None."""


class QuerySpecs(Protocol):
    """Named query specs (SPEC §6 ``query``), node-wide; a spec is a JSON object."""

    async def put_query(self, name: str, spec: dict[str, object]) -> bool:
        """Define or replace ``name``; True when it is new."""

    async def get_query(self, name: str) -> dict[str, object] | None:
        """The spec of ``name``, or None."""

    async def list_queries(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[tuple[str, dict[str, object]]], str | None]:
        """One page of ``(name, spec)`` ordered by name, after ``cursor``."""

    async def delete_query(self, name: str) -> bool:
        """Drop ``name``; True when it existed."""

    async def run_query(
        self,
        room: str,
        spec: QuerySpec,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, object]], str | None]:
        """One page of ``spec`` over ``room``'s durable live state: ``(rows,
        next_cursor)``, exactly :func:`roomsync.core.query.evaluate` over the room's
        entries (rows ``{path, value}``, ``raw`` too for a value that is not JSON;
        ``next_cursor`` None on the last page). ``limit`` (default: the spec's) is 1..1000
        and ``cursor`` one this query handed out, else :class:`ValueError`
        (:class:`~roomsync.core.query.QueryCursorError` for the cursor). A room never
        written has no rows. A backend may push the work down (SQLite: its JSON
        functions) but never answer differently from the core evaluator."""


class Settings(Protocol):
    """Node-wide settings that operators change at run time (``policy set`` without a
    room), as JSON objects by key; shared by every node on the store."""

    async def get_setting(self, key: str) -> dict[str, object] | None:
        """The stored object of ``key``, or None."""

    async def put_setting(self, key: str, value: dict[str, object]) -> None:
        """Store ``value`` (JSON-able, else :class:`StoreError`) under ``key``."""


@dataclass(frozen=True, slots=True)
class NodeBeat:
    """A node's last heartbeat in the registry (SPEC §8 ``topology``): ``info`` is what
    it reported then (its URL, rooms, connections, draining), ``beat_ms`` when (the
    node's clock)."""

    node: str
    beat_ms: int
    info: dict[str, object]


class NodeRegistry(Protocol):
    """Nodes sharing the store, by heartbeat (several nodes: ``topology get``, and the
    failover of placed rooms when a node's heartbeat stops)."""

    async def beat(self, node: str, info: dict[str, object], *, now_ms: int) -> None:
        """Record ``node``'s heartbeat at ``now_ms`` with ``info`` (JSON-able)."""

    async def list_nodes(self) -> list[NodeBeat]:
        """Every node that has beaten and was not forgotten, by name."""

    async def forget_node(self, node: str) -> bool:
        """Remove ``node`` from the registry (it stopped); True when it was there."""


class Store(
    StoreLifecycle,
    RoomCatalog,
    OpLog,
    BlobRefs,
    Revocations,
    Archives,
    Proposals,
    QuerySpecs,
    Settings,
    NodeRegistry,
    Protocol,
):
    """Everything a node holds: every Protocol above in one backend."""


#: How far :func:`lineage` walks at most (a longer chain is cut there).
LINEAGE_MAX = 10_000


class LineageReader(RoomCatalog, Archives, Protocol):
    """What :func:`lineage` reads: room records and archives."""


async def lineage(
    store: LineageReader, room: str, *, limit: int = LINEAGE_MAX
) -> list[ArchiveRecord]:
    """The lineage of ``room`` (SPEC §6): its archives from ``lineage_head`` along their
    ``parent`` links, newest first, at most ``limit``. Empty for an unknown room."""
    record = await store.get_room(room)
    out: list[ArchiveRecord] = []
    ref = None if record is None else record.lineage_head
    seen: set[str] = set()
    while ref is not None and len(out) < limit and ref not in seen:
        seen.add(ref)
        archive = await store.get_archive(ref)
        if archive is None:
            break
        out.append(archive)
        ref = archive.parent
    return out


#: Hashes per page when :func:`all_blob_refs` walks the references.
BLOB_REFS_PAGE = 1000


async def all_blob_refs(store: BlobRefs, *, page: int = BLOB_REFS_PAGE) -> set[str]:
    """Every hash referenced by any room: the live set for blob garbage collection.

    Walks :meth:`BlobRefs.blob_refs` page by page, so it is not one snapshot: a reference
    added meanwhile may be missed, exactly as if it had been added right after a snapshot
    (callers keep in-flight hashes themselves, as ``BlobService.collect_garbage`` does).
    """
    refs: set[str] = set()
    cursor: str | None = None
    while True:
        hashes, cursor = await store.blob_refs(limit=page, cursor=cursor)
        refs.update(hashes)
        if cursor is None:
            return refs
