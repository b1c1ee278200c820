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

Group commit: :meth:`SqliteStore.append` queues its batch and wakes the writer. The writer
takes *everything* queued when it starts (in transactions of at most ``_GROUP_ROWS`` rows),
so appends that arrive while a commit is running share the next one. Each batch runs
inside its own SAVEPOINT: a batch the store refuses (unknown room, seq not continuing the
room's head) fails alone, while a failing transaction (disk full, database locked past
``busy_timeout``) fails every caller in it. A caller's awaitable resolves only after the
COMMIT that carries its rows; batches of one room are applied in call order.

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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from ..core.entries import Change
from ..core.merge import merge_into, wins
from .base import LoadedRoom, RoomRecord, StoreError

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
# WAL pages written, estimated as rows + 4 per commit (the op-log, entries and rooms
# leaves plus their index pages), between two PASSIVE checkpoints; SQLite's own automatic
# checkpoint also runs every 1000 pages.
_CHECKPOINT_PAGES: Final = 1000
_PAGES_PER_COMMIT: Final = 4
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
)

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


def _bulk_sql(head: str) -> dict[int, str]:
    row = "(" + ", ".join("?" * _ROW_WIDTH) + ")"
    return {n: f"{head} VALUES {', '.join([row] * n)}" for n in _CHUNK_SIZES}


# One flat parameter list per batch serves every table:
# (room, seq, path, ts, counter, actor, value) per change.
_COLUMNS_IN = "(room, seq, path, ts, counter, actor, value)"
_INSERT_OPLOG: Final = _bulk_sql(f"INSERT INTO oplog {_COLUMNS_IN}")
_UPSERT_ENTRY: Final = _bulk_sql(f"INSERT OR REPLACE INTO entries {_COLUMNS_IN}")
_UPSERT_BASE: Final = _bulk_sql(f"INSERT OR REPLACE INTO base_entries {_COLUMNS_IN}")


def _insert_rows(conn: sqlite3.Connection, sql: dict[int, str], params: list[Any]) -> None:
    """Insert the rows of flat ``params`` in order (later rows replace earlier ones)."""
    nrows = len(params) // _ROW_WIDTH
    done = 0
    for size in _CHUNK_SIZES:
        while nrows - done >= size:
            conn.execute(sql[size], params[done * _ROW_WIDTH : (done + size) * _ROW_WIDTH])
            done += size


_ROOM_COLUMNS = "room, created_ms, locked, closed, head, compacted_through, policy"
_CHANGE_COLUMNS = "path, ts, counter, actor, value, seq"

_Row = tuple[Any, ...]


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
    room, created_ms, locked, closed, head, compacted_through, policy = row
    return RoomRecord(
        room=room,
        created_ms=created_ms,
        locked=bool(locked),
        closed=bool(closed),
        head=head,
        compacted_through=compacted_through,
        policy=json.loads(policy),
    )


class _Refused(Exception):
    """A batch the store will not write; only its own caller fails."""


# What refuses one batch (its caller alone fails): our own checks, a constraint, a
# value SQLite cannot store.
_REFUSALS = (_Refused, sqlite3.IntegrityError, OverflowError)


def _refusal(exc: BaseException) -> StoreError:
    error = StoreError(str(exc) if isinstance(exc, _Refused) else f"append refused: {exc}")
    error.__cause__ = exc
    return error


class _Busy(StoreError):
    """An inline commit found the write lock taken (by another process): use the thread."""


def _write_batch(conn: sqlite3.Connection, room: str, changes: Sequence[Change]) -> None:
    """The op-log rows, the entries and the head of one batch, inside the caller's
    transaction; raises :class:`_Refused` when the seqs do not continue the room's head."""
    row = conn.execute("SELECT head FROM rooms WHERE room = ?", (room,)).fetchone()
    if row is None:
        raise _Refused(f"append to unknown room {room!r}")
    expected = row[0] + 1
    params: list[Any] = []
    extend = params.extend
    for change in changes:
        if change.seq != expected:
            raise _Refused(
                f"append to room {room!r}: expected seq {expected}, got {change.seq} "
                f"(seqs must continue the op log without gaps)"
            )
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
    conn.execute("UPDATE rooms SET head = ? WHERE room = ?", (expected - 1, room))


