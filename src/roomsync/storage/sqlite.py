"""The embedded default store: SQLite in WAL mode behind one writer (SPEC §8).

Threads and connections::

    event loop ──append()──▶ pending list ──▶ writer thread (the writing connection)
               ──small append, writer idle──▶ same connection, on the loop's own thread
               ──reads────────────────────▶ reader thread (1 connection, query_only)

One connection does every write, and never from two threads at once, so transactions
never contend inside the process; reads run on a second connection on their own thread
and, thanks to WAL, never wait for the writer. asyncio meets the threads only through
``loop.run_in_executor`` (open, close, reads, room writes, compaction) and, for appends,
``loop.call_soon_threadsafe`` settling each caller's future. Use one store from one event
loop.

Inline commits: with ``synchronous`` OFF or NORMAL a WAL commit is a ``write()`` into the
page cache, no fsync, about as cheap as the two thread switches it would take to hand it
to the writer. So an append of at most ``_INLINE_ROWS`` rows and ``_INLINE_BYTES`` of
values, made while the writer thread has nothing queued or running, commits right there
on the event loop's thread (with ``busy_timeout`` 0: if another process holds the write
lock it goes to the writer thread, which waits for it). That is the common case of a live
room, a few changes per pack. Bigger or concurrent appends, and every append under
FULL/EXTRA, take the writer thread (where sqlite3 releases the GIL while it writes).
SQLite's automatic checkpoint is off on the writing connection (it would fsync on
whichever commit crosses the threshold, possibly on the loop's thread); the store runs a
PASSIVE checkpoint on the writer thread every ``_CHECKPOINT_PAGES`` (estimated) instead.
*Every* commit counts towards it (appends, inline or not, room and blob-reference writes,
compactions, health probes), so the WAL stays bounded whatever the mix of writes.

Fencing: :meth:`SqliteStore.append` moves ``rooms.head`` inside the batch's own
``BEGIN IMMEDIATE`` transaction (or its SAVEPOINT in a group) with one ``UPDATE ... WHERE
head = expected_head``, and refuses the batch with
:class:`~roomsync.storage.base.StoreConflict` when that matched no row (a room never
written is created when ``expected_head`` is 0). The write lock is held from that check
to the COMMIT, so two writers on one database file (two stores, two processes, two
nodes) can never both write a seq: whichever commits second finds the head moved.

Rooms cost nothing until written: :meth:`SqliteStore.load_room` of an unknown room only
reads, and the ``rooms`` row is created by the first write that needs it (``append``,
``add_blob_ref``, ``put_room``). A hello that is refused leaves nothing on disk.

Health: the store remembers its failed writes (disk full, I/O error, ...) until a write
at least :func:`_probe_pad` bytes big commits, and :meth:`SqliteStore.check` fails while
it does. A smaller write proves nothing: on a full disk it may still fit into the WAL
frames a failed transaction wrote before it failed, and succeed. The check itself makes a
real committed write, padded to that size while a failure is remembered; so it fails from
the first probe after a failed write, and passes again, without a restart, once the disk
has room.

Batches of several rooms (:meth:`SqliteStore.append_batches`, the server's commit of one
event-loop turn) commit inline in one transaction, one SAVEPOINT per batch, when they add
up to no more than an inline append may (:meth:`SqliteStore.append_batches_now` answers
None otherwise, having written nothing); else they are queued to the writer together.

Group commit: an append that does not commit inline queues its batch and wakes the
writer. The writer takes *everything* queued when it starts (in transactions of at most
``_GROUP_ROWS`` rows), so appends that arrive while a commit is running share the next
one. Each batch runs inside its own SAVEPOINT: a batch the store refuses (a head that
moved, a constraint) fails alone, while a failing transaction (disk full, database locked
past ``busy_timeout``) fails every caller in it. A caller's awaitable resolves only after
the COMMIT that carries its rows; batches of one room are applied in call order. The
callers of a job's last transaction are settled by the same loop callback that marks the
writer free (after it), so a caller that appends again right away sees the writer idle
and may commit inline.

Durability: with ``synchronous=NORMAL`` in WAL mode a committed transaction survives the
death of the process (``kill -9``); ``FULL`` also survives power loss, at an fsync per
commit.

Schema changes are numbered :data:`MIGRATIONS`; :meth:`SqliteStore.open` applies the
missing ones in one ``BEGIN IMMEDIATE`` transaction and records each in
``schema_migrations``, so concurrent openers never apply a step twice.

SQLite integers are signed 64-bit; HLC ``ts`` is a u64, so values above ``2**63 - 1`` are
stored wrapped to negative and unwrapped on read (the store never orders by ``ts`` in SQL).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from ..core.entries import Change
from ..core.merge import merge_into, wins
from ..core.postcard import decode_pack, encode_pack
from ..core.query import QuerySpec
from . import sqlite_query
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

__all__ = ["MIGRATIONS", "Migration", "SqliteStore"]

_T = TypeVar("_T")
_A = TypeVar("_A")

_SYNCHRONOUS_MODES: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_I64_MAX: Final = (1 << 63) - 1
# Bounds one append transaction (and so the latency of everyone in it) under a flood.
_GROUP_ROWS: Final = 16384
# The biggest append committed on the event loop's thread (see the module docstring);
# bigger ones go to the writer thread, where sqlite3 releases the GIL while it writes.
_INLINE_ROWS: Final = 256
_INLINE_BYTES: Final = 64 * 1024
_INLINE_MODES: Final = frozenset({"OFF", "NORMAL"})
# WAL pages written between two PASSIVE checkpoints (SQLite's own automatic checkpoint
# also runs every 1000 pages), estimated per commit by _pages(): 4 (the leaves and index
# pages a commit touches, page 1 when the file grows) + a page per row + one per 512 bytes
# of values (rows of about 1 KiB split leaves often: measured ~8 pages for one such row).
_CHECKPOINT_PAGES: Final = 1000
_PAGES_PER_COMMIT: Final = 4
_VALUE_BYTES_PER_PAGE: Final = 512
# The health probe made while a failed write is remembered writes a pad of twice the
# failed write's values (op log + entries) and this much more, at most _PROBE_PAD_MAX
# (see _probe_pad).
_PROBE_PAD_MIN: Final = 64 * 1024
_PROBE_PAD_MAX: Final = 4 * 1024 * 1024
_U64_SPAN: Final = 1 << 64


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step; ``statements`` run in order inside one transaction."""

    version: int
    name: str
    statements: tuple[str, ...]


