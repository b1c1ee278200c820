"""Query specs (SPEC §6 ``query``) pushed down into SQLite's JSON functions.

:func:`run` answers exactly what :func:`roomsync.core.query.evaluate` answers over the
room's live entries (``tests/storage/test_query_equivalence.py`` holds it to that): SQL
does the bulk of the work, the core confirms what SQL does not decide alone. A call runs
on the store's reader thread inside one read transaction (one snapshot), over the prefix
as a range of the primary key (``path >= prefix AND path < prefix || '0'``).

How SQL reads a value: the filters and the order become ``json_valid`` / ``json_type`` /
``json_extract`` / ``json_each`` expressions. ``json_type`` keeps the JSON types apart
(``"1"`` is ``text``, ``1`` is ``integer``, ``true`` is ``true``: neither equals the
number 1, although ``json_extract`` gives 1 for both ``1`` and ``true``); numbers compare
as ``CAST(... AS REAL)`` (doubles, as in the core), strings as BINARY text, which is
code-point order. Every row SQL selects is decoded by the core anyway (the answer is built
from it) and checked against the spec once more, and dropped if it fails: SQLite calls
some bytes JSON that the core does not (not UTF-8, a NUL byte after a JSON text, nesting
deeper than :data:`~roomsync.core.query.MAX_DEPTH`), and an ``eq``/``ne``/``contains``
with an array or object value is only narrowed by type in SQL.

Where SQLite reads a value differently, the core alone evaluates it (the *unsafe*
values, picked by :func:`_unsafe`, a Python function that :func:`install` registers): an
object key written with a backslash escape (SQLite 3.40 compares a path's labels with the
raw key text, so ``{"\\u0061": 1}`` has no ``$.a``) and a ``\\u0000`` escape (SQLite
cuts the text there). SQL hands the function only values with a backslash that has a
``:`` or a ``\\u0000`` after it. With an order but no filters a misread value would be
mis-ranked rather than dropped, so then every value the core would not call JSON is
unsafe too, which costs the function call for every entry.

- **Without an order**: one scan in path order (the primary key's). SQL passes the values
  that pass the filters or are unsafe; the core confirms each; it stops at the page.
- **With an order**: first the unsafe values of the range, evaluated by the core; then
  SQL ranks the others (``ORDER BY`` rank, value, path ``LIMIT``) reading past the unsafe
  ones, whose SQL rank may be wrong; the core confirms each row, and SQL reads on while
  it drops some. Both lists are merged by the core's sort key.

Either way the page and its cursor are the core's. A pointer with more than four
array-index-like tokens (``/0`` is an index on an array and a key on an object, so ``2**k``
SQL paths) is not pushed down: the core evaluates the whole range. A token SQLite cannot
name (with a ``"``, a backslash, a control character or a lone surrogate) can only match
a key written with escapes, which makes the value unsafe, so in SQL that pointer is
absent.

Values are stored as BLOBs; SQLite before 3.45 reads a BLOB given to its JSON functions as
JSON text, from 3.45 on as JSONB, so there they are cast to TEXT first.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from ..core.query import (
    MAX_DEPTH,
    Candidate,
    Filter,
    Pointer,
    QuerySpec,
    SortKey,
    checked_limit,
    cursor_key,
    decode,
    matches,
    page,
    row_of,
    select,
    sort_candidates,
    sort_key,
)

__all__ = ["UNSAFE_FUNCTION", "QueryStats", "install", "run"]

#: The SQL function :func:`install` registers.
UNSAFE_FUNCTION: Final = "roomsync_query_unsafe"
# The value as JSON text for SQLite's JSON functions. Before 3.45 they read a BLOB as
# text (and a CAST would copy every value for each call); from 3.45 a BLOB means JSONB.
_DOC = "entries.value" if sqlite3.sqlite_version_info < (3, 45) else "CAST(entries.value AS TEXT)"
# 2**4 SQL paths per pointer at most (see the module docstring).
_MAX_PATHS: Final = 16
_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")
# A key (a string followed by ":") with a backslash in it. Possessive, so linear per
# start; a start inside a string (at an escaped quote) can only find that same string.
_ESCAPED_KEY = re.compile(rb'"[^"\\]*+\\.(?:[^"\\]|\\.)*+"\s*+:', re.DOTALL)
_NUMBER = "('integer', 'real')"


def _unsafe(value: object, full: object) -> int:
    """1 when the core must evaluate ``value`` (see the module docstring); never raises
    (an exception in an SQL function would fail the query)."""
    if not isinstance(value, bytes):
        return 0
    if full:
        if b"\x00" in value or value.count(b"[") + value.count(b"{") > MAX_DEPTH:
            return 1
        if not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return 1
    if b"\\" in value and (b"\\u0000" in value or _ESCAPED_KEY.search(value) is not None):
        return 1
    return 0


def install(conn: sqlite3.Connection) -> None:
    """Register the SQL function :func:`run` needs on ``conn`` (once per connection)."""
    conn.create_function(UNSAFE_FUNCTION, 2, _unsafe, deterministic=True)


@dataclass(slots=True)
class QueryStats:
    """What the last :func:`run` did: rows SQL selected (``candidates``) and those of
    them Python dropped (``dropped``), values evaluated in Python (``in_python``), and
    whether SQL took part at all (``pushed_down``)."""

    pushed_down: bool = True
    candidates: int = 0
    dropped: int = 0
    in_python: int = 0


class _Unpushable(Exception):
    """A spec this module leaves to the core evaluator."""


def _text(value: str) -> bytes:
    """A string as SQLite holds it: UTF-8, lone surrogates as SQLite's JSON functions
    write them (bound as a BLOB and cast, so such a string can be bound at all)."""
    return value.encode("utf-8", "surrogatepass")


@dataclass(slots=True)
class _Sql:
    """Named parameters of one statement."""

    params: dict[str, object] = field(default_factory=dict)

    def bind(self, value: object) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return ":" + name

    def text(self, value: str) -> str:
        return f"CAST({self.bind(_text(value))} AS TEXT)"


@dataclass(frozen=True, slots=True)
class _Target:
    """A pointer in SQL: its type (``json_type``: NULL when absent), its SQL value and
    its path (for ``json_each``)."""

    type: str
    value: str
    path: str


def _nameable(token: str) -> bool:
    return not any(c in '"\\' or c < " " or "\ud800" <= c <= "\udfff" for c in token)


def _target(sql: _Sql, pointer: Pointer) -> _Target:
    paths = ["$"]
    for token in pointer.tokens:
        if not _nameable(token):
            return _Target("NULL", "NULL", "NULL")
        key = f'."{token}"'
        if _INDEX.fullmatch(token):
            paths = [p + step for p in paths for step in (key, f"[{token}]")]
        else:
            paths = [p + key for p in paths]
        if len(paths) > _MAX_PATHS:
            raise _Unpushable
    names = [sql.bind(p) for p in paths]
    if len(names) == 1:
        return _Target(
            f"json_type({_DOC}, {names[0]})", f"json_extract({_DOC}, {names[0]})", names[0]
        )
    # At most one of the paths exists in a value: they part where one reads an array
    # index and another an object key of the same container.
    found = [f"json_type({_DOC}, {n}) IS NOT NULL" for n in names]
    kind = "COALESCE(" + ", ".join(f"json_type({_DOC}, {n})" for n in names) + ")"
    value = (
        "CASE "
        + " ".join(
            f"WHEN {f} THEN json_extract({_DOC}, {n})" for f, n in zip(found, names, strict=True)
        )
        + " END"
    )
    path = (
        "CASE " + " ".join(f"WHEN {f} THEN {n}" for f, n in zip(found, names, strict=True)) + " END"
    )
    return _Target(kind, value, path)


def _equal(sql: _Sql, kind: str, value: str, want: object) -> str:
    """SQL for "the JSON value of type ``kind`` (a ``json_type``) and SQL value
    ``value`` equals ``want``"; for an array or object only its type (Python decides).

    The SQL value is tested first and the type only for the rows that pass: the test
    is true for every equal value and for some others (``true`` reads as 1, the text
    ``"1x"`` casts to 1.0), which the type then refuses.
    """
    if want is None:
        return f"(CASE WHEN {value} IS NULL THEN {kind} = 'null' ELSE 0 END)"
    if isinstance(want, bool):
        return f"(CASE WHEN {value} = {int(want)} THEN {kind} = '{str(want).lower()}' ELSE 0 END)"
    if isinstance(want, int | float):
        number = sql.bind(float(want))
        return f"(CASE WHEN CAST({value} AS REAL) = {number} THEN {kind} IN {_NUMBER} ELSE 0 END)"
    if isinstance(want, str):
        return f"(CASE WHEN {value} = {sql.text(want)} THEN {kind} = 'text' ELSE 0 END)"
    return f"({kind} = '{'array' if isinstance(want, list) else 'object'}')"


_COMPARE: Final = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _filter(sql: _Sql, f: Filter) -> str:
    """SQL for one filter, for a value known to be valid JSON (a 0/1, never NULL)."""
    t = _target(sql, f.pointer)
    if f.op == "exists":
        return f"({t.type} IS NOT NULL)"
    if f.op == "eq":
        return _equal(sql, t.type, t.value, f.value)
    if f.op == "ne":
        if isinstance(f.value, list | dict):  # eq is only narrowed by type: Python decides
            return f"({t.type} IS NOT NULL)"
        return f"({t.type} IS NOT NULL AND NOT {_equal(sql, t.type, t.value, f.value)})"
    if f.op in _COMPARE:
        op = _COMPARE[f.op]
        if isinstance(f.value, str):
            text = sql.text(f.value)
            return f"(CASE WHEN {t.value} {op} {text} THEN {t.type} = 'text' ELSE 0 END)"
        assert isinstance(f.value, int | float)
        number = sql.bind(float(f.value))
        return (
            f"(CASE WHEN CAST({t.value} AS REAL) {op} {number} THEN {t.type} IN {_NUMBER} "
            "ELSE 0 END)"
        )
    if f.op == "prefix":
        assert isinstance(f.value, str)
        want = _text(f.value)
        if not want:  # every string (and substr() of an empty BLOB is NULL)
            return f"({t.type} = 'text')"
        return (
            f"(CASE WHEN substr(CAST({t.value} AS BLOB), 1, {sql.bind(len(want))}) = "
            f"{sql.bind(want)} THEN {t.type} = 'text' ELSE 0 END)"
        )
    assert f.op == "contains"
    element = _equal(sql, "type", "atom", f.value)
    in_array = f"EXISTS (SELECT 1 FROM json_each({_DOC}, {t.path}) WHERE {element})"
    if isinstance(f.value, str):
        return (
            f"(CASE {t.type} WHEN 'text' THEN instr(CAST({t.value} AS BLOB), "
            f"{sql.bind(_text(f.value))}) > 0 WHEN 'array' THEN {in_array} ELSE 0 END)"
        )
    return f"(CASE WHEN {t.type} = 'array' THEN {in_array} ELSE 0 END)"


def _range(sql: _Sql, prefix: str) -> str:
    """The prefix (segment-wise, SPEC §1) as a range of the primary key: the prefix
    itself and ``[prefix/, prefix0)`` ("0" is the code point after "/")."""
    if prefix == "/":
        return "1"
    p, below, end = sql.bind(prefix), sql.bind(prefix + "/"), sql.bind(prefix + "0")
    return f"path >= {p} AND path < {end} AND (path = {p} OR path >= {below})"


def _unsafe_sql(full: bool) -> str:
    """SQL true for the values :func:`_unsafe` would name (it decides; the SQL only
    spares it the values with no backslash, or whose backslashes have no ``:`` and no
    ``\\u0000`` after them, which it would pass anyway)."""
    if full:
        return f"{UNSAFE_FUNCTION}(value, 1)"
    return (
        "(CASE WHEN instr(value, x'5c') = 0 THEN 0 "
        "WHEN instr(value, x'5c7530303030') = 0 "
        "AND instr(substr(value, instr(value, x'5c')), x'3a') = 0 THEN 0 "
        f"ELSE {UNSAFE_FUNCTION}(value, 0) END)"
    )


def _after(sql: _Sql, spec: QuerySpec, key: SortKey | None) -> str:
    if key is None:
        return "1"
    rank, value, path = key
    p = sql.bind(path)
    if spec.order is None:
        return f"path > {p}"
    if rank == 2:
        return f"(k0 = 2 AND path > {p})"
    r = sql.bind(rank)
    v = sql.bind(value) if isinstance(value, float) else sql.text(str(value))
    beyond = "<" if spec.order.desc else ">"
    return f"(k0 > {r} OR (k0 = {r} AND (k1 {beyond} {v} OR (k1 = {v} AND path > {p}))))"


def _confirm(
    spec: QuerySpec, path: str, raw: bytes, stats: QueryStats, *, unsafe: bool
) -> Candidate | None:
    """The core's verdict on a row SQL selected (see the module docstring)."""
    doc = decode(raw)
    if unsafe:
        stats.in_python += 1
    else:
        stats.candidates += 1
    if not matches(spec, doc):
        if not unsafe:
            stats.dropped += 1
        return None
    return sort_key(spec, path, doc), row_of(spec, path, doc, raw)


