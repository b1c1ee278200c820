"""The PostgreSQL store beyond the contract: fencing between stores that share a database
(two pools in one process, and two processes), migrations, and failures."""

from __future__ import annotations

import asyncio
import itertools
import socket
import subprocess
import sys
import textwrap
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from roomsync.core.entries import Change
from roomsync.core.query import OPS, evaluate, parse_spec
from roomsync.storage.base import AppendBatch, StoreConflict, StoreError
from roomsync.storage.postgres import MIGRATIONS, PostgresStore
from roomsync.testing.proxy import TcpProxy
from roomsync.testing.store_contract import change


async def _pair(dsn: str) -> tuple[PostgresStore, PostgresStore]:
    a, b = PostgresStore(dsn, max_size=3), PostgresStore(dsn, max_size=3)
    await asyncio.gather(a.open(), b.open())
    return a, b


async def test_two_stores_same_expected_head_exactly_one_wins(postgres_schema_dsn: str) -> None:
    """Two nodes (two pools, two committers) race on every head: one batch wins each
    round, the other gets StoreConflict naming the winner's head; seqs stay gap-free."""
    a, b = await _pair(postgres_schema_dsn)
    try:
        head = 0
        for round_ in range(40):
            size_a, size_b = 1 + round_ % 3, 1 + (round_ + 1) % 2
            batch_a = [change(head + i + 1, f"/a/{i}", b"A", actor="a") for i in range(size_a)]
            batch_b = [change(head + i + 1, f"/b/{i}", b"B", actor="b") for i in range(size_b)]
            results = await asyncio.gather(
                a.append("room", batch_a, expected_head=head),
                b.append("room", batch_b, expected_head=head),
                return_exceptions=True,
            )
            won = [batch for batch, r in zip((batch_a, batch_b), results, strict=True) if r is None]
            lost = [r for r in results if r is not None]
            assert len(won) == 1 and len(lost) == 1, results
            assert isinstance(lost[0], StoreConflict)
            assert (lost[0].expected, lost[0].actual) == (head, head + len(won[0]))
            head += len(won[0])
        seqs = [c.seq for c in await a.changes_since("room", 0, limit=10_000)]
        assert seqs == list(range(1, head + 1))
        record = await b.get_room("room")
        assert record is not None and record.head == head
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_group_commits_of_two_nodes_over_the_same_rooms_never_deadlock(
    postgres_schema_dsn: str,
) -> None:
    """Two nodes commit groups that hold the same rooms in opposite call orders, round
    after round: each batch is committed or fenced out (StoreConflict), never failed by
    a deadlock between the two transactions' room-row locks."""
    a, b = await _pair(postgres_schema_dsn)
    rooms = [f"r{i}" for i in range(4)]
    heads = dict.fromkeys(rooms, 0)

    def group(node: str, order: list[str], round_: int) -> list[AppendBatch]:
        return [
            AppendBatch(
                room, [change(heads[room] + 1, f"/{node}/{round_}", b"x", actor=node)], heads[room]
            )
            for room in order
        ]

    try:
        for round_ in range(30):
            out_a, out_b = await asyncio.gather(
                a.append_batches(group("a", rooms, round_)),
                b.append_batches(group("b", rooms[::-1], round_)),
            )
            by_room_a = dict(zip(rooms, out_a, strict=True))
            by_room_b = dict(zip(rooms[::-1], out_b, strict=True))
            for room in rooms:
                pair = (by_room_a[room], by_room_b[room])
                failed = [o for o in pair if o is not None and not isinstance(o, StoreConflict)]
                assert not failed, f"round {round_}, {room}: {failed}"
                assert sum(o is None for o in pair) == 1, pair  # exactly one wins the head
                heads[room] += 1
        for room in rooms:
            seqs = [c.seq for c in await a.changes_since(room, 0, limit=1000)]
            assert seqs == list(range(1, heads[room] + 1))
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_two_stores_racing_to_create_a_room(postgres_schema_dsn: str) -> None:
    a, b = await _pair(postgres_schema_dsn)
    try:
        for n in range(10):
            results = await asyncio.gather(
                a.append(f"new{n}", [change(1, "/x", b"a")], expected_head=0),
                b.append(f"new{n}", [change(1, "/x", b"b")], expected_head=0),
                return_exceptions=True,
            )
            assert sum(r is None for r in results) == 1
            assert all(isinstance(r, StoreConflict) for r in results if r is not None)
            assert len(await a.changes_since(f"new{n}", 0, limit=10)) == 1
    finally:
        await asyncio.gather(a.close(), b.close())


_WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    from roomsync.storage.base import StoreConflict
    from roomsync.storage.postgres import PostgresStore
    from roomsync.testing.store_contract import change

    async def main(dsn, name, writes, start_at):
        store = PostgresStore(dsn, max_size=2)
        await store.open()
        conflicts = 0
        await asyncio.sleep(max(0.0, start_at - time.time()))  # both start together
        try:
            head = (await store.load_room("shared", now_ms=0)).record.head
            done = 0
            while done < writes:
                try:
                    await store.append(
                        "shared", [change(head + 1, f"/{name}/{done}", name.encode())],
                        expected_head=head,
                    )
                except StoreConflict as exc:
                    conflicts += 1
                    head = exc.actual  # reload: the store says where the head is
                    continue
                head += 1
                done += 1
        finally:
            await store.close()
        print(conflicts)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    """
)


def test_writers_in_two_processes_keep_seqs_gap_free(postgres_schema_dsn: str) -> None:
    """Two processes append to one room as fast as they can, each reloading its head on
    a conflict: every write lands exactly once, seqs 1..n without a gap."""
    writes = 400
    start_at = str(time.time() + 3)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, postgres_schema_dsn, name, str(writes), start_at],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    conflicts = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        conflicts += int(out)
    assert conflicts > 0  # they did race for the same heads

    async def verify() -> None:
        store = PostgresStore(postgres_schema_dsn, max_size=1)
        await store.open()
        try:
            log = await store.changes_since("shared", 0, limit=10_000)
            assert [c.seq for c in log] == list(range(1, 2 * writes + 1))
            for name in ("p1", "p2"):
                mine = [c.path for c in log if c.actor == "a" and c.value == name.encode()]
                assert mine == [f"/{name}/{i}" for i in range(writes)]  # once each, in order
            record = await store.get_room("shared")
            assert record is not None and record.head == 2 * writes
        finally:
            await store.close()

    asyncio.run(verify())


async def test_migrations_are_recorded_and_applied_once(postgres_schema_dsn: str) -> None:
    stores = [PostgresStore(postgres_schema_dsn, max_size=1) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))  # nodes starting together
    try:
        applied = sorted(v for s in stores for v in s.migrations_applied)
        assert applied == [m.version for m in MIGRATIONS]
        again = PostgresStore(postgres_schema_dsn, max_size=1)
        await again.open()
        assert again.migrations_applied == []
        await again.close()
        async with stores[0]._conn() as conn:
            rows = await conn.fetch("SELECT version, name FROM schema_version ORDER BY version")
        assert [(r[0], r[1]) for r in rows] == [(m.version, m.name) for m in MIGRATIONS]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_group_commit_keeps_call_order_per_room(postgres_schema_dsn: str) -> None:
    store = PostgresStore(postgres_schema_dsn, max_size=2)
    await store.open()
    try:
        calls = [
            store.append("o", [change(i + 1, f"/{i % 3}", b"%d" % i)], expected_head=i)
            for i in range(50)
        ]
        await asyncio.gather(*calls)
        assert [c.seq for c in await store.changes_since("o", 0, limit=100)] == list(range(1, 51))
        assert 0 < store.commits < 50
        assert store.append_batches_now([AppendBatch("o", [change(51, "/x", b"x")], 50)]) is None
    finally:
        await store.close()


async def test_unstorable_text_is_refused_alone(postgres_schema_dsn: str) -> None:
    store = PostgresStore(postgres_schema_dsn, max_size=1)
    await store.open()
    try:
        outcomes = await store.append_batches(
            [
                AppendBatch("ok", [change(1, "/a", b"1")], 0),
                AppendBatch("bad", [change(1, "/nul\x00", b"1")], 0),
                AppendBatch("bad2", [change(1, "/a", b"1", actor="\ud800")], 0),
            ]
        )
        assert outcomes[0] is None
        assert isinstance(outcomes[1], StoreError) and isinstance(outcomes[2], StoreError)
        assert await store.get_room("bad") is None
        await store.check()
    finally:
        await store.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_server_fails_to_open_without_the_password() -> None:
    store = PostgresStore(f"postgresql://u:s3cret@127.0.0.1:{_closed_port()}/db")
    with pytest.raises(StoreError) as failed:
        await store.open()
    assert "s3cret" not in str(failed.value) and "s3cret" not in repr(store)
    with pytest.raises(StoreError):
        await store.check()
    outcomes = await store.append_batches([AppendBatch("r", [change(1, "/a", b"1")], 0)])
    assert len(outcomes) == 1 and isinstance(outcomes[0], StoreError)


#: Values where PostgreSQL's own reading of JSON differs from the core's: repeated keys,
#: numbers beyond i64 and the double range, denormals, -0.0, \u0000 and lone surrogates,
#: keys that look like negative or zero-padded indexes.
TRICKY_DOCS = [
    b'{"a": [1, 2, 3]}',
    b'{"a": {"-1": 5, "01": 6, "1": 7}}',
    b'{"a": "x\\u0000y"}',
    b'{"a": "\\ud800"}',
    b'{"a": 1, "a": 2}',
    b'{"a": 5e-324}',
    b'{"a": -0.0}',
    b'{"a": 9223372036854775808}',
    b'{"a": 1e400}',
    b'{"a": ' + b"9" * 400 + b"}",
    b'{"\\u0000": 1, "a": "b"}',
    b"[1, [2, [3]]]",
    b'{"a": {"b": [{"c": "d"}]}}',
    b'"plain"',
    b'{"a": "\\u00e9"}',
    b'{"a": "\xc3\xa9"}',
    b'{"a": "A"}',
    b'{"a": "a"}',
    b'{"a": null}',
    b'{"a": true}',
    b"\xff",
]
TRICKY_VALUES: list[object] = [
    1, 2, 5e-324, 0, -0.0, 2**63, 10**400, "x", "\x00", "a", "é", "A", None, True,
    [1, 2, 3], {"-1": 5, "01": 6, "1": 7}, "x\x00y",
]  # fmt: skip
TRICKY_POINTERS = ["/a", "/a/-1", "/a/01", "/a/1", "/a/0", "", "/\x00", "/a/b/0/c", "/1/1/0"]


async def test_tricky_values_answer_as_the_core_does(postgres_schema_dsn: str) -> None:
    """Every op with every tricky value on every tricky pointer, with and without an
    order, page by page: the core's answer, and no SQL candidate dropped."""
    store = PostgresStore(postgres_schema_dsn, max_size=1)
    await store.open()
    try:
        entries = [Change(f"/d/{i:02d}", 1, 0, "a", d, i + 1) for i, d in enumerate(TRICKY_DOCS)]
        await store.append("r", entries, expected_head=0)
        pushed = 0
        for pointer, op in itertools.product(TRICKY_POINTERS, OPS):
            for value in [None] if op == "exists" else TRICKY_VALUES:
                f: dict[str, object] = {"pointer": pointer, "op": op}
                if op != "exists":
                    f["value"] = value
                for order in (None, {"pointer": pointer}, {"pointer": "/a", "dir": "desc"}):
                    raw: dict[str, object] = {"filters": [f], "limit": 3}
                    if order is not None:
                        raw["order"] = order
                    try:
                        spec = parse_spec(raw)
                    except ValueError:
                        continue  # not a spec (prefix of a number, ...)
                    cursor: str | None = None
                    for _ in range(len(entries) + 1):
                        got = await store.run_query("r", spec, cursor=cursor)
                        assert got == evaluate(spec, entries, cursor=cursor), (raw, cursor)
                        stats = store.last_query
                        assert stats is not None and stats.dropped == 0, (raw, stats)
                        pushed += stats.pushed_down
                        cursor = got[1]
                        if cursor is None:
                            break
        assert pushed > 1000  # most of them in SQL
    finally:
        await store.close()


