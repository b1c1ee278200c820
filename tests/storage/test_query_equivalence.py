"""The SQLite push-down of query specs answers exactly what the core evaluator answers
(SPEC §6 ``query``; :mod:`roomsync.storage.sqlite_query`, :mod:`roomsync.core.query`).

Random small rooms (nested JSON with ints, floats equal to ints, big ints, strings that
look like numbers, booleans, null, keys that look like array indices, escaped keys and
strings, repeated keys, values that are not JSON at all or only to SQLite, tombstones)
and random specs go through both, page by page through every cursor, and every page must
be equal. Where SQLite alone reads the values as the core does, SQL must also have
selected exactly the right rows (none of its candidates dropped by the Python check).
Random rooms meet a given (op, value, stored value) triple rarely, so a deterministic
grid runs every op with every value of a pool on every pointer over rooms that hold each
value of the pool, too.

One store serves every example (each writes a fresh room) on an event loop of the test's
own, so the examples stay fast.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from roomsync.core.entries import Change
from roomsync.core.query import NOT_JSON, QuerySpec, decode, evaluate, parse_spec
from roomsync.storage import sqlite_query
from roomsync.storage.postgres import PostgresStore
from roomsync.storage.sqlite import SqliteStore
from roomsync.testing.postgres import create_schema, schema_dsn

KEYS = ["a", "b", "0", "1", "x y", "é", "", "a/b", '"q']
POINTERS = ["", "/a", "/b", "/0", "/1", "/a/0", "/a/b", "/a/a", "/é", "/x y", "/a~1b", '/"q']
#: The pointers most documents have, drawn more often.
COMMON = ["/a", "/a", "/a", "/b", "/b", "", "/0"]
DEEP = "/0/0/0/0/0"  # more index-like tokens than SQL is given: evaluated in Python
NOT_JSON_VALUES = [
    b"",
    b"\xff",
    b"nope",
    b'{"a":',
    b"NaN",
    b"1\x00",  # JSON to SQLite (it stops at the NUL), not to the core
    b'{"a":"\xff"}',  # not UTF-8: JSON to SQLite, not to the core
    b'{"a": 0, "b": "\xff"}',
    b'{"a": 1}\x00',
    b"[" * 600 + b"]" * 600,  # deeper than MAX_DEPTH, fine for SQLite
]

#: Values worth meeting often: equal as doubles but not as ints (2**53 + 1), an int and
#: its float, strings that look like numbers, literals or JSON, strings that need escapes.
POOL: list[Any] = [
    None, True, False, 0, 1, -1, 2, 1.0, 0.5, -0.0, 2**53, 2**53 + 1, 9007199254740992.0,
    10**20, 1e20, "", "a", "ab", "b", "1", "true", "é", "😀", 'a"b', "a\\b", "\n", "x y",
    "[1]", "{}",
]  # fmt: skip
numbers = st.one_of(
    st.sampled_from([v for v in POOL if isinstance(v, int | float) and not isinstance(v, bool)]),
    st.integers(-3, 3),
    st.sampled_from([2**63, -(2**63), 10**400]),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
scalars = st.one_of(
    st.sampled_from(POOL), st.sampled_from(POOL), numbers, st.just("\ud800"), st.text(max_size=3)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)
fields = st.one_of(st.sampled_from(POOL), st.sampled_from(POOL), st.sampled_from(POOL), json_values)
documents = st.one_of(
    st.fixed_dictionaries({}, optional={k: fields for k in ("a", "b", "0", "é")}),
    st.fixed_dictionaries({}, optional={k: fields for k in ("a", "b")}),
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4),
    json_values,
)


@st.composite
def encoded(draw: st.DrawFn) -> bytes:
    """A JSON value as an app might write it (or bytes that are not JSON)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(NOT_JSON_VALUES))
    value = draw(documents)
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (",", " : ")])),
    )
    twist = draw(st.integers(0, 5))
    if twist == 0 and text.startswith("{") and '"a"' in text:
        text = text.replace('"a"', '"\\u0061"', 1)  # an escaped key
    elif twist == 1 and text.startswith("{") and text != "{}":
        text = '{"a": 7, ' + text[1:]  # a repeated key, the first one wins
    elif twist == 2:
        text = f" \n{text}\t"
    return text.encode("utf-8", "surrogatepass")


def _seen(values: dict[str, bytes | None]) -> list[Any]:
    """Every value inside the room's documents, with each number's twin (``2**53 + 1``
    has ``2**53`` as a double, ``1`` has ``1.0``): filters drawn from these match often."""
    seen: list[Any] = []
    stack = [decode(v) for v in values.values() if v is not None]
    while stack:
        item = stack.pop()
        if item is NOT_JSON:
            continue
        seen.append(item)
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, int | float) and not isinstance(item, bool):
            try:
                twin = float(item)
                seen.append(int(twin) if twin.is_integer() and isinstance(item, float) else twin)
            except OverflowError:
                pass
    return [v for v in seen if _spec_value(v)] or [None]