def _in_path_order(
    conn: sqlite3.Connection,
    room: str,
    spec: QuerySpec,
    count: int,
    after: SortKey | None,
    stats: QueryStats,
) -> list[Candidate]:
    """Without an order: one scan in path order (the primary key's), SQL passing the
    values that pass the filters or that only the core can judge, the core confirming
    each, until ``count`` rows qualify."""
    sql = _Sql()
    where = [f"room = :room AND {_range(sql, spec.prefix)} AND value IS NOT NULL"]
    where.append(_after(sql, spec, after))
    if spec.filters:
        test = " AND ".join(_filter(sql, f) for f in spec.filters)
        where.append(
            f"({_unsafe_sql(full=False)} OR CASE WHEN json_valid({_DOC}) THEN {test} ELSE 0 END)"
        )
    text = f"SELECT path, value FROM entries WHERE {' AND '.join(where)} ORDER BY path"
    found: list[Candidate] = []
    for path, raw in conn.execute(text, {**sql.params, "room": room}):
        unsafe = bool(spec.filters) and _unsafe(raw, False) == 1
        candidate = _confirm(spec, path, raw, stats, unsafe=unsafe)
        if candidate is not None:
            found.append(candidate)
            if len(found) >= count:
                break
    return found


def _top_in_sql(
    conn: sqlite3.Connection,
    room: str,
    spec: QuerySpec,
    count: int,
    after: SortKey | None,
    stats: QueryStats,
    skip: set[str],
) -> list[Candidate]:
    """With an order: the first ``count`` rows in SQL's ranking, each confirmed by the
    core, reading on while the core drops some. The rows of ``skip`` (the unsafe ones,
    evaluated by the core alone, whose SQL rank may be wrong) are read past: the first
    batch is that much bigger, so they displace no other row."""
    assert spec.order is not None
    sql = _Sql()
    where = [f"room = :room AND {_range(sql, spec.prefix)} AND value IS NOT NULL"]
    if spec.filters:
        test = " AND ".join(_filter(sql, f) for f in spec.filters)
        where.append(f"(CASE WHEN json_valid({_DOC}) THEN {test} ELSE 0 END)")
    t = _target(sql, spec.order.pointer)
    numbers, strings = (1, 0) if spec.order.desc else (0, 1)
    rank = (
        f"CASE WHEN json_valid({_DOC}) THEN CASE {t.type} WHEN 'integer' THEN {numbers} "
        f"WHEN 'real' THEN {numbers} WHEN 'text' THEN {strings} ELSE 2 END ELSE 2 END"
    )
    value = (
        f"CASE WHEN json_valid({_DOC}) THEN CASE {t.type} WHEN 'integer' THEN "
        f"CAST({t.value} AS REAL) WHEN 'real' THEN CAST({t.value} AS REAL) "
        f"WHEN 'text' THEN {t.value} END END"
    )
    text = (
        f"SELECT path, value FROM (SELECT path, value, {rank} AS k0, {value} AS k1 "
        f"FROM entries WHERE {' AND '.join(where)}) WHERE {_after(sql, spec, after)} "
        f"ORDER BY k0, k1 {'DESC' if spec.order.desc else 'ASC'}, path "
        "LIMIT :limit OFFSET :offset"
    )
    params = {**sql.params, "room": room}
    found: list[Candidate] = []
    offset, batch = 0, count + len(skip)
    while True:
        rows = conn.execute(text, {**params, "limit": batch, "offset": offset}).fetchall()
        for path, raw in rows:
            if path in skip:
                continue
            candidate = _confirm(spec, path, raw, stats, unsafe=False)
            if candidate is not None:
                found.append(candidate)
        if len(found) >= count or len(rows) < batch:
            return found[:count]
        # The core dropped some: read on (rare; the order is total, the snapshot fixed).
        offset += len(rows)
        batch = min(batch * 2, 4096)