async def test_a_lost_connection_is_tried_again_and_an_own_commit_recognised(
    postgres_schema_dsn: str,
) -> None:
    """After a lost connection the group runs once more; a batch that had committed meets
    its own head and is reported committed (its rows are in the op log), another
    writer's batch at those seqs is still a conflict."""
    store = PostgresStore(postgres_schema_dsn, max_size=2)
    await store.open()
    try:
        mine = AppendBatch("r", (change(1, "/a", b"mine", actor="me"),), 0)
        assert await store.append_batches([mine]) == [None]
        theirs = AppendBatch("r", (change(1, "/a", b"theirs", actor="other"),), 0)
        fresh = AppendBatch("r", (change(2, "/b", b"next"),), 1)
        outcomes = await store._commit_again([mine, theirs, fresh], ConnectionResetError())
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], StoreConflict)
        assert [c.value for c in await store.changes_since("r", 0, limit=10)] == [b"mine", b"next"]
    finally:
        await store.close()


async def test_the_store_survives_its_database_going_away(postgres_schema_dsn: str) -> None:
    target = urlsplit(postgres_schema_dsn)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        via = urlunsplit(target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}"))
        store = PostgresStore(via, max_size=2, command_timeout_s=5)
        await store.open()
        try:
            await store.append("r", [change(1, "/a", b"1")], expected_head=0)
            await proxy.cut()
            with pytest.raises(StoreError):
                await store.check()
            outcomes = await store.append_batches([AppendBatch("r", [change(2, "/a", b"2")], 1)])
            assert isinstance(outcomes[0], StoreError)
            await proxy.restore()
            await store.check()
            await store.append("r", [change(2, "/a", b"2")], expected_head=1)
            assert [c.seq for c in await store.changes_since("r", 0, limit=10)] == [1, 2]
        finally:
            await store.close()