def _pointers(values: dict[str, bytes | None]) -> list[str]:
    """The pointers the room's documents have, two levels deep, and some they lack."""
    found = ["", *COMMON]
    for raw in values.values():
        doc = None if raw is None else decode(raw)
        items = list(doc.items()) if isinstance(doc, dict) else []
        items += [(str(i), v) for i, v in enumerate(doc)] if isinstance(doc, list) else []
        for key, value in items:
            top = "/" + key.replace("~", "~0").replace("/", "~1")
            found.append(top)
            if isinstance(value, dict):
                found += [top + "/" + k.replace("~", "~0").replace("/", "~1") for k in value]
            elif isinstance(value, list) and value:
                found.append(top + "/0")
    return found + POINTERS + [DEEP]


def _filters(seen: list[Any], pointers: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    values = st.one_of(st.sampled_from(seen), st.sampled_from(POOL), scalars, json_values)
    strings = [v for v in [*seen, *POOL] if isinstance(v, str)]
    ordered = [v for v in [*seen, *POOL] if isinstance(v, str | float | int)]
    ordered = [v for v in ordered if not isinstance(v, bool) and _spec_value(v)]

    @st.composite
    def one(draw: st.DrawFn) -> dict[str, Any]:
        pointer = draw(st.sampled_from(pointers))
        op = draw(st.sampled_from(OPS))
        f: dict[str, Any] = {"pointer": pointer, "op": op}
        if op == "prefix":
            f["value"] = draw(st.sampled_from(strings))
        elif op in ("lt", "le", "gt", "ge"):
            f["value"] = draw(st.sampled_from(ordered))
        elif op != "exists":
            f["value"] = draw(values.filter(_spec_value))
        return f

    return one()


OPS = ["eq", "ne", "lt", "le", "gt", "ge", "exists", "contains", "prefix"]
#: At most this many filters: mostly one (the results stay non-empty), sometimes none.
FILTERS = st.sampled_from([0, 1, 1, 1, 2, 3])


def _spec_value(value: object) -> bool:
    """Filter values a spec can hold (finite, ints within +-2**64, no lone surrogates:
    msgspec refuses those in a payload)."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return False

    def small(v: object) -> bool:
        if isinstance(v, int) and not isinstance(v, bool):
            return abs(v) <= 2**64
        if isinstance(v, list):
            return all(small(x) for x in v)
        if isinstance(v, dict):
            return all(small(x) for x in v.values())
        return True

    return small(value)


PATHS = ["/p", "/p/1", "/p/2", "/p/10", "/p/a/b", "/p!", "/pa", "/q/1", "/q/é", "/r"]
rooms = st.dictionaries(
    st.sampled_from(PATHS),
    st.one_of(encoded(), encoded(), encoded(), encoded(), st.none()),  # 1 in 5 a tombstone
    min_size=1,
    max_size=len(PATHS),
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, bytes | None], dict[str, Any]]:
    """A room and a spec whose filter values are often values of the room."""
    values = draw(rooms)
    pointers = _pointers(values)
    spec: dict[str, Any] = {
        "prefix": draw(st.sampled_from(["/", "/", "/p", "/p/", "/q"])),
        "filters": draw(st.lists(_filters(_seen(values), pointers), max_size=draw(FILTERS))),
        "limit": draw(st.integers(1, 4)),
    }
    if draw(st.booleans()):
        spec["order"] = {
            "pointer": draw(st.sampled_from(pointers)),
            "dir": draw(st.sampled_from(["asc", "desc"])),
        }
    if draw(st.integers(0, 3)) == 0:
        spec["project"] = draw(st.lists(st.sampled_from(pointers), max_size=3))
    return values, spec


class Harness:
    """One SQLite store on an event loop of its own, a fresh room per example."""

    #: SQL decides compound ``eq``/``ne``/``contains`` values exactly (none dropped).
    compound_exact = False

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.store: SqliteStore | PostgresStore = SqliteStore(path)
        self.rooms = itertools.count()
        self.loop.run_until_complete(self.store.open())
        self.sql = sqlite3.connect(":memory:")

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()
        self.sql.close()

    def write(self, values: dict[str, bytes | None]) -> tuple[str, list[Change]]:
        room = f"r{next(self.rooms)}"
        changes = [
            Change(path, 1000 + seq, 0, "w", value, seq)
            for seq, (path, value) in enumerate(sorted(values.items()), 1)
        ]
        if changes:
            self.loop.run_until_complete(self.store.append(room, changes, expected_head=0))
        return room, changes

    def pages(self, room: str, spec: QuerySpec, limit: int | None) -> Iterator[Any]:
        cursor: str | None = None
        while True:
            rows, cursor = self.loop.run_until_complete(
                self.store.run_query(room, spec, limit=limit, cursor=cursor)
            )
            assert self.store.last_query is not None
            yield rows, cursor, self.store.last_query
            if cursor is None:
                return

    def misread_by_sqlite(self, raw: bytes) -> bool:
        """Bytes SQLite takes for JSON and the core does not (its candidates the Python
        check may drop)."""
        valid = self.sql.execute("SELECT json_valid(?)", (raw,)).fetchone()[0]
        return bool(valid) and decode(raw) is NOT_JSON


class PostgresHarness(Harness):
    """The PostgreSQL store on a schema of its own: SQL reads the query images, which
    are exact, so no SQL candidate is ever dropped (no value is misread)."""

    compound_exact = True

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(create_schema(dsn, "query_equivalence"))
        self.store = PostgresStore(schema_dsn(dsn, "query_equivalence"), max_size=2)
        self.rooms = itertools.count()
        self.loop.run_until_complete(self.store.open())
        self.sql = sqlite3.connect(":memory:")

    def misread_by_sqlite(self, raw: bytes) -> bool:
        return False


@pytest.fixture(scope="module")
def pg_harness(postgres_dsn: str) -> Iterator[Harness]:
    h = PostgresHarness(postgres_dsn)
    yield h
    h.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("query") / "rooms.db")
    yield h
    h.close()


def _compound(spec: QuerySpec) -> bool:
    return any(
        f.op in ("eq", "ne", "contains") and isinstance(f.value, list | dict) for f in spec.filters
    )


def check(
    harness: Harness,
    values: dict[str, bytes | None],
    raw_spec: dict[str, Any],
    limit: int | None,
    *,
    record: bool = True,
) -> None:
    """Page through ``raw_spec`` over ``values`` in SQLite and in the core: equal pages,
    and no SQL candidate dropped where SQLite reads every value as the core does."""
    room, changes = harness.write(values)
    misread = any(v is not None and harness.misread_by_sqlite(v) for v in values.values())
    compare(harness, room, changes, parse_spec(raw_spec), limit, misread=misread, record=record)


def compare(
    harness: Harness,
    room: str,
    changes: list[Change],
    spec: QuerySpec,
    limit: int | None,
    *,
    misread: bool,
    record: bool = False,
) -> None:
    exact_sql = not misread and (harness.compound_exact or not _compound(spec))
    cursor: str | None = None
    pages = total = 0
    for rows, next_cursor, stats in harness.pages(room, spec, limit):
        want = evaluate(spec, changes, limit=limit, cursor=cursor)
        assert (rows, next_cursor) == want, (spec.to_json(), cursor)
        if exact_sql and stats.pushed_down:
            assert stats.dropped == 0, (spec.to_json(), stats)
        cursor = next_cursor
        pages += 1
        assert pages <= len(changes) + 1  # every page moves on
        total += len(rows)
    if record:
        event(f"rows: {min(total, 3)}, pages: {min(pages, 3)}")


EXAMPLES = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@EXAMPLES
@given(case=cases(), limit=st.one_of(st.none(), st.integers(1, 3)))
def test_sqlite_push_down_equals_the_core_evaluator(
    harness: Harness, case: tuple[dict[str, bytes | None], dict[str, Any]], limit: int | None
) -> None:
    check(harness, *case, limit)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases())
def test_the_cast_to_text_of_sqlite_3_45_answers_alike(
    harness: Harness,
    case: tuple[dict[str, bytes | None], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From SQLite 3.45 the values are cast to TEXT for the JSON functions (a BLOB would
    be read as JSONB); the same answers with the cast on this SQLite too."""
    with monkeypatch.context() as m:
        m.setattr(sqlite_query, "_DOC", "CAST(entries.value AS TEXT)")
        check(harness, *case, None)


def test_every_shape_of_spec_is_pushed_down_or_said_not_to_be(harness: Harness) -> None:
    values: dict[str, bytes | None] = {
        "/p/1": b'{"a": [1, {"b": 2}], "n": 1}',
        "/p/2": b'{"a": {"0": 5}, "n": "1"}',
        "/p/3": b'{"\\u0061": 1, "n": true}',
        "/p/4": b"\xff",
        "/p/5": None,
    }
    shapes = [
        {},
        {"filters": [{"pointer": "/n", "op": "eq", "value": 1}]},
        {"order": {"pointer": "/n", "dir": "desc"}},
        {"filters": [{"pointer": "/a/0", "op": "exists"}], "order": {"pointer": "/n"}},
        {"filters": [{"pointer": DEEP, "op": "exists"}]},
    ]
    for raw in shapes:
        check(harness, values, raw, None, record=False)
    room, _ = harness.write(values)
    pages = list(harness.pages(room, parse_spec({"order": {"pointer": DEEP}}), None))
    assert pages[-1][2].pushed_down is False
    pages = list(
        harness.pages(room, parse_spec({"filters": [{"pointer": "/a", "op": "exists"}]}), None)
    )
    rows, _, stats = pages[0]
    assert [r["path"] for r in rows] == ["/p/1", "/p/2", "/p/3"]
    assert stats.pushed_down and stats.in_python == 1  # the escaped key: the core decides


#: The grid: each value of the pool (and a few compound ones) in one room, at the top,
#: under ``/a`` and in the array ``/b``, written both ways (escaped or not).
GRID_VALUES: list[Any] = [*POOL, [], {}, [1], [1.0, "a"], {"a": 1}, {"a": 1.0}, 10**400]
GRID_POINTERS = ["", "/a", "/b", "/b/0", "/c"]


def _grid_room(*, misread: bool) -> dict[str, bytes | None]:
    values: dict[str, bytes | None] = {}
    for i, v in enumerate(GRID_VALUES):
        ascii_ = i % 2 == 0
        values[f"/g/{i:02d}"] = json.dumps({"a": v, "b": [v]}, ensure_ascii=ascii_).encode()
        values[f"/t/{i:02d}"] = json.dumps(v, ensure_ascii=not ascii_).encode()
    values["/g/raw"] = b"\xff"
    values["/g/gone"] = None
    if not misread:
        return values
    # JSON to SQLite (with /a a number), not to the core: ranked last, never matched.
    values["/g/utf8"] = b'{"a": -3, "b": ["\xff"]}'
    values["/g/nul"] = b'{"a": -4}\x00junk'
    values["/g/deep"] = b'{"a": -5, "d": ' + b"[" * 600 + b"]" * 600 + b"}"
    return values


def _grid_specs() -> Iterator[dict[str, Any]]:
    usable = [v for v in GRID_VALUES if _spec_value(v)]
    for pointer in GRID_POINTERS:
        yield {"filters": [{"pointer": pointer, "op": "exists"}]}
        for op in OPS:
            if op == "exists":
                continue
            for value in usable:
                if op == "prefix" and not isinstance(value, str):
                    continue
                ordered = isinstance(value, int | float | str) and not isinstance(value, bool)
                if op in ("lt", "le", "gt", "ge") and not ordered:
                    continue
                yield {"filters": [{"pointer": pointer, "op": op, "value": value}]}
        for direction in ("asc", "desc"):
            yield {"order": {"pointer": pointer, "dir": direction}, "limit": 3}
            yield {
                "order": {"pointer": pointer, "dir": direction},
                "filters": [{"pointer": pointer, "op": "exists"}],
                "limit": 2,
            }


@pytest.mark.parametrize("misread", [False, True], ids=["exact-sql", "misread-values"])
def test_every_op_and_value_of_the_grid_answers_alike(harness: Harness, misread: bool) -> None:
    """Deterministic and exhaustive where random rooms are thin: each op with each value
    on each pointer over one room holding each value (both evaluators, every page); with
    ``misread``, also values SQLite reads as JSON and the core does not."""
    room, changes = harness.write(_grid_room(misread=misread))
    for raw in _grid_specs():
        compare(harness, room, changes, parse_spec(raw), None, misread=misread)
        compare(harness, room, changes, parse_spec({**raw, "prefix": "/g"}), 5, misread=misread)


@EXAMPLES
@given(case=cases(), limit=st.one_of(st.none(), st.integers(1, 3)))
def test_postgres_push_down_equals_the_core_evaluator(
    pg_harness: Harness, case: tuple[dict[str, bytes | None], dict[str, Any]], limit: int | None
) -> None:
    check(pg_harness, *case, limit)


@pytest.mark.parametrize("misread", [False, True], ids=["plain", "not-json-to-the-core"])
def test_every_op_and_value_of_the_grid_answers_alike_in_postgres(
    pg_harness: Harness, misread: bool
) -> None:
    """The grid on PostgreSQL; the values SQLite misreads are simply not JSON to the
    query images, and SQL still drops none of its candidates."""
    room, changes = pg_harness.write(_grid_room(misread=misread))
    for raw in _grid_specs():
        compare(pg_harness, room, changes, parse_spec(raw), None, misread=False)
        compare(pg_harness, room, changes, parse_spec({**raw, "prefix": "/g"}), 5, misread=False)