def _in_python(
    conn: sqlite3.Connection,
    room: str,
    spec: QuerySpec,
    count: int,
    after: SortKey | None,
    stats: QueryStats,
    condition: str,
    seen: set[str] | None = None,
) -> list[Candidate]:
    """The first ``count`` rows among the range's values that meet the SQL
    ``condition`` (the unsafe ones, or all), evaluated by the core alone; the paths it
    read go into ``seen``."""
    sql = _Sql()
    text = (
        f"SELECT path, value FROM entries WHERE room = :room AND {_range(sql, spec.prefix)} "
        f"AND value IS NOT NULL AND {condition} ORDER BY path"
    )

    def pairs() -> Iterator[tuple[str, bytes]]:
        for path, raw in conn.execute(text, {**sql.params, "room": room}):
            stats.in_python += 1
            if seen is not None:
                seen.add(path)
            yield path, raw

    return select(spec, pairs(), after=after, count=count, in_order=spec.order is None)


def run(
    conn: sqlite3.Connection,
    room: str,
    spec: QuerySpec,
    *,
    limit: int | None = None,
    cursor: str | None = None,
) -> tuple[list[dict[str, object]], str | None, QueryStats]:
    """One page of ``spec`` over ``room``'s live entries: ``(rows, next_cursor, stats)``,
    equal to :func:`roomsync.core.query.evaluate`'s answer. Call inside a read
    transaction on a connection :func:`install` prepared. :class:`ValueError` (or
    :class:`~roomsync.core.query.QueryCursorError`) for a bad ``limit`` or ``cursor``."""
    n = checked_limit(spec, limit)
    after = None if cursor is None else cursor_key(spec, cursor)
    stats = QueryStats()
    count = n + 1
    try:
        if spec.order is None:
            found = _in_path_order(conn, room, spec, count, after, stats)
        else:
            # The unsafe values first: SQL's ranking reads past them.
            unsafe: set[str] = set()
            condition = _unsafe_sql(full=not spec.filters)
            found = _in_python(conn, room, spec, count, after, stats, condition, unsafe)
            found += _top_in_sql(conn, room, spec, count, after, stats, unsafe)
            found = sort_candidates(spec, found)[:count]
    except _Unpushable:
        stats = QueryStats(pushed_down=False)
        found = _in_python(conn, room, spec, count, after, stats, "1")
    rows, next_cursor = page(spec, found, n)
    return rows, next_cursor, stats
