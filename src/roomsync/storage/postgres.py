"""The store several nodes share: PostgreSQL through an asyncpg connection pool (SPEC §8).

Connections and tasks::

    append() / append_batches() ──▶ pending list ──▶ committer task ──▶ one pool connection
    reads, room writes, compaction ──────────────────────────────────▶ any pool connection

**Fencing across nodes.** Every batch is one statement that moves ``rooms.head`` with a
conditional write — ``UPDATE rooms SET head = new WHERE room = $1 AND head = expected``
(for ``expected`` 0 an ``INSERT .. ON CONFLICT DO UPDATE .. WHERE head = 0``, which also
creates a room never written) — and inserts the op-log rows and the entries only ``WHERE
EXISTS`` that write (data-modifying CTEs). PostgreSQL locks the room row from that write
to the COMMIT, and a concurrent writer that waited for the lock re-checks ``head`` on the
committed row (READ COMMITTED re-evaluates the WHERE clause), so of two writers with the
same expected head, on any nodes, exactly one writes and the other finds nothing to
update: :class:`~roomsync.storage.base.StoreConflict`. Per-room seqs stay gap-free and
increasing whatever the number of processes and pools.

**Group commit and order.** Appends of this process are queued; one committer task takes
everything queued when it starts (at most ``_GROUP_ROWS`` rows per transaction) and
commits it in one transaction, so batches of one room are applied in call order and
concurrent appends share a commit (``commits`` counts them; a group of one batch is its
single statement, committed on its own without BEGIN/COMMIT round trips). A refused
batch (fence, bad seqs) writes nothing and fails alone, without a savepoint (its
statement writes nothing); should a statement fail in the database (a constraint), the
group is retried with one SAVEPOINT per batch so that only that batch fails. A caller's
append returns only after the COMMIT that carried its rows. When the connection is lost
(a database restart, a connection lost before the COMMIT's answer) the group is tried
once more on a fresh connection: the fence makes that safe, and a batch that had
committed meets its own head and is recognised by its rows in the op log; a second
failure is a :class:`StoreError`. ``append_batches_now`` always answers None: nothing
commits without a round trip.

**Query images.** Entries carry the ``jsonb`` image :mod:`.postgres_query` computes for
the query push-down (``kind`` and ``doc``), written with them.

**Migrations.** :data:`MIGRATIONS` are numbered; :meth:`PostgresStore.open` applies the
missing ones in one transaction under an advisory lock and records each in
``schema_version``, so nodes starting together never apply a step twice.

Text keys (rooms, paths, hashes, names) are ``COLLATE "C"``: listings and query orders
are code-point orders, as in the other stores. HLC ``ts`` is a u64 stored in a signed
``bigint``, wrapped to negative above ``2**63 - 1`` and unwrapped on read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

# asyncpg ships no type information (no py.typed).
import asyncpg  # type: ignore[import-untyped]

from ..core.entries import Change
from ..core.merge import merge_into, wins
from ..core.postcard import decode_pack, encode_pack
from ..core.query import QuerySpec
from ..redaction import redact_dsn
from . import postgres_query
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

__all__ = ["MIGRATIONS", "Migration", "PostgresStore"]

_I64_MAX: Final = (1 << 63) - 1
_U64_SPAN: Final = 1 << 64
_GROUP_ROWS: Final = 16384
# Any constant: the advisory lock every opener takes while it migrates.
_MIGRATION_LOCK: Final = 0x726F6F6D73796E63  # "roomsync"


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step; ``statements`` run in order inside one transaction."""

    version: int
    name: str
    statements: tuple[str, ...]


_C = 'COLLATE "C"'