@dataclass(slots=True)
class _Append:
    room: str
    changes: Sequence[Change]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


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
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5000,
        cache_kib: int = 16384,
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
        self.commits = 0
        self.appends = 0
        self.inline_commits = 0
        self.checkpoints = 0
        self.migrations_applied: list[int] = []
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
        self._uncheckpointed = 0

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
        await self._write(self._w_probe)
        probes = await self._read(self._r_probe)
        if probes is None:
            raise StoreError(f"sqlite store {self.path}: health probe row missing after write")

    # -- thread plumbing ----------------------------------------------------------------

    def _executors(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        if not self._open or self._closing or self._writer is None or self._reader is None:
            raise StoreError(f"sqlite store {self.path} is not open")
        return self._writer, self._reader

    async def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction on the writer thread."""
        writer, _ = self._executors()
        loop = asyncio.get_running_loop()
        self._thread_jobs += 1
        return await loop.run_in_executor(writer, self._w_job, loop, self._w_txn, fn)

    def _w_job(self, loop: asyncio.AbstractEventLoop, job: Callable[[_A], _T], arg: _A) -> _T:
        """Run a writer-thread job; tell the loop when the connection is free again."""
        try:
            self._w_busy_timeout(self.busy_timeout_ms)
            return job(arg)
        finally:
            try:
                loop.call_soon_threadsafe(self._job_done)
            except RuntimeError:  # the loop is closed: nobody will commit inline any more
                pass

    def _job_done(self) -> None:
        self._thread_jobs -= 1

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
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
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

    def _w_txn(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._wconn
        if conn is None:
            raise StoreError(f"sqlite store {self.path} is not open")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail("write failed", exc) from exc
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
        params = (record.room, record.created_ms, int(record.locked), int(record.closed), policy)

        def put(conn: sqlite3.Connection) -> None:
            # An upsert, not INSERT OR REPLACE: replacing would cascade-delete the state.
            conn.execute(
                """INSERT INTO rooms (room, created_ms, locked, closed, policy)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (room) DO UPDATE SET created_ms = excluded.created_ms,
                       locked = excluded.locked, closed = excluded.closed,
                       policy = excluded.policy""",
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

    async def delete_room(self, room: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            for table in ("oplog", "entries", "base_entries", "blob_refs"):
                conn.execute(f"DELETE FROM {table} WHERE room = ?", (room,))
            return conn.execute("DELETE FROM rooms WHERE room = ?", (room,)).rowcount > 0

        return await self._write(delete)

    async def add_blob_ref(self, room: str, hash: str, size: int, *, now_ms: int) -> None:
        def add(conn: sqlite3.Connection) -> None:
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

    async def blob_refs(self) -> set[str]:
        def refs(conn: sqlite3.Connection) -> set[str]:
            return {row[0] for row in conn.execute("SELECT DISTINCT hash FROM blob_refs")}

        return await self._read(refs)

    async def load_room(self, room: str, *, now_ms: int) -> LoadedRoom:
        loaded = await self._read(lambda conn: self._r_load(conn, room))
        if loaded is not None:
            return loaded

        def create(conn: sqlite3.Connection) -> None:
            conn.execute(
                """INSERT INTO rooms (room, created_ms) VALUES (?, ?)
                   ON CONFLICT (room) DO NOTHING""",
                (room, now_ms),
            )

        await self._write(create)
        loaded = await self._read(lambda conn: self._r_load(conn, room))
        if loaded is None:  # deleted between our write and read: report, don't loop
            raise StoreError(f"room {room!r} was deleted while it was being loaded")
        return loaded

    def _r_load(self, conn: sqlite3.Connection, room: str) -> LoadedRoom | None:
        record = self._r_room(conn, room)
        if record is None:
            return None
        rows = conn.execute(
            f"SELECT {_CHANGE_COLUMNS} FROM entries WHERE room = ? ORDER BY path", (room,)
        ).fetchall()
        return LoadedRoom(record=record, entries=_changes(rows))

    # -- op log -------------------------------------------------------------------------

    async def append(self, room: str, changes: Sequence[Change]) -> None:
        if not changes:
            return
        writer, _ = self._executors()
        if (
            self._inline
            and self._thread_jobs == 0
            and len(changes) <= _INLINE_ROWS
            and sum(len(c.value or b"") for c in changes) <= _INLINE_BYTES
        ):
            error = self._commit_inline(room, changes)
            if error is None:
                return
            if not isinstance(error, _Busy):
                raise error
            # another process holds the write lock: the writer thread waits for it
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._pending_lock:
            # A tuple: the writer thread reads the batch later, the caller may reuse its list.
            self._pending.append(_Append(room, tuple(changes), loop, future))
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if schedule:
            self._thread_jobs += 1
            writer.submit(self._w_job, loop, self._w_flush, None)
        await future

    def _commit_inline(self, room: str, changes: Sequence[Change]) -> StoreError | None:
        """Commit one small batch on the calling (loop) thread; its refusal or failure."""
        conn = self._wconn
        if conn is None:
            return StoreError(f"sqlite store {self.path} is not open")
        try:
            self._w_busy_timeout(0)
            conn.execute("BEGIN IMMEDIATE")
            try:
                _write_batch(conn, room, changes)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except _REFUSALS as exc:
            return _refusal(exc)
        except sqlite3.Error as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return _Busy(str(exc))
            error = self._fail("append failed", exc)
            error.__cause__ = exc
            return error
        self.commits += 1
        self.inline_commits += 1
        self.appends += 1
        self._uncheckpointed += len(changes) + _PAGES_PER_COMMIT
        if self._uncheckpointed >= _CHECKPOINT_PAGES:
            self._uncheckpointed = 0
            self._thread_jobs += 1
            writer, _ = self._executors()
            writer.submit(self._w_job, asyncio.get_running_loop(), self._w_checkpoint, None)
        return None

    def _w_checkpoint(self, _: None = None) -> None:
        """A PASSIVE checkpoint (never waits for readers); failures only mean "later"."""
        conn = self._wconn
        if conn is None:
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            return
        self.checkpoints += 1

    def _w_flush(self, _: None = None) -> None:
        """Commit everything queued so far, then settle each caller."""
        with self._pending_lock:
            queued, self._pending = self._pending, []
            self._flush_scheduled = False
        start = 0
        while start < len(queued):
            end, rows = start + 1, len(queued[start].changes)
            while end < len(queued) and rows + len(queued[end].changes) <= _GROUP_ROWS:
                rows += len(queued[end].changes)
                end += 1
            self._w_commit_group(queued[start:end])
            self._uncheckpointed += rows + _PAGES_PER_COMMIT
            start = end
        if self._uncheckpointed >= _CHECKPOINT_PAGES:
            self._uncheckpointed = 0
            self._w_checkpoint()

    def _w_commit_group(self, group: list[_Append]) -> None:
        """One transaction for ``group``; every caller is settled whatever happens."""
        outcomes: list[StoreError | None]
        conn = self._wconn
        try:
            if conn is None:
                raise StoreError(f"sqlite store {self.path} is not open")
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = [self._w_append_one(conn, request) for request in group]
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # a caller left unsettled would wait forever
            for request in group:
                error = self._fail(f"append transaction of {len(group)} batches failed", exc)
                error.__cause__ = exc
                self._notify(request, error)
            return
        self.commits += 1
        self.appends += sum(1 for outcome in outcomes if outcome is None)
        for request, outcome in zip(group, outcomes, strict=True):
            self._notify(request, outcome)

    @staticmethod
    def _notify(request: _Append, error: BaseException | None) -> None:
        try:
            request.loop.call_soon_threadsafe(_settle, request.future, error)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            pass

    @staticmethod
    def _w_append_one(conn: sqlite3.Connection, request: _Append) -> StoreError | None:
        """Write one caller's batch inside a savepoint; return its refusal, if any."""
        conn.execute("SAVEPOINT batch")
        try:
            _write_batch(conn, request.room, request.changes)
        except _REFUSALS as exc:
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            return _refusal(exc)
        conn.execute("RELEASE batch")
        return None

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
    def _w_probe(conn: sqlite3.Connection) -> None:
        conn.execute(
            """INSERT INTO health (id, probes) VALUES (1, 1)
               ON CONFLICT (id) DO UPDATE SET probes = probes + 1"""
        )

    @staticmethod
    def _r_probe(conn: sqlite3.Connection) -> int | None:
        row = conn.execute("SELECT probes FROM health WHERE id = 1").fetchone()
        return None if row is None else int(row[0])