# Append only: a released migration is never edited, a change is a new number.
MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "rooms, state entries, op log, compacted base",
        (
            """CREATE TABLE rooms (
                room TEXT NOT NULL PRIMARY KEY,
                created_ms INTEGER NOT NULL,
                locked INTEGER NOT NULL DEFAULT 0,
                closed INTEGER NOT NULL DEFAULT 0,
                head INTEGER NOT NULL DEFAULT 0,
                compacted_through INTEGER NOT NULL DEFAULT 0,
                policy TEXT NOT NULL DEFAULT '{}'
            ) WITHOUT ROWID""",
            # value NULL = tombstone; seq = the op-log row that last changed the path.
            """CREATE TABLE entries (
                room TEXT NOT NULL REFERENCES rooms (room) ON DELETE CASCADE,
                path TEXT NOT NULL,
                ts INTEGER NOT NULL,
                counter INTEGER NOT NULL,
                actor TEXT NOT NULL,
                value BLOB,
                seq INTEGER NOT NULL,
                PRIMARY KEY (room, path)
            ) WITHOUT ROWID""",
            """CREATE TABLE oplog (
                room TEXT NOT NULL REFERENCES rooms (room) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                path TEXT NOT NULL,
                ts INTEGER NOT NULL,
                counter INTEGER NOT NULL,
                actor TEXT NOT NULL,
                value BLOB,
                PRIMARY KEY (room, seq)
            ) WITHOUT ROWID""",
            """CREATE TABLE base_entries (
                room TEXT NOT NULL REFERENCES rooms (room) ON DELETE CASCADE,
                path TEXT NOT NULL,
                ts INTEGER NOT NULL,
                counter INTEGER NOT NULL,
                actor TEXT NOT NULL,
                value BLOB,
                seq INTEGER NOT NULL,
                PRIMARY KEY (room, path)
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        2,
        "health probe row for check()",
        ("CREATE TABLE health (id INTEGER PRIMARY KEY, probes INTEGER NOT NULL)",),
    ),
    Migration(
        3,
        "blob references per room (room-scoped access, garbage collection)",
        (
            """CREATE TABLE blob_refs (
                room TEXT NOT NULL,
                hash TEXT NOT NULL,
                size INTEGER NOT NULL,
                created_ms INTEGER NOT NULL,
                PRIMARY KEY (room, hash)
            ) WITHOUT ROWID""",
            "CREATE INDEX blob_refs_hash ON blob_refs (hash)",
        ),
    ),
    Migration(
        4,
        "health probe padding: check() proves a failed store can write again",
        ("ALTER TABLE health ADD COLUMN pad BLOB",),
    ),
    Migration(
        5,
        "revocations shared by every node on the store (room revoke)",
        (
            # expires_ms NULL: for good.
            """CREATE TABLE revocations (
                kind TEXT NOT NULL CHECK (kind IN ('sub', 'jti')),
                value TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                expires_ms INTEGER,
                PRIMARY KEY (kind, value)
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        6,
        "control plane: lineage, placement and ticks of rooms, archives, proposals, "
        "query specs, settings",
        (
            "ALTER TABLE rooms ADD COLUMN lineage_head TEXT",
            "ALTER TABLE rooms ADD COLUMN source TEXT",
            "ALTER TABLE rooms ADD COLUMN checkpoint TEXT",
            "ALTER TABLE rooms ADD COLUMN node TEXT",
            "ALTER TABLE rooms ADD COLUMN tick_n INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE rooms ADD COLUMN tick_interval_ms INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE rooms ADD COLUMN tick_at_ms INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX rooms_checkpoint ON rooms (checkpoint) WHERE checkpoint IS NOT NULL",
            # Not tied to rooms: an archive outlives its room (a deleted room is restorable).
            # n orders listings newest first.
            """CREATE TABLE archives (
                n INTEGER PRIMARY KEY AUTOINCREMENT,
                ref TEXT NOT NULL UNIQUE,
                room TEXT NOT NULL,
                head INTEGER NOT NULL,
                root TEXT NOT NULL,
                count INTEGER NOT NULL,
                size INTEGER NOT NULL,
                chunks INTEGER NOT NULL,
                created_ms INTEGER NOT NULL,
                parent TEXT
            )""",
            "CREATE INDEX archives_room ON archives (room, n)",
            "CREATE INDEX archives_parent ON archives (parent) WHERE parent IS NOT NULL",
            """CREATE TABLE archive_chunks (
                ref TEXT NOT NULL,
                idx INTEGER NOT NULL,
                data BLOB NOT NULL,
                PRIMARY KEY (ref, idx)
            ) WITHOUT ROWID""",
            # changes: the snapshot body encoding of roomsync.core.archive (postcard packs).
            """CREATE TABLE proposals (
                proposal TEXT NOT NULL PRIMARY KEY,
                room TEXT NOT NULL,
                source TEXT NOT NULL,
                checkpoint TEXT NOT NULL,
                state TEXT NOT NULL,
                changes BLOB NOT NULL,
                created_ms INTEGER NOT NULL,
                conflicts TEXT NOT NULL DEFAULT '[]',
                resolve TEXT,
                validated_head INTEGER
            ) WITHOUT ROWID""",
            """CREATE TABLE query_specs (
                name TEXT NOT NULL PRIMARY KEY,
                spec TEXT NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE settings (
                key TEXT NOT NULL PRIMARY KEY,
                value TEXT NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        7,
        "webhook outbox and delivery log (storage/webhooks.py)",
        (
            # n orders claims after next_ms (insertion order among equally due rows).
            """CREATE TABLE webhook_outbox (
                n INTEGER PRIMARY KEY AUTOINCREMENT,
                key TEXT NOT NULL UNIQUE,
                id TEXT NOT NULL,
                room TEXT NOT NULL,
                event TEXT NOT NULL,
                url TEXT NOT NULL,
                body TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                next_ms INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT NOT NULL DEFAULT '',
                lease_node TEXT,
                lease_until INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX webhook_outbox_due ON webhook_outbox (next_ms, n)",
            """CREATE TABLE webhook_log (
                n INTEGER PRIMARY KEY AUTOINCREMENT,
                room TEXT NOT NULL,
                id TEXT NOT NULL,
                event TEXT NOT NULL,
                url TEXT NOT NULL,
                outcome TEXT NOT NULL,
                status INTEGER,
                attempts INTEGER NOT NULL,
                at_ms INTEGER NOT NULL,
                error TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX webhook_log_room ON webhook_log (room, n)",
        ),
    ),
    Migration(
        8,
        "node registry (topology, heartbeats)",
        (
            """CREATE TABLE nodes (
                node TEXT PRIMARY KEY,
                beat_ms INTEGER NOT NULL,
                info TEXT NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
)

_WEBHOOK_COLUMNS = "key, id, room, event, url, body, created_ms, next_ms, attempts, last_error"

_CREATE_MIGRATIONS = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_ms INTEGER NOT NULL
)"""
_RECORD_MIGRATION = """INSERT INTO schema_migrations (version, name, applied_ms)
    VALUES (?, ?, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))"""

# Rows go in as multi-row VALUES statements: one statement step per chunk instead of one per
# change halves the cost of an append (sqlite3's per-step overhead and the foreign-key
# check's per-step setup dominate small rows). Chunk sizes are powers of two so that any
# batch needs at most a handful of distinct, cached statements per table.
_ROW_WIDTH: Final = 7
_CHUNK_SIZES: Final = (256, 128, 64, 32, 16, 8, 4, 2, 1)


def _bulk_sql(head: str, width: int = _ROW_WIDTH) -> dict[int, str]:
    row = "(" + ", ".join("?" * width) + ")"
    return {n: f"{head} VALUES {', '.join([row] * n)}" for n in _CHUNK_SIZES}


# One flat parameter list per batch serves every table:
# (room, seq, path, ts, counter, actor, value) per change.
_COLUMNS_IN = "(room, seq, path, ts, counter, actor, value)"
_INSERT_OPLOG: Final = _bulk_sql(f"INSERT INTO oplog {_COLUMNS_IN}")
_UPSERT_ENTRY: Final = _bulk_sql(f"INSERT OR REPLACE INTO entries {_COLUMNS_IN}")
_UPSERT_BASE: Final = _bulk_sql(f"INSERT OR REPLACE INTO base_entries {_COLUMNS_IN}")


def _insert_rows(
    conn: sqlite3.Connection, sql: dict[int, str], params: list[Any], width: int = _ROW_WIDTH
) -> None:
    """Insert the rows of flat ``params`` in order (later rows replace earlier ones)."""
    nrows = len(params) // width
    done = 0
    for size in _CHUNK_SIZES:
        while nrows - done >= size:
            conn.execute(sql[size], params[done * width : (done + size) * width])
            done += size


# What replace_state writes a new state into before it compares it with the room's.
_CREATE_REPLACEMENT = """CREATE TEMP TABLE IF NOT EXISTS replacement (
    path TEXT NOT NULL PRIMARY KEY,
    ts INTEGER NOT NULL,
    counter INTEGER NOT NULL,
    actor TEXT NOT NULL,
    value BLOB
) WITHOUT ROWID"""
_INSERT_REPLACEMENT: Final = _bulk_sql(
    "INSERT INTO temp.replacement (path, ts, counter, actor, value)", 5
)
_REPLACE_SLICE: Final = 4096
_ROOM_COLUMNS = (
    "room, created_ms, locked, closed, head, compacted_through, policy, "
    "lineage_head, source, checkpoint, node, tick_n, tick_interval_ms, tick_at_ms"
)
_ARCHIVE_COLUMNS = "ref, room, head, root, count, size, chunks, created_ms, parent"
_PROPOSAL_COLUMNS = (
    "proposal, room, source, checkpoint, state, changes, created_ms, conflicts, resolve, "
    "validated_head"
)
_REVOCATION_COLUMNS = "kind, value, created_ms, expires_ms"
_CHANGE_COLUMNS = "path, ts, counter, actor, value, seq"

_Row = tuple[Any, ...]


def _pages(rows: int, value_bytes: int = 0) -> int:
    """The WAL pages one commit of ``rows`` rows with ``value_bytes`` of values writes,
    estimated generously (a checkpoint too many is cheap, an unbounded WAL is not)."""
    return _PAGES_PER_COMMIT + rows + value_bytes // _VALUE_BYTES_PER_PAGE


def _probe_pad(failed_bytes: int) -> int:
    """Bytes the health probe writes while a failed write of ``failed_bytes`` of values is
    remembered: more pages than that write needed, so the probe cannot fit into the WAL
    frames the failed transaction wrote before it failed (a smaller write can, and then
    succeeds on a full disk), and as many as the next probe, so probes do not grow."""
    return min(_PROBE_PAD_MAX, _PROBE_PAD_MIN + 2 * failed_bytes)


def _value_bytes(changes: Sequence[Change]) -> int:
    return sum(len(c.value or b"") for c in changes)


def _ts_in(ts: int) -> int:
    return ts if ts <= _I64_MAX else ts - _U64_SPAN


def _change(row: _Row) -> Change:
    path, ts, counter, actor, value, seq = row
    return Change(path, ts if ts >= 0 else ts + _U64_SPAN, counter, actor, value, seq)


def _changes(rows: list[_Row]) -> list[Change]:
    span = _U64_SPAN
    return [
        Change(path, ts if ts >= 0 else ts + span, counter, actor, value, seq)
        for path, ts, counter, actor, value, seq in rows
    ]


def _record(row: _Row) -> RoomRecord:
    (room, created_ms, locked, closed, head, compacted_through, policy, lineage_head, source,
     checkpoint, node, tick_n, tick_interval_ms, tick_at_ms) = row  # fmt: skip
    return RoomRecord(
        room=room,
        created_ms=created_ms,
        locked=bool(locked),
        closed=bool(closed),
        head=head,
        compacted_through=compacted_through,
        policy=json.loads(policy),
        lineage_head=lineage_head,
        source=source,
        checkpoint=checkpoint,
        node=node,
        tick_n=tick_n,
        tick_interval_ms=tick_interval_ms,
        tick_at_ms=tick_at_ms,
    )


def _archive(row: _Row) -> ArchiveRecord:
    ref, room, head, root, count, size, chunks, created_ms, parent = row
    return ArchiveRecord(ref, room, head, root, count, size, chunks, created_ms, parent)


def _proposal(row: _Row) -> ProposalRecord:
    (proposal, room, source, checkpoint, state, changes, created_ms, conflicts, resolve,
     validated_head) = row  # fmt: skip
    return ProposalRecord(
        proposal=proposal,
        room=room,
        source=source,
        checkpoint=checkpoint,
        state=state,
        changes=tuple(decode_pack(bytes(changes))),
        created_ms=created_ms,
        conflicts=tuple(json.loads(conflicts)),
        resolve=resolve,
        validated_head=validated_head,
    )


def _json_text(value: dict[str, object], what: str) -> str:
    return json.dumps(json_copy(value, what=what), sort_keys=True, separators=(",", ":"))


def _revocation(row: _Row) -> Revocation:
    kind, value, created_ms, expires_ms = row
    return Revocation(kind, value, created_ms, expires_ms)


class _Refused(Exception):
    """A batch the store will not write; only its own caller fails."""


class _Conflict(_Refused):
    """The room's head is not the one the batch expects (fencing)."""

    def __init__(self, room: str, expected: int, actual: int) -> None:
        super().__init__(room, expected, actual)
        self.room, self.expected, self.actual = room, expected, actual


# What refuses one batch (its caller alone fails): our own checks, a constraint, a
# value SQLite cannot store.
_REFUSALS = (_Refused, sqlite3.IntegrityError, OverflowError)


def _refusal(exc: BaseException) -> StoreError:
    error: StoreError
    if isinstance(exc, _Conflict):
        error = StoreConflict(exc.room, exc.expected, exc.actual)
    else:
        error = StoreError(f"append refused: {exc}")
    error.__cause__ = exc
    return error


def _write_batch(
    conn: sqlite3.Connection,
    room: str,
    changes: Sequence[Change],
    expected_head: int,
    now_ms: Callable[[], int],
) -> None:
    """The op-log rows, the entries and the head of one batch, inside the caller's
    transaction (which holds the write lock, so the head checked here is the head the
    COMMIT lands on). Raises :class:`_Conflict` when the room's head is not
    ``expected_head`` (a batch whose seqs do not continue it was refused before, by
    :func:`~roomsync.storage.base.check_batch`). The first batch of a room never written
    creates its row (``created_ms`` now)."""
    new_head = expected_head + len(changes)
    # The fence and the new head in one statement (the common case); only when it moves
    # nothing is the row read, to tell a conflict from a room never written.
    moved = conn.execute(
        "UPDATE rooms SET head = ? WHERE room = ? AND head = ?", (new_head, room, expected_head)
    ).rowcount
    if moved != 1:
        row = conn.execute("SELECT head FROM rooms WHERE room = ?", (room,)).fetchone()
        if row is not None or expected_head != 0:
            raise _Conflict(room, expected_head, 0 if row is None else row[0])
        # a refused batch rolls this back with the rest
        conn.execute(
            "INSERT INTO rooms (room, created_ms, head) VALUES (?, ?, ?)",
            (room, now_ms(), new_head),
        )
    expected = expected_head + 1
    params: list[Any] = []
    extend = params.extend
    for change in changes:
        ts = change.ts
        extend(
            (
                room,
                expected,
                change.path,
                ts if ts <= _I64_MAX else ts - _U64_SPAN,
                change.counter,
                change.actor,
                change.value,
            )
        )
        expected += 1
    _insert_rows(conn, _INSERT_OPLOG, params)
    _insert_rows(conn, _UPSERT_ENTRY, params)


@dataclass(slots=True)
class _Append:
    room: str
    changes: Sequence[Change]
    expected_head: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class _Txn(Generic[_T]):
    """A writer-thread transaction: ``fn`` runs inside it; ``pad_bytes`` are the values
    it writes beyond its rows (for the WAL estimate and a failure's size)."""

    fn: Callable[[sqlite3.Connection], _T]
    pad_bytes: int


@dataclass(slots=True)
class _Report:
    """What a writer-thread job hands back to the loop's thread when it ends (see
    :meth:`SqliteStore._job_done`): filled on the writer thread, read on the loop's."""

    pages: int = 0  # WAL pages its commits wrote (estimated)
    committed_bytes: int = -1  # values of its biggest committed write (-1: none committed)
    failure: StoreError | None = None  # its last write failed (the store's fault, not a refusal)
    failed_bytes: int = 0  # the values the failed write carried
    settle: list[tuple[_Append, StoreError | None]] = field(default_factory=list)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; its rows are committed (or not) regardless
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class SqliteStore:
    """A :class:`~roomsync.storage.base.Store` in one SQLite file (WAL, one writer).

    ``commits`` counts committed append transactions and ``appends`` the append calls
    they carried; ``appends / commits`` is the group-commit factor. ``migrations_applied``
    lists the migration versions the last :meth:`open` applied (empty when up to date).
    ``now_ms`` stamps ``created_ms`` of the rooms that ``append`` creates.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5000,
        cache_kib: int = 16384,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS_MODES)}")
        if busy_timeout_ms < 0:
            raise ValueError("busy_timeout_ms must be >= 0")
        self.path = Path(path)
        self.synchronous = mode
        self.busy_timeout_ms = busy_timeout_ms
        self.cache_kib = cache_kib
        self.now_ms = now_ms
        self.commits = 0
        self.appends = 0
        self.inline_commits = 0
        self.checkpoints = 0
        self.migrations_applied: list[int] = []
        #: What the last :meth:`run_query` did (SQL candidates, rows left to Python).
        self.last_query: sqlite_query.QueryStats | None = None
        self._open = False
        self._closing = False
        self._open_lock = asyncio.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        # The reading connection lives on the reader thread. The writing one is used by the
        # writer thread, and by the loop's thread only while ``_thread_jobs`` is 0.
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._pending_lock = threading.Lock()
        self._pending: list[_Append] = []
        self._flush_scheduled = False
        self._inline = mode in _INLINE_MODES
        # Writer-thread jobs submitted and not finished yet; maintained on the loop's thread
        # (a job signals its end with call_soon_threadsafe, after its last use of _wconn).
        self._thread_jobs = 0
        self._busy_ms = busy_timeout_ms  # the writing connection's busy_timeout right now
        self._uncheckpointed = 0  # WAL pages (estimated) since the last checkpoint
        # The last failed write and the bytes of values it carried, until a write commits;
        # like the two above, only touched on the loop's thread.
        self._write_failure: StoreError | None = None
        self._failed_bytes = 0

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r}, synchronous={self.synchronous!r})"

    def _fail(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"sqlite store {self.path}: {what}: {exc}")

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        async with self._open_lock:
            if self._open:
                return
            writer = ThreadPoolExecutor(1, thread_name_prefix="roomsync-sqlite-writer")
            reader = ThreadPoolExecutor(1, thread_name_prefix="roomsync-sqlite-reader")
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(writer, self._w_open)
                await loop.run_in_executor(reader, self._r_open)
            except BaseException:
                await loop.run_in_executor(writer, self._w_close)
                await loop.run_in_executor(reader, self._r_close)
                writer.shutdown(wait=True)
                reader.shutdown(wait=True)
                raise
            self._writer, self._reader = writer, reader
            self._closing = False
            self._open = True

    async def close(self) -> None:
        async with self._open_lock:
            if not self._open:
                return
            writer, reader = self._writer, self._reader
            assert writer is not None and reader is not None
            self._closing = True  # new appends are refused from here on
            loop = asyncio.get_running_loop()
            # The executor is FIFO: this runs after every flush already scheduled.
            await loop.run_in_executor(writer, self._w_close)
            await loop.run_in_executor(reader, self._r_close)
            writer.shutdown(wait=True)
            reader.shutdown(wait=True)
            self._writer = self._reader = None
            self._open = False

    async def check(self) -> None:
        """Raise :class:`StoreError` unless a real write commits and reads back now.

        While a failed write is remembered the probe writes a pad of :func:`_probe_pad`
        bytes (kept until the next probe): only a write that needs fresh space proves that
        a full disk has room again. Its success forgets the failure, so the store reports
        ready again without a restart once the cause is gone.
        """
        failure, failed_bytes = self._write_failure, self._failed_bytes
        pad = 0 if failure is None else _probe_pad(failed_bytes)
        try:
            await self._write(lambda conn: self._w_probe(conn, pad), pad_bytes=pad)
        except StoreError as exc:
            if failure is None:
                raise
            # The probe failing tells nothing new: remember the write that failed before,
            # with its size, so that the next probe is no bigger than this one.
            self._write_failure, self._failed_bytes = failure, failed_bytes
            raise StoreError(f"{exc} (and before this check: {failure})") from exc
        if self._write_failure is not None:  # a bigger write failed while we probed
            raise StoreError(f"writes are failing: {self._write_failure}")
        probes = await self._read(self._r_probe)
        if probes is None:
            raise StoreError(f"sqlite store {self.path}: health probe row missing after write")

    # -- thread plumbing ----------------------------------------------------------------

    def _executors(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        if not self._open or self._closing or self._writer is None or self._reader is None:
            raise StoreError(f"sqlite store {self.path} is not open")
        return self._writer, self._reader

    async def _write(self, fn: Callable[[sqlite3.Connection], _T], *, pad_bytes: int = 0) -> _T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction on the writer thread
        (``pad_bytes``: values it writes beyond its rows, for the WAL estimate)."""
        writer, _ = self._executors()
        loop = asyncio.get_running_loop()
        self._thread_jobs += 1
        txn = _Txn(fn, pad_bytes)
        return await loop.run_in_executor(writer, self._w_job, loop, self._w_txn, txn)

    def _submit(
        self, loop: asyncio.AbstractEventLoop, job: Callable[[_Report, None], None]
    ) -> None:
        """Queue ``job`` on the writer thread (loop's thread only)."""
        writer, _ = self._executors()
        self._thread_jobs += 1
        writer.submit(self._w_job, loop, job, None)

    def _w_job(
        self,
        loop: asyncio.AbstractEventLoop,
        job: Callable[[_Report, _A], _T],
        arg: _A,
    ) -> _T:
        """Run a writer-thread job; then hand its report to the loop, which marks the
        connection free again (the job no longer uses it) and settles its callers."""
        report = _Report()
        try:
            self._w_busy_timeout(self.busy_timeout_ms)
            return job(report, arg)
        finally:
            try:
                loop.call_soon_threadsafe(self._job_done, report)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def _job_done(self, report: _Report) -> None:
        """A writer-thread job ended (loop's thread). In this order: the writer is free,
        WAL and failure bookkeeping are updated (maybe queueing a checkpoint), and only
        then the job's last callers wake up, so they see the writer as it really is."""
        self._thread_jobs -= 1
        if report.failure is not None:
            self._failed(report.failure, report.failed_bytes)
        else:
            self._committed(report.committed_bytes)
        self._wrote(report.pages)
        loop = asyncio.get_running_loop()
        for request, error in report.settle:
            if request.loop is loop:
                _settle(request.future, error)
            else:
                self._notify(request, error)

    def _failed(self, failure: StoreError, value_bytes: int) -> None:
        """Remember a failed write. The size kept is the biggest since the last write that
        proved the store sound: the WAL may hold that many stale frames to reuse."""
        if self._write_failure is not None:
            value_bytes = max(value_bytes, self._failed_bytes)
        self._write_failure, self._failed_bytes = failure, value_bytes

    def _committed(self, value_bytes: int) -> None:
        """A write with ``value_bytes`` of values committed (-1: none did): it forgets a
        remembered failure only when it was big enough to prove there is room again."""
        if self._write_failure is not None and value_bytes >= _probe_pad(self._failed_bytes):
            self._write_failure, self._failed_bytes = None, 0

    def _wrote(self, pages: int) -> None:
        """Count WAL pages written (loop's thread); queue a checkpoint once enough are."""
        self._uncheckpointed += pages
        if self._uncheckpointed < _CHECKPOINT_PAGES or self._closing or not self._open:
            return
        self._uncheckpointed = 0
        self._submit(asyncio.get_running_loop(), self._w_checkpoint)

    def _w_busy_timeout(self, ms: int) -> None:
        """Set the writing connection's busy_timeout (only when it changes)."""
        conn = self._wconn
        if conn is not None and self._busy_ms != ms:
            conn.execute(f"PRAGMA busy_timeout = {int(ms)}")
            self._busy_ms = ms

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in one read transaction (a consistent snapshot) on the reader thread."""
        _, reader = self._executors()
        return await asyncio.get_running_loop().run_in_executor(reader, self._r_txn, fn)

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: the writing connection also serves inline commits on the
        # loop's thread, never at the same time as the writer thread (see _thread_jobs).
        conn = sqlite3.connect(
            self.path, isolation_level=None, cached_statements=64, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _w_open(self) -> None:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise StoreError(
                f"cannot open sqlite store {path}: {path.parent} exists and is not a directory"
            ) from exc
        except OSError as exc:
            raise StoreError(f"cannot open sqlite store {path}: {exc.strerror or exc}") from exc
        # sqlite3 reports every OS failure as "unable to open database file"; touching the
        # file and checking the directory first puts the OS reason in the message.
        try:
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise StoreError(f"cannot open sqlite store {path}: {exc.strerror or exc}") from exc
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise StoreError(
                f"cannot open sqlite store {path}: directory {path.parent} is not writable "
                f"(WAL mode creates files beside the database)"
            )
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open sqlite store {path}: {exc}") from exc
        try:
            mode = self._w_wal_mode(conn)
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot open sqlite store {path}: WAL mode refused ({mode})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the store checkpoints itself
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA cache_size = -{int(self.cache_kib)}")
            self.migrations_applied = self._w_migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open sqlite store {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._wconn = conn

    def _w_wal_mode(self, conn: sqlite3.Connection) -> object:
        """``PRAGMA journal_mode = WAL``, retried while another process holds the lock.

        Switching a new database to WAL takes an exclusive lock, and SQLite does not call
        the busy handler for it: a second process opening the same new database at that
        moment gets "database is locked" at once. Retried for ``busy_timeout_ms``."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    @staticmethod
    def _w_migrate(conn: sqlite3.Connection) -> list[int]:
        applied: list[int] = []
        conn.execute("BEGIN IMMEDIATE")  # two processes opening at once apply each step once
        try:
            conn.execute(_CREATE_MIGRATIONS)
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in MIGRATIONS:
                if migration.version in done:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(_RECORD_MIGRATION, (migration.version, migration.name))
                applied.append(migration.version)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return applied

    def _r_open(self) -> None:
        try:
            conn = self._connect()
            try:
                conn.execute("PRAGMA query_only = ON")
                sqlite_query.install(conn)
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open sqlite store {self.path} for reading: {exc}") from exc
        self._rconn = conn

    def _w_close(self) -> None:
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None

    def _r_close(self) -> None:
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None

    def _w_txn(self, report: _Report, txn: _Txn[_T]) -> _T:
        conn = self._wconn
        if conn is None:
            raise StoreError(f"sqlite store {self.path} is not open")
        changes = conn.total_changes
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = txn.fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            error = self._fail("write failed", exc)
            report.failure, report.failed_bytes = error, txn.pad_bytes
            raise error from exc
        rows = conn.total_changes - changes
        if rows:
            report.pages += _pages(rows, txn.pad_bytes)
        report.committed_bytes = max(report.committed_bytes, txn.pad_bytes)
        return result

    def _r_txn(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._rconn
        if conn is None:
            raise StoreError(f"sqlite store {self.path} is not open")
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail("read failed", exc) from exc

    # -- rooms --------------------------------------------------------------------------

    async def get_room(self, room: str) -> RoomRecord | None:
        return await self._read(lambda conn: self._r_room(conn, room))

    @staticmethod
    def _r_room(conn: sqlite3.Connection, room: str) -> RoomRecord | None:
        row = conn.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room = ?", (room,)).fetchone()
        return None if row is None else _record(row)

    async def put_room(self, record: RoomRecord) -> None:
        try:
            policy = json.dumps(record.policy, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"policy of room {record.room!r} is not JSON: {exc}") from exc
        params = (
            record.room,
            record.created_ms,
            int(record.locked),
            int(record.closed),
            policy,
            record.lineage_head,
            record.source,
            record.checkpoint,
            record.node,
            record.tick_n,
            record.tick_interval_ms,
            record.tick_at_ms,
        )

        def put(conn: sqlite3.Connection) -> None:
            # An upsert, not INSERT OR REPLACE: replacing would cascade-delete the state.
            conn.execute(
                """INSERT INTO rooms (room, created_ms, locked, closed, policy, lineage_head,
                       source, checkpoint, node, tick_n, tick_interval_ms, tick_at_ms)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (room) DO UPDATE SET created_ms = excluded.created_ms,
                       locked = excluded.locked, closed = excluded.closed,
                       policy = excluded.policy, lineage_head = excluded.lineage_head,
                       source = excluded.source, checkpoint = excluded.checkpoint,
                       node = excluded.node, tick_n = excluded.tick_n,
                       tick_interval_ms = excluded.tick_interval_ms,
                       tick_at_ms = excluded.tick_at_ms""",
                params,
            )

        await self._write(put)

    async def list_rooms(self, *, limit: int = 100, cursor: str | None = None) -> list[RoomRecord]:
        def rooms(conn: sqlite3.Connection) -> list[RoomRecord]:
            rows = conn.execute(
                f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room > ? ORDER BY room LIMIT ?",
                ("" if cursor is None else cursor, max(limit, 0)),
            ).fetchall()
            return [_record(row) for row in rows]

        return await self._read(rooms)

    async def ticking_rooms(self) -> list[RoomRecord]:
        def rooms(conn: sqlite3.Connection) -> list[RoomRecord]:
            rows = conn.execute(
                f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE tick_interval_ms > 0 ORDER BY room"
            ).fetchall()
            return [_record(row) for row in rows]

        return await self._read(rooms)

    async def delete_room(self, room: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            for table in ("oplog", "entries", "base_entries", "blob_refs"):
                conn.execute(f"DELETE FROM {table} WHERE room = ?", (room,))
            return conn.execute("DELETE FROM rooms WHERE room = ?", (room,)).rowcount > 0

        return await self._write(delete)

    async def add_blob_ref(self, room: str, hash: str, size: int, *, now_ms: int) -> None:
        def add(conn: sqlite3.Connection) -> None:
            # A room holding a blob exists: listed, and delete_room takes the ref with it.
            conn.execute(
                "INSERT INTO rooms (room, created_ms) VALUES (?, ?) ON CONFLICT (room) DO NOTHING",
                (room, now_ms),
            )
            conn.execute(
                "INSERT OR IGNORE INTO blob_refs (room, hash, size, created_ms) VALUES (?,?,?,?)",
                (room, hash, size, now_ms),
            )

        await self._write(add)

    async def has_blob_ref(self, room: str, hash: str) -> bool:
        def has(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM blob_refs WHERE room = ? AND hash = ?", (room, hash)
            ).fetchone()
            return row is not None

        return await self._read(has)

    async def blob_refs(
        self, *, limit: int, cursor: str | None = None
    ) -> tuple[list[str], str | None]:
        check_page_limit(limit)

        def refs(conn: sqlite3.Connection) -> tuple[list[str], str | None]:
            # One row more than the page says whether another page follows (blob_refs_hash
            # serves the order and the DISTINCT).
            rows = conn.execute(
                "SELECT DISTINCT hash FROM blob_refs WHERE hash > ? ORDER BY hash LIMIT ?",
                ("" if cursor is None else cursor, limit + 1),
            ).fetchall()
            page = [row[0] for row in rows[:limit]]
            return page, page[-1] if len(rows) > limit else None

        return await self._read(refs)

    # -- revocations --------------------------------------------------------------------

    async def add_revocation(
        self, kind: RevocationKind, value: str, *, now_ms: int, expires_ms: int | None = None
    ) -> bool:
        check_revocation(kind, value)

        def add(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                f"SELECT {_REVOCATION_COLUMNS} FROM revocations WHERE kind = ? AND value = ?",
                (kind, value),
            ).fetchone()
            stored, new = merge_revocation(
                None if row is None else _revocation(row),
                kind,
                value,
                now_ms=now_ms,
                expires_ms=expires_ms,
            )
            if new or stored.expires_ms != row[3]:
                conn.execute(
                    f"INSERT OR REPLACE INTO revocations ({_REVOCATION_COLUMNS}) VALUES (?,?,?,?)",
                    (stored.kind, stored.value, stored.created_ms, stored.expires_ms),
                )
            return new

        return await self._write(add)

    async def is_revoked(self, sub: str | None, jti: str | None, *, now_ms: int) -> bool:
        keys = [(kind, value) for kind, value in (("sub", sub), ("jti", jti)) if value is not None]
        if not keys:
            return False

        def revoked(conn: sqlite3.Connection) -> bool:
            for kind, value in keys:
                row = conn.execute(
                    """SELECT 1 FROM revocations WHERE kind = ? AND value = ?
                       AND (expires_ms IS NULL OR expires_ms > ?)""",
                    (kind, value, now_ms),
                ).fetchone()
                if row is not None:
                    return True
            return False

        return await self._read(revoked)

    async def list_revocations(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Revocation], str | None]:
        check_page_limit(limit)
        kind, value = revocation_key(cursor)

        def page(conn: sqlite3.Connection) -> tuple[list[Revocation], str | None]:
            rows = conn.execute(
                f"""SELECT {_REVOCATION_COLUMNS} FROM revocations
                    WHERE (kind, value) > (?, ?) ORDER BY kind, value LIMIT ?""",
                (kind, value, limit + 1),
            ).fetchall()
            items = [_revocation(row) for row in rows[:limit]]
            return items, revocation_cursor(items[-1]) if len(rows) > limit else None

        return await self._read(page)

    async def load_room(self, room: str, *, now_ms: int) -> LoadedRoom:
        """Only reads: a room never written is an empty record (``created_ms`` now) that
        nothing stores; its first write creates the row."""
        loaded = await self._read(lambda conn: self._r_load(conn, room))
        if loaded is not None:
            return loaded
        return LoadedRoom(record=RoomRecord(room=room, created_ms=now_ms), entries=[])

    def _r_load(self, conn: sqlite3.Connection, room: str) -> LoadedRoom | None:
        record = self._r_room(conn, room)
        if record is None:
            return None
        rows = conn.execute(
            f"SELECT {_CHANGE_COLUMNS} FROM entries WHERE room = ? ORDER BY path", (room,)
        ).fetchall()
        return LoadedRoom(record=record, entries=_changes(rows))

    # -- op log -------------------------------------------------------------------------

    async def append(self, room: str, changes: Sequence[Change], *, expected_head: int) -> None:
        if not changes:
            return
        self._executors()  # refuses a store that is not open
        check_batch(room, expected_head, changes)
        (outcome,) = await self.append_batches([AppendBatch(room, changes, expected_head)])
        if outcome is not None:
            raise outcome

    async def append_batches(self, batches: Sequence[AppendBatch]) -> list[AppendOutcome]:
        """Inline in one transaction when :meth:`append_batches_now` can, else through the
        writer thread, where the batches (and whatever else is queued) share its group
        commit."""
        done = self.append_batches_now(batches)
        if done is not None:
            return done
        outcomes: list[AppendOutcome] = [None] * len(batches)
        try:
            self._executors()
        except StoreError as exc:
            return [exc] * len(batches)
        loop = asyncio.get_running_loop()
        queued: list[tuple[int, asyncio.Future[None]]] = []
        requests: list[_Append] = []
        for i, batch in enumerate(batches):
            if not batch.changes:
                continue
            try:
                check_batch(batch.room, batch.expected_head, batch.changes)
            except StoreError as exc:
                outcomes[i] = exc
                continue
            future: asyncio.Future[None] = loop.create_future()
            # A tuple: the writer thread reads the batch later, the caller may reuse its list.
            requests.append(
                _Append(batch.room, tuple(batch.changes), batch.expected_head, loop, future)
            )
            queued.append((i, future))
        if not requests:
            return outcomes
        with self._pending_lock:
            self._pending.extend(requests)
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if schedule:
            self._submit(loop, self._w_flush)
        for i, future in queued:  # all settle in the same loop callback (or nearly)
            try:
                await future
            except StoreError as exc:
                outcomes[i] = exc
        return outcomes

    def append_batches_now(self, batches: Sequence[AppendBatch]) -> list[AppendOutcome] | None:
        """One inline transaction for every batch when they add up to at most
        ``_INLINE_ROWS`` rows and ``_INLINE_BYTES`` of values, the writer thread is idle
        and ``synchronous`` is NORMAL or OFF; None otherwise (and when another process
        holds the write lock: the writer thread waits for it)."""
        if not self._inline or self._thread_jobs or not self._open or self._closing:
            return None
        outcomes: list[AppendOutcome] = [None] * len(batches)
        todo: list[tuple[int, AppendBatch]] = []
        rows = value_bytes = 0
        for i, batch in enumerate(batches):
            changes = batch.changes
            if not changes:
                continue
            try:
                check_batch(batch.room, batch.expected_head, changes)
            except StoreError as exc:
                outcomes[i] = exc
                continue
            rows += len(changes)
            value_bytes += _value_bytes(changes)
            todo.append((i, batch))
        if rows > _INLINE_ROWS or value_bytes > _INLINE_BYTES:
            return None
        if todo:
            done = self._commit_inline(todo, rows, value_bytes)
            if done is None:
                return None
            for (i, _), outcome in zip(todo, done, strict=True):
                outcomes[i] = outcome
        return outcomes

    def _commit_inline(
        self, todo: list[tuple[int, AppendBatch]], rows: int, value_bytes: int
    ) -> list[AppendOutcome] | None:
        """Commit checked batches in one transaction on the calling (loop) thread: each
        batch's refusal, the failure of all of them, or None when the write lock is taken
        (by another process; nothing was written)."""
        conn = self._wconn
        if conn is None:
            return [StoreError(f"sqlite store {self.path} is not open")] * len(todo)
        now_ms = self.now_ms
        outcomes: list[AppendOutcome]
        try:
            self._w_busy_timeout(0)
            conn.execute("BEGIN IMMEDIATE")
            try:
                if len(todo) == 1:  # no savepoint: its refusal rolls back the transaction
                    batch = todo[0][1]
                    _write_batch(conn, batch.room, batch.changes, batch.expected_head, now_ms)
                    outcomes = [None]
                else:
                    outcomes = [
                        self._w_append_one(conn, b.room, b.changes, b.expected_head, now_ms)
                        for _, b in todo
                    ]
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except _REFUSALS as exc:
            return [_refusal(exc)]
        except sqlite3.Error as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None
            errors = [
                self._fail(f"append transaction of {len(todo)} batches failed", exc) for _ in todo
            ]
            for error in errors:
                error.__cause__ = exc
            self._failed(errors[0], value_bytes)
            return [*errors]
        written = [b for (_, b), outcome in zip(todo, outcomes, strict=True) if outcome is None]
        if written:
            self.commits += 1
            self.inline_commits += 1
            self.appends += len(written)
            if len(written) < len(todo):  # refused batches wrote nothing
                rows = sum(len(b.changes) for b in written)
                value_bytes = sum(_value_bytes(b.changes) for b in written)
            self._committed(value_bytes)
            self._wrote(_pages(rows, value_bytes))
        return outcomes

    def _w_checkpoint(self, report: _Report, _: None = None) -> None:
        """A PASSIVE checkpoint (never waits for readers); failures only mean "later"."""
        conn = self._wconn
        if conn is None:
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            return
        self.checkpoints += 1

    def _w_flush(self, report: _Report, _: None = None) -> None:
        """Commit everything queued so far in transactions of at most ``_GROUP_ROWS`` rows.

        The callers of every transaction but the last are settled at once (the writer
        still has work, so they would not commit inline anyway); the last ones through
        ``report``, after the loop has seen the writer free (see :meth:`_job_done`).
        """
        with self._pending_lock:
            queued, self._pending = self._pending, []
            self._flush_scheduled = False
        start = 0
        while start < len(queued):
            end, rows = start + 1, len(queued[start].changes)
            while end < len(queued) and rows + len(queued[end].changes) <= _GROUP_ROWS:
                rows += len(queued[end].changes)
                end += 1
            outcomes = self._w_commit_group(queued[start:end], report)
            start = end
            if start < len(queued):
                for request, outcome in outcomes:
                    self._notify(request, outcome)
            else:
                report.settle = outcomes

    def _w_commit_group(
        self, group: list[_Append], report: _Report
    ) -> list[tuple[_Append, StoreError | None]]:
        """One transaction for ``group``: each caller's outcome, whatever happens."""
        outcomes: list[StoreError | None]
        conn = self._wconn
        try:
            if conn is None:
                raise StoreError(f"sqlite store {self.path} is not open")
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = [
                    self._w_append_one(conn, r.room, r.changes, r.expected_head, self.now_ms)
                    for r in group
                ]
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # a caller left unsettled would wait forever
            failed: list[tuple[_Append, StoreError | None]] = []
            for request in group:
                error = self._fail(f"append transaction of {len(group)} batches failed", exc)
                error.__cause__ = exc
                failed.append((request, error))
            report.failure = failed[0][1]
            report.failed_bytes = sum(_value_bytes(request.changes) for request in group)
            return failed
        self.commits += 1
        self.appends += sum(1 for outcome in outcomes if outcome is None)
        written = [r for r, outcome in zip(group, outcomes, strict=True) if outcome is None]
        value_bytes = sum(_value_bytes(r.changes) for r in written)
        report.pages += _pages(sum(len(r.changes) for r in written), value_bytes)
        report.committed_bytes = max(report.committed_bytes, value_bytes)
        return list(zip(group, outcomes, strict=True))

    @staticmethod
    def _notify(request: _Append, error: BaseException | None) -> None:
        try:
            request.loop.call_soon_threadsafe(_settle, request.future, error)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            pass

    @staticmethod
    def _w_append_one(
        conn: sqlite3.Connection,
        room: str,
        changes: Sequence[Change],
        expected_head: int,
        now_ms: Callable[[], int],
    ) -> StoreError | None:
        """Write one caller's batch inside a savepoint; return its refusal, if any."""
        conn.execute("SAVEPOINT batch")
        try:
            _write_batch(conn, room, changes, expected_head, now_ms)
        except _REFUSALS as exc:
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            return _refusal(exc)
        conn.execute("RELEASE batch")
        return None

    async def replace_state(
        self, room: str, entries: Sequence[Change], *, expected_head: int
    ) -> int:
        live = [c for c in entries if c.value is not None]
        if len({c.path for c in live}) != len(live):
            raise StoreError(f"replace_state of room {room!r}: a path is given twice")

        def replace_all(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT head FROM rooms WHERE room = ?", (room,)).fetchone()
            head = 0 if row is None else row[0]
            if head != expected_head:
                raise StoreConflict(room, expected_head, head)
            if row is None:
                conn.execute(
                    "INSERT INTO rooms (room, created_ms) VALUES (?, ?)", (room, self.now_ms())
                )
            # Set-based, so a restore that changes a few paths of a big room rewrites only
            # those: the new state goes into a temporary table, paths it lacks are deleted,
            # rows that differ get the next seqs in path order, the rest keep theirs.
            conn.execute(_CREATE_REPLACEMENT)
            conn.execute("DELETE FROM temp.replacement")
            for start in range(0, len(live), _REPLACE_SLICE):  # a bounded parameter list
                params: list[Any] = []
                for c in live[start : start + _REPLACE_SLICE]:
                    params.extend((c.path, _ts_in(c.ts), c.counter, c.actor, c.value))
                _insert_rows(conn, _INSERT_REPLACEMENT, params, 5)
            conn.execute(
                """DELETE FROM entries WHERE room = ?
                   AND path NOT IN (SELECT path FROM temp.replacement)""",
                (room,),
            )
            changed = conn.execute(
                """INSERT OR REPLACE INTO entries (room, path, ts, counter, actor, value, seq)
                   SELECT ?, r.path, r.ts, r.counter, r.actor, r.value,
                          ? + ROW_NUMBER() OVER (ORDER BY r.path)
                   FROM temp.replacement r
                   WHERE NOT EXISTS (
                       SELECT 1 FROM entries e WHERE e.room = ? AND e.path = r.path
                       AND e.ts = r.ts AND e.counter = r.counter AND e.actor = r.actor
                       AND e.value IS r.value)""",
                (room, expected_head, room),
            ).rowcount
            conn.execute("DELETE FROM temp.replacement")
            conn.execute("DELETE FROM oplog WHERE room = ?", (room,))
            conn.execute("DELETE FROM base_entries WHERE room = ?", (room,))
            conn.execute(
                f"""INSERT INTO base_entries (room, {_CHANGE_COLUMNS})
                    SELECT room, {_CHANGE_COLUMNS} FROM entries WHERE room = ?""",
                (room,),
            )
            new_head = expected_head + changed + 1
            conn.execute(
                "UPDATE rooms SET head = ?, compacted_through = ? WHERE room = ?",
                (new_head, new_head, room),
            )
            return new_head

        return await self._write(replace_all, pad_bytes=2 * _value_bytes(live))

    async def changes_since(self, room: str, since: int, *, limit: int) -> list[Change]:
        def since_rows(conn: sqlite3.Connection) -> list[Change]:
            rows = conn.execute(
                f"""SELECT {_CHANGE_COLUMNS} FROM oplog
                    WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?""",
                (room, since, max(limit, 0)),
            ).fetchall()
            return _changes(rows)

        return await self._read(since_rows)

    async def base_snapshot(self, room: str) -> list[Change]:
        def base(conn: sqlite3.Connection) -> list[Change]:
            rows = conn.execute(
                f"SELECT {_CHANGE_COLUMNS} FROM base_entries WHERE room = ? ORDER BY path",
                (room,),
            ).fetchall()
            return _changes(rows)

        return await self._read(base)

    async def compact(self, room: str, through_seq: int) -> int:
        return await self._write(lambda conn: self._w_compact(conn, room, through_seq))

    @staticmethod
    def _w_compact(conn: sqlite3.Connection, room: str, through_seq: int) -> int:
        row = conn.execute(
            "SELECT head, compacted_through FROM rooms WHERE room = ?", (room,)
        ).fetchone()
        if row is None:
            raise StoreError(f"compact of unknown room {room!r}")
        head, compacted = row
        through = min(through_seq, head)
        if through <= compacted:
            return 0
        folded = _changes(
            conn.execute(
                f"SELECT {_CHANGE_COLUMNS} FROM oplog WHERE room = ? AND seq <= ? ORDER BY seq",
                (room, through),
            ).fetchall()
        )
        winners: dict[str, Change] = {}
        merge_into(winners, folded)
        select_base = f"SELECT {_CHANGE_COLUMNS} FROM base_entries WHERE room = ? AND path = ?"
        upserts: list[Any] = []
        deletes: list[tuple[str, str]] = []
        for path, change in winners.items():
            base_row = conn.execute(select_base, (room, path)).fetchone()
            if not wins(change, None if base_row is None else _change(base_row)):
                continue
            if change.value is None:
                # The base is the live state as of ``through``: the tombstone's work is done.
                deletes.append((room, path))
            else:
                upserts.extend(
                    (
                        room,
                        change.seq,
                        path,
                        _ts_in(change.ts),
                        change.counter,
                        change.actor,
                        change.value,
                    )
                )
        conn.executemany("DELETE FROM base_entries WHERE room = ? AND path = ?", deletes)
        _insert_rows(conn, _UPSERT_BASE, upserts)
        removed = conn.execute(
            "DELETE FROM oplog WHERE room = ? AND seq <= ?", (room, through)
        ).rowcount
        conn.execute(
            "DELETE FROM entries WHERE room = ? AND value IS NULL AND seq <= ?", (room, through)
        )
        conn.execute("UPDATE rooms SET compacted_through = ? WHERE room = ?", (through, room))
        return int(removed)

    # -- health -------------------------------------------------------------------------

    @staticmethod
    def _w_probe(conn: sqlite3.Connection, pad: int) -> None:
        # The pad stays until the next probe replaces it (a healthy one with nothing):
        # freeing it at once would write as many pages again, when the disk is tightest.
        conn.execute(
            """INSERT INTO health (id, probes, pad) VALUES (1, 1, zeroblob(?))
               ON CONFLICT (id) DO UPDATE SET probes = probes + 1, pad = excluded.pad""",
            (pad,),
        )

    @staticmethod
    def _r_probe(conn: sqlite3.Connection) -> int | None:
        row = conn.execute("SELECT probes FROM health WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    # -- archives -----------------------------------------------------------------------

    async def put_archive(self, record: ArchiveRecord, chunks: Sequence[bytes]) -> bool:
        check_archive(record, chunks)
        r = record

        def put(conn: sqlite3.Connection) -> bool:
            inserted = conn.execute(
                f"""INSERT INTO archives ({_ARCHIVE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)
                    ON CONFLICT (ref) DO NOTHING""",
                (r.ref, r.room, r.head, r.root, r.count, r.size, r.chunks, r.created_ms, r.parent),
            ).rowcount
            if not inserted:
                return False
            conn.executemany(
                "INSERT INTO archive_chunks (ref, idx, data) VALUES (?, ?, ?)",
                ((r.ref, i, data) for i, data in enumerate(chunks)),
            )
            return True

        return await self._write(put, pad_bytes=record.size)

    async def get_archive(self, ref: str) -> ArchiveRecord | None:
        def get(conn: sqlite3.Connection) -> ArchiveRecord | None:
            row = conn.execute(
                f"SELECT {_ARCHIVE_COLUMNS} FROM archives WHERE ref = ?", (ref,)
            ).fetchone()
            return None if row is None else _archive(row)

        return await self._read(get)

    async def archive_chunk(self, ref: str, index: int) -> bytes:
        def chunk(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT data FROM archive_chunks WHERE ref = ? AND idx = ?", (ref, index)
            ).fetchone()
            return None if row is None else bytes(row[0])

        data = await self._read(chunk)
        if data is None:
            raise StoreError(f"archive {ref} has no chunk {index}")
        return data

    async def list_archives(
        self, room: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[ArchiveRecord], str | None]:
        check_page_limit(limit)
        below = archive_cursor_key(cursor)

        def page(conn: sqlite3.Connection) -> tuple[list[ArchiveRecord], str | None]:
            rows = conn.execute(
                f"""SELECT n, {_ARCHIVE_COLUMNS} FROM archives WHERE room = ? AND n < ?
                    ORDER BY n DESC LIMIT ?""",
                (room, below, limit + 1),
            ).fetchall()
            items = [_archive(row[1:]) for row in rows[:limit]]
            return items, str(rows[limit - 1][0]) if len(rows) > limit else None

        return await self._read(page)

    async def delete_archive(self, ref: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT parent FROM archives WHERE ref = ?", (ref,)).fetchone()
            if row is None:
                return False
            conn.execute("UPDATE archives SET parent = ? WHERE parent = ?", (row[0], ref))
            conn.execute("UPDATE rooms SET lineage_head = ? WHERE lineage_head = ?", (row[0], ref))
            conn.execute("DELETE FROM archive_chunks WHERE ref = ?", (ref,))
            conn.execute("DELETE FROM archives WHERE ref = ?", (ref,))
            return True

        return await self._write(delete)

    async def forks_of(self, ref: str) -> list[str]:
        def forks(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT room FROM rooms WHERE checkpoint = ? ORDER BY room", (ref,)
            ).fetchall()
            return [row[0] for row in rows]

        return await self._read(forks)

    # -- proposals, query specs, settings -----------------------------------------------

    async def put_proposal(self, record: ProposalRecord) -> None:
        r = record
        params = (
            r.proposal, r.room, r.source, r.checkpoint, r.state, encode_pack(r.changes),
            r.created_ms, json.dumps(list(r.conflicts)), r.resolve, r.validated_head,
        )  # fmt: skip

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO proposals ({_PROPOSAL_COLUMNS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                params,
            )

        await self._write(put, pad_bytes=len(params[5]))

    async def get_proposal(self, proposal: str) -> ProposalRecord | None:
        def get(conn: sqlite3.Connection) -> ProposalRecord | None:
            row = conn.execute(
                f"SELECT {_PROPOSAL_COLUMNS} FROM proposals WHERE proposal = ?", (proposal,)
            ).fetchone()
            return None if row is None else _proposal(row)

        return await self._read(get)

    async def put_query(self, name: str, spec: dict[str, object]) -> bool:
        text = _json_text(spec, f"query {name!r}")

        def put(conn: sqlite3.Connection) -> bool:
            known = conn.execute("SELECT 1 FROM query_specs WHERE name = ?", (name,)).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO query_specs (name, spec) VALUES (?, ?)", (name, text)
            )
            return known is None

        return await self._write(put)

    async def get_query(self, name: str) -> dict[str, object] | None:
        def get(conn: sqlite3.Connection) -> dict[str, object] | None:
            row = conn.execute("SELECT spec FROM query_specs WHERE name = ?", (name,)).fetchone()
            return None if row is None else dict(json.loads(row[0]))

        return await self._read(get)

    async def list_queries(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[tuple[str, dict[str, object]]], str | None]:
        check_page_limit(limit)

        def page(
            conn: sqlite3.Connection,
        ) -> tuple[list[tuple[str, dict[str, object]]], str | None]:
            rows = conn.execute(
                "SELECT name, spec FROM query_specs WHERE name > ? ORDER BY name LIMIT ?",
                ("" if cursor is None else cursor, limit + 1),
            ).fetchall()
            items = [(name, dict(json.loads(spec))) for name, spec in rows[:limit]]
            return items, items[-1][0] if len(rows) > limit else None

        return await self._read(page)

    async def delete_query(self, name: str) -> bool:
        return await self._write(
            lambda conn: (
                conn.execute("DELETE FROM query_specs WHERE name = ?", (name,)).rowcount > 0
            )
        )

    async def run_query(
        self,
        room: str,
        spec: QuerySpec,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, object]], str | None]:
        """Pushed down into SQLite's JSON functions (:mod:`.sqlite_query`), one read
        transaction on the reader thread."""

        def query(conn: sqlite3.Connection) -> tuple[list[dict[str, object]], str | None]:
            rows, next_cursor, self.last_query = sqlite_query.run(
                conn, room, spec, limit=limit, cursor=cursor
            )
            return rows, next_cursor

        return await self._read(query)

    async def get_setting(self, key: str) -> dict[str, object] | None:
        def get(conn: sqlite3.Connection) -> dict[str, object] | None:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            return None if row is None else dict(json.loads(row[0]))

        return await self._read(get)

    async def put_setting(self, key: str, value: dict[str, object]) -> None:
        text = _json_text(value, f"setting {key!r}")
        await self._write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, text)
            )
        )

    # -- node registry -----------------------------------------------------------------

    async def beat(self, node: str, info: dict[str, object], *, now_ms: int) -> None:
        text = _json_text(info, f"node {node!r}")
        await self._write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO nodes (node, beat_ms, info) VALUES (?, ?, ?)",
                (node, now_ms, text),
            )
        )

    async def list_nodes(self) -> list[NodeBeat]:
        def get(conn: sqlite3.Connection) -> list[NodeBeat]:
            rows = conn.execute("SELECT node, beat_ms, info FROM nodes ORDER BY node")
            return [NodeBeat(n, int(ms), dict(json.loads(info))) for n, ms, info in rows]

        return await self._read(get)

    async def forget_node(self, node: str) -> bool:
        def forget(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM nodes WHERE node = ?", (node,)).rowcount > 0

        return await self._write(forget)

    # -- webhook outbox (storage/webhooks.py) ----------------------------------------------

    async def add_webhooks(self, deliveries: Sequence[WebhookDelivery]) -> None:
        if not deliveries:
            return
        rows = [
            (d.key, d.id, d.room, d.event, d.url, d.body, d.created_ms, d.next_ms, d.attempts)
            for d in deliveries
        ]

        def add(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO webhook_outbox (key, id, room, event, url, body, "
                "created_ms, next_ms, attempts) VALUES (?,?,?,?,?,?,?,?,?)",
                rows,
            )

        await self._write(add, pad_bytes=sum(len(d.body) for d in deliveries))

    async def claim_webhooks(
        self, *, node: str, now_ms: int, lease_ms: int, limit: int
    ) -> list[WebhookDelivery]:
        def claim(conn: sqlite3.Connection) -> list[WebhookDelivery]:
            rows = conn.execute(
                f"UPDATE webhook_outbox SET lease_node = ?, lease_until = ? WHERE n IN ("
                "SELECT n FROM webhook_outbox WHERE next_ms <= ? AND "
                "(lease_node IS NULL OR lease_until <= ?) ORDER BY next_ms, n LIMIT ?) "
                f"RETURNING n, {_WEBHOOK_COLUMNS}",
                (node, now_ms + lease_ms, now_ms, now_ms, max(0, limit)),
            ).fetchall()
            rows.sort(key=lambda r: (r[8], r[0]))  # RETURNING keeps no order
            return [WebhookDelivery(*r[1:]) for r in rows]

        return await self._write(claim)

    async def settle_webhook(
        self,
        key: str,
        *,
        retry_at_ms: int | None = None,
        error: str = "",
        result: WebhookResult | None = None,
    ) -> None:
        def settle(conn: sqlite3.Connection) -> None:
            if result is not None:
                gone = conn.execute("DELETE FROM webhook_outbox WHERE key = ?", (key,)).rowcount
                if not gone:
                    return
                r = result
                conn.execute(
                    "INSERT INTO webhook_log (room, id, event, url, outcome, status, attempts, "
                    "at_ms, error) VALUES (?,?,?,?,?,?,?,?,?)",
                    (r.room, r.id, r.event, r.url, r.outcome, r.status, r.attempts, r.at_ms,
                     r.error),
                )  # fmt: skip
                conn.execute(
                    "DELETE FROM webhook_log WHERE room = ? AND n NOT IN (SELECT n FROM "
                    "webhook_log WHERE room = ? ORDER BY n DESC LIMIT ?)",
                    (r.room, r.room, WEBHOOK_LOG_KEEP),
                )
            elif retry_at_ms is not None:
                conn.execute(
                    "UPDATE webhook_outbox SET attempts = attempts + 1, next_ms = ?, "
                    "last_error = ?, lease_node = NULL, lease_until = 0 WHERE key = ?",
                    (retry_at_ms, error, key),
                )

        await self._write(settle)

    async def pending_webhooks(self) -> int:
        def count(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT count(*) FROM webhook_outbox").fetchone()[0])

        return await self._read(count)

    async def webhook_log(self, room: str, *, limit: int = WEBHOOK_LOG_KEEP) -> list[WebhookResult]:
        def read(conn: sqlite3.Connection) -> list[WebhookResult]:
            rows = conn.execute(
                "SELECT id, room, event, url, outcome, status, attempts, at_ms, error FROM "
                "webhook_log WHERE room = ? ORDER BY n DESC LIMIT ?",
                (room, max(0, limit)),
            ).fetchall()
            return [WebhookResult(*row) for row in rows]

        return await self._read(read)