# Append only: a released migration is never edited, a change is a new number.
MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "rooms, state entries with query images, op log, base, blob references, "
        "revocations, archives, proposals, query specs, settings, health probe",
        (
            f"""CREATE TABLE rooms (
                room text {_C} PRIMARY KEY,
                created_ms bigint NOT NULL,
                locked boolean NOT NULL DEFAULT false,
                closed boolean NOT NULL DEFAULT false,
                head bigint NOT NULL DEFAULT 0,
                compacted_through bigint NOT NULL DEFAULT 0,
                policy text NOT NULL DEFAULT '{{}}',
                lineage_head text,
                source text,
                checkpoint text,
                node text,
                tick_n bigint NOT NULL DEFAULT 0,
                tick_interval_ms bigint NOT NULL DEFAULT 0,
                tick_at_ms bigint NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX rooms_checkpoint ON rooms (checkpoint) WHERE checkpoint IS NOT NULL",
            "CREATE INDEX rooms_ticking ON rooms (room) WHERE tick_interval_ms > 0",
            # value NULL = tombstone; seq = the op-log row that last changed the path;
            # kind/doc: the query image (storage/postgres_query.py).
            f"""CREATE TABLE entries (
                room text {_C} NOT NULL,
                path text {_C} NOT NULL,
                ts bigint NOT NULL,
                counter bigint NOT NULL,
                actor text NOT NULL,
                value bytea,
                seq bigint NOT NULL,
                kind smallint NOT NULL,
                doc jsonb,
                PRIMARY KEY (room, path)
            )""",
            f"""CREATE TABLE oplog (
                room text {_C} NOT NULL,
                seq bigint NOT NULL,
                path text {_C} NOT NULL,
                ts bigint NOT NULL,
                counter bigint NOT NULL,
                actor text NOT NULL,
                value bytea,
                PRIMARY KEY (room, seq)
            )""",
            f"""CREATE TABLE base_entries (
                room text {_C} NOT NULL,
                path text {_C} NOT NULL,
                ts bigint NOT NULL,
                counter bigint NOT NULL,
                actor text NOT NULL,
                value bytea,
                seq bigint NOT NULL,
                PRIMARY KEY (room, path)
            )""",
            f"""CREATE TABLE blob_refs (
                room text {_C} NOT NULL,
                hash text {_C} NOT NULL,
                size bigint NOT NULL,
                created_ms bigint NOT NULL,
                PRIMARY KEY (room, hash)
            )""",
            "CREATE INDEX blob_refs_hash ON blob_refs (hash)",
            f"""CREATE TABLE revocations (
                kind text {_C} NOT NULL CHECK (kind IN ('sub', 'jti')),
                value text {_C} NOT NULL,
                created_ms bigint NOT NULL,
                expires_ms bigint,
                PRIMARY KEY (kind, value)
            )""",
            # Not tied to rooms: an archive outlives its room. n orders listings.
            f"""CREATE TABLE archives (
                n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                ref text {_C} NOT NULL UNIQUE,
                room text {_C} NOT NULL,
                head bigint NOT NULL,
                root text NOT NULL,
                count bigint NOT NULL,
                size bigint NOT NULL,
                chunks bigint NOT NULL,
                created_ms bigint NOT NULL,
                parent text
            )""",
            "CREATE INDEX archives_room ON archives (room, n)",
            "CREATE INDEX archives_parent ON archives (parent) WHERE parent IS NOT NULL",
            f"""CREATE TABLE archive_chunks (
                ref text {_C} NOT NULL,
                idx bigint NOT NULL,
                data bytea NOT NULL,
                PRIMARY KEY (ref, idx)
            )""",
            f"""CREATE TABLE proposals (
                proposal text {_C} PRIMARY KEY,
                room text NOT NULL,
                source text NOT NULL,
                checkpoint text NOT NULL,
                state text NOT NULL,
                changes bytea NOT NULL,
                created_ms bigint NOT NULL,
                conflicts text NOT NULL DEFAULT '[]',
                resolve text,
                validated_head bigint
            )""",
            f"CREATE TABLE query_specs (name text {_C} PRIMARY KEY, spec text NOT NULL)",
            f"CREATE TABLE settings (key text {_C} PRIMARY KEY, value text NOT NULL)",
            "CREATE TABLE health (id integer PRIMARY KEY, probes bigint NOT NULL)",
        ),
    ),
    Migration(
        2,
        "webhook outbox and delivery log (storage/webhooks.py)",
        (
            # n orders claims after next_ms (insertion order among equally due rows).
            f"""CREATE TABLE webhook_outbox (
                n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                key text {_C} NOT NULL UNIQUE,
                id text NOT NULL,
                room text NOT NULL,
                event text NOT NULL,
                url text NOT NULL,
                body text NOT NULL,
                created_ms bigint NOT NULL,
                next_ms bigint NOT NULL,
                attempts bigint NOT NULL DEFAULT 0,
                last_error text NOT NULL DEFAULT '',
                lease_node text,
                lease_until bigint NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX webhook_outbox_due ON webhook_outbox (next_ms, n)",
            f"""CREATE TABLE webhook_log (
                n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                room text {_C} NOT NULL,
                id text NOT NULL,
                event text NOT NULL,
                url text NOT NULL,
                outcome text NOT NULL,
                status integer,
                attempts bigint NOT NULL,
                at_ms bigint NOT NULL,
                error text NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX webhook_log_room ON webhook_log (room, n)",
        ),
    ),
    Migration(
        3,
        "node registry (topology, heartbeats)",
        (
            f"""CREATE TABLE nodes (
                node text {_C} PRIMARY KEY,
                beat_ms bigint NOT NULL,
                info text NOT NULL
            )""",
        ),
    ),
)

_CREATE_VERSIONS = """CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_ms bigint NOT NULL
)"""

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
_WEBHOOK_COLUMNS = "key, id, room, event, url, body, created_ms, next_ms, attempts, last_error"

# One statement per batch: the fence, then the op log and the entries only if it moved.
_ROWS = """
    log AS (
        INSERT INTO oplog (room, seq, path, ts, counter, actor, value)
        SELECT $1, u.s, u.p, u.t, u.c, u.a, u.v
        FROM unnest($4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::text[],
                    $9::bytea[]) AS u(s, p, t, c, a, v)
        WHERE EXISTS (SELECT 1 FROM fence)
    ),
    state AS (
        INSERT INTO entries AS e (room, path, ts, counter, actor, value, seq, kind, doc)
        SELECT $1, u.p, u.t, u.c, u.a, u.v, u.s, u.k, u.d
        FROM unnest($10::text[], $11::bigint[], $12::bigint[], $13::text[], $14::bytea[],
                    $15::bigint[], $16::smallint[], $17::jsonb[]) AS u(p, t, c, a, v, s, k, d)
        WHERE EXISTS (SELECT 1 FROM fence)
        ON CONFLICT (room, path) DO UPDATE SET ts = excluded.ts, counter = excluded.counter,
            actor = excluded.actor, value = excluded.value, seq = excluded.seq,
            kind = excluded.kind, doc = excluded.doc
    )
    SELECT count(*) FROM fence"""
_APPEND = (
    "WITH fence AS (UPDATE rooms SET head = $3 WHERE room = $1 AND head = $2 RETURNING 1)," + _ROWS
)
_APPEND_FIRST = (
    "WITH fence AS (INSERT INTO rooms AS r (room, created_ms, head) VALUES ($1, $18, $3) "
    "ON CONFLICT (room) DO UPDATE SET head = excluded.head WHERE r.head = $2 RETURNING 1)," + _ROWS
)

_Row = Any
# What a failed query or a lost connection raises (TimeoutError: command_timeout).
_DB_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
# What says the connection, not the statement, failed (the outcome may be unknown).
_LOST: Final = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    OSError,
)


def _ts_in(ts: int) -> int:
    return ts if ts <= _I64_MAX else ts - _U64_SPAN


def _change(row: _Row) -> Change:
    path, ts, counter, actor, value, seq = row
    return Change(path, ts if ts >= 0 else ts + _U64_SPAN, counter, actor, value, seq)


def _record(row: _Row) -> RoomRecord:
    return RoomRecord(
        room=row[0],
        created_ms=row[1],
        locked=row[2],
        closed=row[3],
        head=row[4],
        compacted_through=row[5],
        policy=json.loads(row[6]),
        lineage_head=row[7],
        source=row[8],
        checkpoint=row[9],
        node=row[10],
        tick_n=row[11],
        tick_interval_ms=row[12],
        tick_at_ms=row[13],
    )


def _archive(row: _Row) -> ArchiveRecord:
    ref, room, head, root, count, size, chunks, created_ms, parent = tuple(row)
    return ArchiveRecord(ref, room, head, root, count, size, chunks, created_ms, parent)


def _proposal(row: _Row) -> ProposalRecord:
    return ProposalRecord(
        proposal=row[0],
        room=row[1],
        source=row[2],
        checkpoint=row[3],
        state=row[4],
        changes=tuple(decode_pack(bytes(row[5]))),
        created_ms=row[6],
        conflicts=tuple(json.loads(row[7])),
        resolve=row[8],
        validated_head=row[9],
    )


def _revocation(row: _Row) -> Revocation:
    kind, value, created_ms, expires_ms = tuple(row)
    return Revocation(kind, value, created_ms, expires_ms)


def _json_text(value: dict[str, object], what: str) -> str:
    return json.dumps(json_copy(value, what=what), sort_keys=True, separators=(",", ":"))


def _storable_text(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_storable(room: str, changes: Sequence[Change]) -> None:
    """Refuse (:class:`StoreError`) what PostgreSQL cannot hold, before it is sent: a
    text with NUL or a lone surrogate, a ``ts`` beyond u64, a ``counter`` beyond i64."""
    if not _storable_text(room):
        raise StoreError(f"append refused: room id {room!r} cannot be stored")
    for c in changes:
        if not (_storable_text(c.path) and _storable_text(c.actor)):
            raise StoreError(f"append refused: path or actor of {c.path!r} cannot be stored")
        if not 0 <= c.ts < _U64_SPAN or not 0 <= c.counter <= _I64_MAX:
            raise StoreError(f"append refused: ts or counter of {c.path!r} out of range")


def _batch_params(
    room: str, changes: Sequence[Change], expected_head: int, now_ms: int, images: bool
) -> list[object]:
    """The parameters of ``_APPEND`` / ``_APPEND_FIRST`` for one checked batch."""
    # The entries: the last change of each path (the batch's winner of that path).
    last = list({c.path: c for c in changes}.values())
    kinds, docs = zip(*(_image(c.value, images) for c in last), strict=True)
    params: list[object] = [
        room,
        expected_head,
        expected_head + len(changes),
        [c.seq for c in changes],
        [c.path for c in changes],
        [_ts_in(c.ts) for c in changes],
        [c.counter for c in changes],
        [c.actor for c in changes],
        [c.value for c in changes],
        [c.path for c in last],
        [_ts_in(c.ts) for c in last],
        [c.counter for c in last],
        [c.actor for c in last],
        [c.value for c in last],
        [c.seq for c in last],
        list(kinds),
        list(docs),
    ]
    if expected_head == 0:
        params.append(now_ms)
    return params


def _image(value: bytes | None, images: bool) -> tuple[int, str | None]:
    if value is None:
        return postgres_query.KIND_NOT_JSON, None
    if not images:  # no push-down on this database: the core decides every value
        return postgres_query.KIND_CORE, None
    return postgres_query.image(value)


@dataclass(slots=True)
class _Pending:
    batches: list[AppendBatch]
    future: asyncio.Future[list[AppendOutcome]]


class _Fatal(Exception):
    """A statement failed inside the group's transaction (the database refused it)."""


class PostgresStore:
    """A :class:`~roomsync.storage.base.Store` in a PostgreSQL database (asyncpg pool).

    ``dsn`` is a ``postgresql://`` connection string; ``min_size``/``max_size`` bound the
    pool. ``commits`` counts committed append transactions and ``appends`` the batches
    they carried. ``migrations_applied`` lists the versions the last :meth:`open` applied.
    ``now_ms`` stamps ``created_ms`` of the rooms that ``append`` creates. Use one store
    from one event loop.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout_s: float = 30.0,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        if not 1 <= min_size <= max_size:
            raise ValueError("need 1 <= min_size <= max_size")
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self.command_timeout_s = command_timeout_s
        self.now_ms = now_ms
        self.commits = 0
        self.appends = 0
        self.migrations_applied: list[int] = []
        #: What the last :meth:`run_query` did (SQL candidates, rows left to Python).
        self.last_query: postgres_query.QueryStats | None = None
        self._pool: Any = None
        self._open_lock = asyncio.Lock()
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        self._pushdown = True
        self._write_failure: StoreError | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({redact_dsn(self.dsn)!r})"

    def _fail(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"postgres store {redact_dsn(self.dsn)}: {what}: {exc}")

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        async with self._open_lock:
            if self._pool is not None:
                return
            try:
                pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    command_timeout=self.command_timeout_s,
                    timeout=self.command_timeout_s,  # connecting, too
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
                raise self._fail("cannot connect", exc) from exc
            try:
                async with pool.acquire() as conn:
                    encoding = await conn.fetchval("SHOW server_encoding")
                    self.migrations_applied = await self._migrate(conn)
            except BaseException as exc:
                await pool.close()
                if isinstance(exc, asyncpg.PostgresError | OSError | asyncpg.InterfaceError):
                    raise self._fail("cannot open", exc) from exc
                raise
            self._pushdown = str(encoding).upper() in ("UTF8", "UTF-8")
            self._pool = pool
            self._closing = False
            self._committer = asyncio.get_running_loop().create_task(self._commit_loop())

    @staticmethod
    async def _migrate(conn: Any) -> list[int]:
        applied: list[int] = []
        async with conn.transaction():
            # Concurrent openers (nodes starting together) take turns here.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(_CREATE_VERSIONS)
            done = {row[0] for row in await conn.fetch("SELECT version FROM schema_version")}
            for migration in MIGRATIONS:
                if migration.version in done:
                    continue
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_version (version, name, applied_ms) VALUES ($1, $2, "
                    "(extract(epoch from clock_timestamp()) * 1000)::bigint)",
                    migration.version,
                    migration.name,
                )
                applied.append(migration.version)
        return applied

    async def close(self) -> None:
        async with self._open_lock:
            if self._pool is None:
                return
            self._closing = True  # new appends are refused from here on
            self._wake.set()
            if self._committer is not None:
                await self._committer  # commits what is queued, then ends
                self._committer = None
            pool, self._pool = self._pool, None
            await pool.close()

    async def check(self) -> None:
        """Raise :class:`StoreError` unless a real write commits and reads back now; a
        success forgets an earlier failed write."""
        async with self._conn() as conn:
            async with conn.transaction():
                probes = await conn.fetchval(
                    """INSERT INTO health (id, probes) VALUES (1, 1)
                       ON CONFLICT (id) DO UPDATE SET probes = health.probes + 1
                       RETURNING probes"""
                )
        if probes is None:
            raise StoreError(f"postgres store {redact_dsn(self.dsn)}: health probe row missing")
        self._write_failure = None

    # -- plumbing -----------------------------------------------------------------------

    def _require_open(self) -> Any:
        if self._pool is None or self._closing:
            raise StoreError(f"postgres store {redact_dsn(self.dsn)} is not open")
        return self._pool

    @asynccontextmanager
    async def _conn(self, what: str = "query failed") -> AsyncIterator[Any]:
        """A pool connection; database and connection failures become :class:`StoreError`."""
        pool = self._require_open()
        try:
            async with pool.acquire() as conn:
                yield conn
        except _DB_ERRORS as exc:
            raise self._fail(what, exc) from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Any]:
        """A connection inside one read-only REPEATABLE READ transaction (one snapshot)."""
        async with self._conn("read failed") as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                yield conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Any]:
        """A connection inside one READ COMMITTED transaction."""
        async with self._conn("write failed") as conn:
            async with conn.transaction():
                yield conn

    # -- rooms --------------------------------------------------------------------------

    async def get_room(self, room: str) -> RoomRecord | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room = $1", room)
        return None if row is None else _record(row)

    async def put_room(self, record: RoomRecord) -> None:
        try:
            policy = json.dumps(record.policy, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"policy of room {record.room!r} is not JSON: {exc}") from exc
        r = record
        async with self._conn("write failed") as conn:
            await conn.execute(
                """INSERT INTO rooms (room, created_ms, locked, closed, policy, lineage_head,
                       source, checkpoint, node, tick_n, tick_interval_ms, tick_at_ms)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                   ON CONFLICT (room) DO UPDATE SET created_ms = excluded.created_ms,
                       locked = excluded.locked, closed = excluded.closed,
                       policy = excluded.policy, lineage_head = excluded.lineage_head,
                       source = excluded.source, checkpoint = excluded.checkpoint,
                       node = excluded.node, tick_n = excluded.tick_n,
                       tick_interval_ms = excluded.tick_interval_ms,
                       tick_at_ms = excluded.tick_at_ms""",
                r.room, r.created_ms, r.locked, r.closed, policy, r.lineage_head, r.source,
                r.checkpoint, r.node, r.tick_n, r.tick_interval_ms, r.tick_at_ms,
            )  # fmt: skip

    async def list_rooms(self, *, limit: int = 100, cursor: str | None = None) -> list[RoomRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room > $1 ORDER BY room LIMIT $2",
                "" if cursor is None else cursor,
                max(limit, 0),
            )
        return [_record(row) for row in rows]

    async def ticking_rooms(self) -> list[RoomRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE tick_interval_ms > 0 ORDER BY room"
            )
        return [_record(row) for row in rows]

    async def delete_room(self, room: str) -> bool:
        async with self._write() as conn:
            for table in ("oplog", "entries", "base_entries", "blob_refs"):
                await conn.execute(f"DELETE FROM {table} WHERE room = $1", room)
            status = await conn.execute("DELETE FROM rooms WHERE room = $1", room)
        return bool(status != "DELETE 0")

    async def load_room(self, room: str, *, now_ms: int) -> LoadedRoom:
        async with self._read() as conn:
            row = await conn.fetchrow(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room = $1", room)
            if row is None:
                return LoadedRoom(record=RoomRecord(room=room, created_ms=now_ms), entries=[])
            rows = await conn.fetch(
                f"SELECT {_CHANGE_COLUMNS} FROM entries WHERE room = $1 ORDER BY path", room
            )
        return LoadedRoom(record=_record(row), entries=[_change(r) for r in rows])

    # -- blob references ----------------------------------------------------------------

    async def add_blob_ref(self, room: str, hash: str, size: int, *, now_ms: int) -> None:
        async with self._write() as conn:
            await conn.execute(
                "INSERT INTO rooms (room, created_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                room,
                now_ms,
            )
            await conn.execute(
                """INSERT INTO blob_refs (room, hash, size, created_ms) VALUES ($1, $2, $3, $4)
                   ON CONFLICT DO NOTHING""",
                room,
                hash,
                size,
                now_ms,
            )

    async def has_blob_ref(self, room: str, hash: str) -> bool:
        async with self._conn() as conn:
            row = await conn.fetchval(
                "SELECT 1 FROM blob_refs WHERE room = $1 AND hash = $2", room, hash
            )
        return row is not None

    async def blob_refs(
        self, *, limit: int, cursor: str | None = None
    ) -> tuple[list[str], str | None]:
        check_page_limit(limit)
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT hash FROM blob_refs WHERE hash > $1 ORDER BY hash LIMIT $2",
                "" if cursor is None else cursor,
                limit + 1,
            )
        page = [row[0] for row in rows[:limit]]
        return page, page[-1] if len(rows) > limit else None

    # -- revocations --------------------------------------------------------------------

    async def add_revocation(
        self, kind: RevocationKind, value: str, *, now_ms: int, expires_ms: int | None = None
    ) -> bool:
        check_revocation(kind, value)
        select = f"""SELECT {_REVOCATION_COLUMNS} FROM revocations
                     WHERE kind = $1 AND value = $2 FOR UPDATE"""
        async with self._write() as conn:
            # The row lock (or the insert's) keeps two nodes' revocations of one value apart.
            row = await conn.fetchrow(select, kind, value)
            if row is None:
                inserted = await conn.fetchval(
                    """INSERT INTO revocations (kind, value, created_ms, expires_ms)
                       VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1""",
                    kind,
                    value,
                    now_ms,
                    expires_ms,
                )
                if inserted is not None:
                    return True
                row = await conn.fetchrow(select, kind, value)  # another node's, just now
            stored, new = merge_revocation(
                _revocation(row), kind, value, now_ms=now_ms, expires_ms=expires_ms
            )
            await conn.execute(
                """UPDATE revocations SET created_ms = $3, expires_ms = $4
                   WHERE kind = $1 AND value = $2""",
                kind,
                value,
                stored.created_ms,
                stored.expires_ms,
            )
        return new

    async def is_revoked(self, sub: str | None, jti: str | None, *, now_ms: int) -> bool:
        keys = [(kind, value) for kind, value in (("sub", sub), ("jti", jti)) if value is not None]
        if not keys:
            return False
        async with self._conn() as conn:
            for kind, value in keys:
                row = await conn.fetchval(
                    """SELECT 1 FROM revocations WHERE kind = $1 AND value = $2
                       AND (expires_ms IS NULL OR expires_ms > $3)""",
                    kind,
                    value,
                    now_ms,
                )
                if row is not None:
                    return True
        return False

    async def list_revocations(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Revocation], str | None]:
        check_page_limit(limit)
        kind, value = revocation_key(cursor)
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"""SELECT {_REVOCATION_COLUMNS} FROM revocations
                    WHERE (kind, value) > ($1, $2) ORDER BY kind, value LIMIT $3""",
                kind,
                value,
                limit + 1,
            )
        items = [_revocation(row) for row in rows[:limit]]
        return items, revocation_cursor(items[-1]) if len(rows) > limit else None

    # -- op log -------------------------------------------------------------------------

    async def append(self, room: str, changes: Sequence[Change], *, expected_head: int) -> None:
        if not changes:
            return
        self._require_open()
        check_batch(room, expected_head, changes)
        (outcome,) = await self.append_batches([AppendBatch(room, changes, expected_head)])
        if outcome is not None:
            raise outcome

    def append_batches_now(self, batches: Sequence[AppendBatch]) -> list[AppendOutcome] | None:
        """Always None: a networked store commits nothing without a round trip."""
        return None

    async def append_batches(self, batches: Sequence[AppendBatch]) -> list[AppendOutcome]:
        """Queued for the committer task, which commits everything queued together in one
        transaction; returns once that transaction has committed (or failed)."""
        outcomes: list[AppendOutcome] = [None] * len(batches)
        try:
            self._require_open()
        except StoreError as exc:
            return [exc] * len(batches)
        todo: list[AppendBatch] = []
        where: list[int] = []
        for i, batch in enumerate(batches):
            if not batch.changes:
                continue
            try:
                check_batch(batch.room, batch.expected_head, batch.changes)
                _check_storable(batch.room, batch.changes)
            except StoreError as exc:
                outcomes[i] = exc
                continue
            # A tuple: the committer reads the batch later, the caller may reuse its list.
            todo.append(AppendBatch(batch.room, tuple(batch.changes), batch.expected_head))
            where.append(i)
        if not todo:
            return outcomes
        future: asyncio.Future[list[AppendOutcome]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(todo, future))
        self._wake.set()
        done = await asyncio.shield(future)
        for i, outcome in zip(where, done, strict=True):
            outcomes[i] = outcome
        return outcomes

    async def _commit_loop(self) -> None:
        """The committer: one transaction for everything queued, again and again."""
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            queued, self._pending = self._pending, []
            start = 0
            while start < len(queued):  # groups of at most _GROUP_ROWS rows
                end, rows = start + 1, sum(len(b.changes) for b in queued[start].batches)
                while end < len(queued):
                    more = sum(len(b.changes) for b in queued[end].batches)
                    if rows + more > _GROUP_ROWS:
                        break
                    rows += more
                    end += 1
                group = queued[start:end]
                start = end
                try:
                    results = await self._commit_group([b for p in group for b in p.batches])
                except BaseException as exc:  # a caller left unsettled would wait forever
                    error = self._fail("append transaction failed", exc)
                    results = [error for p in group for _ in p.batches]
                    if not isinstance(exc, Exception):
                        self._settle(group, results)
                        raise
                self._settle(group, results)

    @staticmethod
    def _settle(group: list[_Pending], results: list[AppendOutcome]) -> None:
        at = 0
        for pending in group:
            n = len(pending.batches)
            if not pending.future.done():
                pending.future.set_result(results[at : at + n])
            at += n

    async def _commit_group(self, batches: list[AppendBatch]) -> list[AppendOutcome]:
        """One transaction for ``batches``: each one's outcome (a transaction that fails
        fails them all)."""
        try:
            try:
                return await self._transaction(batches, savepoints=False)
            except asyncpg.DeadlockDetectedError:
                # Rolled back whole, nothing of it committed: once more (rooms are locked
                # in one order, so only a writer outside the group can cause it).
                return await self._transaction(batches, savepoints=False)
        except _Fatal:
            # A statement the database refused aborted the transaction: again, each batch
            # in a savepoint of its own, so only the offending one fails.
            try:
                return await self._transaction(batches, savepoints=True)
            except _Fatal as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                error = self._fail("append transaction failed", cause)
                self._write_failure = error
                return [error] * len(batches)
        except _LOST as exc:
            if isinstance(exc, TimeoutError):
                return self._failed_group(batches, exc)
            return await self._commit_again(batches, exc)
        except (*_DB_ERRORS, StoreError) as exc:
            return self._failed_group(batches, exc)

    def _failed_group(self, batches: list[AppendBatch], exc: BaseException) -> list[AppendOutcome]:
        error = exc if isinstance(exc, StoreError) else self._fail("append failed", exc)
        self._write_failure = error
        return [error] * len(batches)

    async def _commit_again(
        self, batches: list[AppendBatch], lost: BaseException
    ) -> list[AppendOutcome]:
        """The connection was lost: the group may or may not have committed (a pooled
        connection that went stale with a database restart, or one lost before the
        COMMIT's answer). Once more on a fresh connection; the fence makes that safe. A
        batch that did commit the first time now meets its own head moved: it is
        reported committed when the op log holds exactly its changes at its seqs."""
        try:
            outcomes = await self._transaction(batches, savepoints=False)
        except (_Fatal, *_DB_ERRORS, StoreError) as exc:
            error = self._fail(f"append failed (and before, {lost})", exc)
            self._write_failure = error
            return [error] * len(batches)
        for i, (batch, outcome) in enumerate(zip(batches, outcomes, strict=True)):
            if isinstance(outcome, StoreConflict) and await self._holds(batch):
                outcomes[i] = None
        return outcomes

    async def _holds(self, batch: AppendBatch) -> bool:
        """True when the op log holds exactly ``batch`` after its expected head."""
        try:
            log = await self.changes_since(
                batch.room, batch.expected_head, limit=len(batch.changes)
            )
        except StoreError:
            return False
        return log == list(batch.changes)

    async def _transaction(
        self, batches: list[AppendBatch], *, savepoints: bool
    ) -> list[AppendOutcome]:
        pool = self._pool
        if pool is None:
            raise StoreError(f"postgres store {redact_dsn(self.dsn)} is not open")
        now = self.now_ms()
        outcomes: list[AppendOutcome] = [None] * len(batches)
        async with pool.acquire() as conn:
            try:
                if len(batches) == 1 and not savepoints:
                    # One statement is its own transaction: no BEGIN and COMMIT round trips.
                    outcomes[0] = await self._append_one(conn, batches[0], now, False)
                else:
                    # Rooms in one global order (call order kept within a room): each
                    # statement locks its room's row to the COMMIT, so two nodes' groups
                    # over the same rooms in different call orders would deadlock.
                    order = sorted(range(len(batches)), key=lambda i: batches[i].room)
                    async with conn.transaction():
                        for i in order:
                            outcomes[i] = await self._append_one(conn, batches[i], now, savepoints)
            except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
                raise _Fatal() from exc
        written = [o for o in outcomes if o is None]
        if written:
            self.commits += 1
            self.appends += len(written)
        return outcomes

    async def _append_one(
        self, conn: Any, batch: AppendBatch, now_ms: int, savepoint: bool
    ) -> AppendOutcome:
        params = _batch_params(
            batch.room, batch.changes, batch.expected_head, now_ms, self._pushdown
        )
        sql = _APPEND_FIRST if batch.expected_head == 0 else _APPEND
        if savepoint:
            try:
                async with conn.transaction():
                    moved = await conn.fetchval(sql, *params)
            except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
                error = StoreError(f"append refused: {exc}")
                error.__cause__ = exc
                return error
        else:
            moved = await conn.fetchval(sql, *params)
        if moved == 1:
            return None
        head = await conn.fetchval("SELECT head FROM rooms WHERE room = $1", batch.room)
        return StoreConflict(batch.room, batch.expected_head, 0 if head is None else int(head))

    async def replace_state(
        self, room: str, entries: Sequence[Change], *, expected_head: int
    ) -> int:
        live = sorted((c for c in entries if c.value is not None), key=lambda c: c.path)
        if len({c.path for c in live}) != len(live):
            raise StoreError(f"replace_state of room {room!r}: a path is given twice")
        _check_storable(room, live)
        async with self._write() as conn:
            head = await conn.fetchval("SELECT head FROM rooms WHERE room = $1 FOR UPDATE", room)
            if (0 if head is None else head) != expected_head:
                raise StoreConflict(room, expected_head, 0 if head is None else int(head))
            if head is None:
                await conn.execute(
                    "INSERT INTO rooms (room, created_ms) VALUES ($1, $2)", room, self.now_ms()
                )
            current = {
                row[0]: _change(row)
                for row in await conn.fetch(
                    f"SELECT {_CHANGE_COLUMNS} FROM entries WHERE room = $1", room
                )
            }
            fresh: list[Change] = []
            changed: list[Change] = []
            seq = expected_head
            for change in live:
                mine = current.get(change.path)
                if mine is not None and mine.key == change.key and mine.value == change.value:
                    fresh.append(mine)  # already there: it keeps its seq
                else:
                    seq += 1
                    moved = change.with_seq(seq)
                    fresh.append(moved)
                    changed.append(moved)
            keep = {c.path for c in live}
            gone = [p for p in current if p not in keep]
            await conn.execute(
                "DELETE FROM entries WHERE room = $1 AND path = ANY($2::text[])", room, gone
            )
            await self._upsert_entries(conn, room, changed)
            await conn.execute("DELETE FROM oplog WHERE room = $1", room)
            await conn.execute("DELETE FROM base_entries WHERE room = $1", room)
            await conn.execute(
                f"""INSERT INTO base_entries (room, {_CHANGE_COLUMNS})
                    SELECT room, {_CHANGE_COLUMNS} FROM entries WHERE room = $1""",
                room,
            )
            new_head = seq + 1
            await conn.execute(
                "UPDATE rooms SET head = $2, compacted_through = $2 WHERE room = $1",
                room,
                new_head,
            )
        return new_head

    async def _upsert_entries(self, conn: Any, room: str, changes: Sequence[Change]) -> None:
        if not changes:
            return
        images = [_image(c.value, self._pushdown) for c in changes]
        await conn.execute(
            """INSERT INTO entries (room, path, ts, counter, actor, value, seq, kind, doc)
               SELECT $1, u.p, u.t, u.c, u.a, u.v, u.s, u.k, u.d
               FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bytea[],
                           $7::bigint[], $8::smallint[], $9::jsonb[]) AS u(p, t, c, a, v, s, k, d)
               ON CONFLICT (room, path) DO UPDATE SET ts = excluded.ts,
                   counter = excluded.counter, actor = excluded.actor, value = excluded.value,
                   seq = excluded.seq, kind = excluded.kind, doc = excluded.doc""",
            room,
            [c.path for c in changes],
            [_ts_in(c.ts) for c in changes],
            [c.counter for c in changes],
            [c.actor for c in changes],
            [c.value for c in changes],
            [c.seq for c in changes],
            [k for k, _ in images],
            [d for _, d in images],
        )

    async def changes_since(self, room: str, since: int, *, limit: int) -> list[Change]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"""SELECT {_CHANGE_COLUMNS} FROM oplog
                    WHERE room = $1 AND seq > $2 ORDER BY seq LIMIT $3""",
                room,
                since,
                max(limit, 0),
            )
        return [_change(r) for r in rows]

    async def base_snapshot(self, room: str) -> list[Change]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_CHANGE_COLUMNS} FROM base_entries WHERE room = $1 ORDER BY path", room
            )
        return [_change(r) for r in rows]

    async def compact(self, room: str, through_seq: int) -> int:
        async with self._write() as conn:
            # The room row's lock keeps appends of other nodes out until the COMMIT.
            row = await conn.fetchrow(
                "SELECT head, compacted_through FROM rooms WHERE room = $1 FOR UPDATE", room
            )
            if row is None:
                raise StoreError(f"compact of unknown room {room!r}")
            head, compacted = row
            through = min(through_seq, head)
            if through <= compacted:
                return 0
            folded = [
                _change(r)
                for r in await conn.fetch(
                    f"""SELECT {_CHANGE_COLUMNS} FROM oplog WHERE room = $1 AND seq <= $2
                        ORDER BY seq""",
                    room,
                    through,
                )
            ]
            winners: dict[str, Change] = {}
            merge_into(winners, folded)
            base = {
                r[0]: _change(r)
                for r in await conn.fetch(
                    f"""SELECT {_CHANGE_COLUMNS} FROM base_entries
                        WHERE room = $1 AND path = ANY($2::text[])""",
                    room,
                    list(winners),
                )
            }
            upserts: list[Change] = []
            deletes: list[str] = []
            for path, change in winners.items():
                if not wins(change, base.get(path)):
                    continue
                if change.value is None:
                    deletes.append(path)  # the base is the live state: no tombstones
                else:
                    upserts.append(change)
            await conn.execute(
                "DELETE FROM base_entries WHERE room = $1 AND path = ANY($2::text[])",
                room,
                deletes,
            )
            if upserts:
                await conn.execute(
                    """INSERT INTO base_entries (room, path, ts, counter, actor, value, seq)
                       SELECT $1, u.p, u.t, u.c, u.a, u.v, u.s
                       FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[],
                                   $6::bytea[], $7::bigint[]) AS u(p, t, c, a, v, s)
                       ON CONFLICT (room, path) DO UPDATE SET ts = excluded.ts,
                           counter = excluded.counter, actor = excluded.actor,
                           value = excluded.value, seq = excluded.seq""",
                    room,
                    [c.path for c in upserts],
                    [_ts_in(c.ts) for c in upserts],
                    [c.counter for c in upserts],
                    [c.actor for c in upserts],
                    [c.value for c in upserts],
                    [c.seq for c in upserts],
                )
            status = await conn.execute(
                "DELETE FROM oplog WHERE room = $1 AND seq <= $2", room, through
            )
            await conn.execute(
                "DELETE FROM entries WHERE room = $1 AND value IS NULL AND seq <= $2",
                room,
                through,
            )
            await conn.execute(
                "UPDATE rooms SET compacted_through = $2 WHERE room = $1", room, through
            )
        return int(status.split()[-1])

    # -- archives -----------------------------------------------------------------------

    async def put_archive(self, record: ArchiveRecord, chunks: Sequence[bytes]) -> bool:
        check_archive(record, chunks)
        r = record
        async with self._write() as conn:
            inserted = await conn.fetchval(
                f"""INSERT INTO archives ({_ARCHIVE_COLUMNS})
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                    ON CONFLICT (ref) DO NOTHING RETURNING 1""",
                r.ref, r.room, r.head, r.root, r.count, r.size, r.chunks, r.created_ms, r.parent,
            )  # fmt: skip
            if inserted is None:
                return False
            await conn.execute(
                """INSERT INTO archive_chunks (ref, idx, data)
                   SELECT $1, u.i, u.d FROM unnest($2::bigint[], $3::bytea[]) AS u(i, d)""",
                r.ref,
                list(range(len(chunks))),
                [bytes(c) for c in chunks],
            )
        return True

    async def get_archive(self, ref: str) -> ArchiveRecord | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {_ARCHIVE_COLUMNS} FROM archives WHERE ref = $1", ref
            )
        return None if row is None else _archive(row)

    async def archive_chunk(self, ref: str, index: int) -> bytes:
        async with self._conn() as conn:
            data = await conn.fetchval(
                "SELECT data FROM archive_chunks WHERE ref = $1 AND idx = $2", ref, index
            )
        if data is None:
            raise StoreError(f"archive {ref} has no chunk {index}")
        return bytes(data)

    async def list_archives(
        self, room: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[ArchiveRecord], str | None]:
        check_page_limit(limit)
        below = archive_cursor_key(cursor)
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"""SELECT n, {_ARCHIVE_COLUMNS} FROM archives WHERE room = $1 AND n < $2
                    ORDER BY n DESC LIMIT $3""",
                room,
                below,
                limit + 1,
            )
        items = [_archive(tuple(row)[1:]) for row in rows[:limit]]
        return items, str(rows[limit - 1][0]) if len(rows) > limit else None

    async def delete_archive(self, ref: str) -> bool:
        async with self._write() as conn:
            row = await conn.fetchrow("SELECT parent FROM archives WHERE ref = $1 FOR UPDATE", ref)
            if row is None:
                return False
            parent = row[0]
            await conn.execute("UPDATE archives SET parent = $1 WHERE parent = $2", parent, ref)
            await conn.execute(
                "UPDATE rooms SET lineage_head = $1 WHERE lineage_head = $2", parent, ref
            )
            await conn.execute("DELETE FROM archive_chunks WHERE ref = $1", ref)
            await conn.execute("DELETE FROM archives WHERE ref = $1", ref)
        return True

    async def forks_of(self, ref: str) -> list[str]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT room FROM rooms WHERE checkpoint = $1 ORDER BY room", ref
            )
        return [row[0] for row in rows]

    # -- proposals, query specs, settings -----------------------------------------------

    async def put_proposal(self, record: ProposalRecord) -> None:
        r = record
        async with self._conn("write failed") as conn:
            await conn.execute(
                f"""INSERT INTO proposals ({_PROPOSAL_COLUMNS})
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                    ON CONFLICT (proposal) DO UPDATE SET room = excluded.room,
                        source = excluded.source, checkpoint = excluded.checkpoint,
                        state = excluded.state, changes = excluded.changes,
                        created_ms = excluded.created_ms, conflicts = excluded.conflicts,
                        resolve = excluded.resolve, validated_head = excluded.validated_head""",
                r.proposal, r.room, r.source, r.checkpoint, r.state, encode_pack(r.changes),
                r.created_ms, json.dumps(list(r.conflicts)), r.resolve, r.validated_head,
            )  # fmt: skip

    async def get_proposal(self, proposal: str) -> ProposalRecord | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {_PROPOSAL_COLUMNS} FROM proposals WHERE proposal = $1", proposal
            )
        return None if row is None else _proposal(row)

    async def put_query(self, name: str, spec: dict[str, object]) -> bool:
        text = _json_text(spec, f"query {name!r}")
        async with self._conn("write failed") as conn:
            # xmax = 0: the row was inserted, not updated.
            inserted = await conn.fetchval(
                """INSERT INTO query_specs (name, spec) VALUES ($1, $2)
                   ON CONFLICT (name) DO UPDATE SET spec = excluded.spec
                   RETURNING xmax = 0""",
                name,
                text,
            )
        return bool(inserted)

    async def get_query(self, name: str) -> dict[str, object] | None:
        async with self._conn() as conn:
            text = await conn.fetchval("SELECT spec FROM query_specs WHERE name = $1", name)
        return None if text is None else dict(json.loads(text))

    async def list_queries(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[tuple[str, dict[str, object]]], str | None]:
        check_page_limit(limit)
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT name, spec FROM query_specs WHERE name > $1 ORDER BY name LIMIT $2",
                "" if cursor is None else cursor,
                limit + 1,
            )
        items = [(row[0], dict(json.loads(row[1]))) for row in rows[:limit]]
        return items, items[-1][0] if len(rows) > limit else None

    async def delete_query(self, name: str) -> bool:
        async with self._conn("write failed") as conn:
            status = await conn.execute("DELETE FROM query_specs WHERE name = $1", name)
        return bool(status != "DELETE 0")

    async def run_query(
        self,
        room: str,
        spec: QuerySpec,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, object]], str | None]:
        """Pushed down into ``jsonb`` (:mod:`.postgres_query`), in one read transaction."""
        async with self._read() as conn:
            rows, next_cursor, self.last_query = await postgres_query.run(
                conn, room, spec, limit=limit, cursor=cursor, pushdown=self._pushdown
            )
        return rows, next_cursor

    async def get_setting(self, key: str) -> dict[str, object] | None:
        async with self._conn() as conn:
            text = await conn.fetchval("SELECT value FROM settings WHERE key = $1", key)
        return None if text is None else dict(json.loads(text))

    async def put_setting(self, key: str, value: dict[str, object]) -> None:
        text = _json_text(value, f"setting {key!r}")
        async with self._conn("write failed") as conn:
            await conn.execute(
                """INSERT INTO settings (key, value) VALUES ($1, $2)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                key,
                text,
            )

    # -- node registry -----------------------------------------------------------------

    async def beat(self, node: str, info: dict[str, object], *, now_ms: int) -> None:
        text = _json_text(info, f"node {node!r}")
        async with self._conn("write failed") as conn:
            await conn.execute(
                """INSERT INTO nodes (node, beat_ms, info) VALUES ($1, $2, $3)
                   ON CONFLICT (node) DO UPDATE SET beat_ms = excluded.beat_ms,
                   info = excluded.info""",
                node,
                now_ms,
                text,
            )

    async def list_nodes(self) -> list[NodeBeat]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT node, beat_ms, info FROM nodes ORDER BY node")
        return [NodeBeat(r[0], int(r[1]), dict(json.loads(r[2]))) for r in rows]

    async def forget_node(self, node: str) -> bool:
        async with self._conn("write failed") as conn:
            status = await conn.execute("DELETE FROM nodes WHERE node = $1", node)
        return bool(status != "DELETE 0")

    # -- webhook outbox (storage/webhooks.py) ----------------------------------------------

    async def add_webhooks(self, deliveries: Sequence[WebhookDelivery]) -> None:
        if not deliveries:
            return
        async with self._conn("write failed") as conn:
            await conn.execute(
                """INSERT INTO webhook_outbox (key, id, room, event, url, body, created_ms,
                       next_ms, attempts)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                       $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[])
                   ON CONFLICT (key) DO NOTHING""",
                [d.key for d in deliveries],
                [d.id for d in deliveries],
                [d.room for d in deliveries],
                [d.event for d in deliveries],
                [d.url for d in deliveries],
                [d.body for d in deliveries],
                [d.created_ms for d in deliveries],
                [d.next_ms for d in deliveries],
                [d.attempts for d in deliveries],
            )

    async def claim_webhooks(
        self, *, node: str, now_ms: int, lease_ms: int, limit: int
    ) -> list[WebhookDelivery]:
        """Due rows leased in one statement; ``SKIP LOCKED``: nodes claiming at once
        take different rows and never wait for each other."""
        async with self._conn("write failed") as conn:
            rows = await conn.fetch(
                f"""UPDATE webhook_outbox SET lease_node = $1, lease_until = $2
                    WHERE n IN (SELECT n FROM webhook_outbox WHERE next_ms <= $3
                        AND (lease_node IS NULL OR lease_until <= $3)
                        ORDER BY next_ms, n LIMIT $4 FOR UPDATE SKIP LOCKED)
                    RETURNING n, {_WEBHOOK_COLUMNS}""",
                node,
                now_ms + lease_ms,
                now_ms,
                max(0, limit),
            )
        ordered = sorted(rows, key=lambda r: (r["next_ms"], r["n"]))  # RETURNING has no order
        return [WebhookDelivery(*tuple(r)[1:]) for r in ordered]

    async def settle_webhook(
        self,
        key: str,
        *,
        retry_at_ms: int | None = None,
        error: str = "",
        result: WebhookResult | None = None,
    ) -> None:
        async with self._write() as conn:
            if result is not None:
                gone = await conn.fetchval(
                    "DELETE FROM webhook_outbox WHERE key = $1 RETURNING 1", key
                )
                if gone is None:
                    return  # another node finished it
                r = result
                await conn.execute(
                    """INSERT INTO webhook_log (room, id, event, url, outcome, status,
                           attempts, at_ms, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
                    r.room, r.id, r.event, r.url, r.outcome, r.status, r.attempts, r.at_ms,
                    r.error,
                )  # fmt: skip
                await conn.execute(
                    """DELETE FROM webhook_log WHERE room = $1 AND n NOT IN (SELECT n FROM
                           webhook_log WHERE room = $1 ORDER BY n DESC LIMIT $2)""",
                    r.room,
                    WEBHOOK_LOG_KEEP,
                )
            elif retry_at_ms is not None:
                await conn.execute(
                    """UPDATE webhook_outbox SET attempts = attempts + 1, next_ms = $1,
                           last_error = $2, lease_node = NULL, lease_until = 0
                       WHERE key = $3""",
                    retry_at_ms,
                    error,
                    key,
                )

    async def pending_webhooks(self) -> int:
        async with self._conn() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM webhook_outbox"))

    async def webhook_log(self, room: str, *, limit: int = WEBHOOK_LOG_KEEP) -> list[WebhookResult]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                """SELECT id, room, event, url, outcome, status, attempts, at_ms, error
                   FROM webhook_log WHERE room = $1 ORDER BY n DESC LIMIT $2""",
                room,
                max(0, limit),
            )
        return [WebhookResult(*tuple(r)) for r in rows]
