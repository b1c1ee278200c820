"""Query specs (SPEC §6 ``query``) pushed down into PostgreSQL ``jsonb``.

:func:`run` answers exactly what :func:`roomsync.core.query.evaluate` answers over the
room's live entries (``tests/storage/test_query_equivalence.py`` holds it to that).

PostgreSQL reads JSON differently from the core in several ways (a repeated key keeps
its *last* value, ``numeric`` is exact where the core compares doubles, ``\\u0000`` and
lone surrogates are refused, text compares by collation, ``#>`` takes ``-1`` or ``01`` as
array indexes). So SQL never reads an entry's bytes: each entry carries a **query
image**, written with it by the store (:func:`image`): the value as the core decodes it
(first key wins, escapes resolved, every number turned into the double the core compares
it as), serialised again as JSON text and stored as ``jsonb``. On an image ``jsonb``
equality, ``jsonb_typeof``, ``::float8`` and ``COLLATE "C"`` text comparison decide
exactly what the core decides. The entry's ``kind`` says what the image is:

- :data:`KIND_NOT_JSON` (0): the core does not call the value JSON: no image, no filter
  matches it, it ranks with "the others";
- :data:`KIND_IMAGE` (1): the image decides in SQL;
- :data:`KIND_CORE` (2): JSON that has no exact image (a string or key with ``\\u0000``
  or a lone surrogate, a number beyond the double range): the core evaluates it.

Without an order: one scan in path order passing the image rows that pass the filters
(and the kind-2 rows, which the core confirms), page by page. With an order: the kind-2
rows of the range are evaluated by the core, SQL ranks the others (``ORDER BY`` rank,
value, path ``LIMIT``), and both lists are merged by the core's sort key. Every row SQL
selects is decoded by the core anyway (the answer is built from it) and checked once
more; on an exact image none is ever dropped (:class:`QueryStats` ``dropped``).

A spec is not pushed down (the core evaluates the whole range) when a pointer token looks
like an integer to PostgreSQL without being an array index to the core (``-1``, ``01``,
``+2``, `` 3``), when a value or the cursor holds a string PostgreSQL cannot hold in an
ordered comparison, or when the database encoding is not UTF-8.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any, Final

from ..core.query import (
    Candidate,
    Filter,
    Json,
    NotJson,
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
from .sqlite_query import QueryStats

__all__ = ["KIND_CORE", "KIND_IMAGE", "KIND_NOT_JSON", "QueryStats", "image", "run"]

KIND_NOT_JSON: Final = 0
KIND_IMAGE: Final = 1
KIND_CORE: Final = 2

_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")
# What PostgreSQL's strtoint() reads as an array index (leading blanks, a sign, zeros).
_PG_INT = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+")


class _NoImage(Exception):
    """The value has no exact image."""


class _Unpushable(Exception):
    """A spec (or cursor) this module leaves to the core evaluator."""


def _text_ok(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _canon(value: Json) -> Json:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise _NoImage from None
        if math.isinf(number):
            raise _NoImage
        return number
    if isinstance(value, str):
        if not _text_ok(value):
            raise _NoImage
        return value
    if isinstance(value, list):
        return [_canon(v) for v in value]
    out: dict[str, Json] = {}
    for key, item in value.items():
        if not _text_ok(key):
            raise _NoImage
        out[key] = _canon(item)
    return out


def _image_text(value: Json) -> str:
    return json.dumps(_canon(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def image(raw: bytes | None) -> tuple[int, str | None]:
    """``(kind, image)`` of an entry's value (see the module docstring); tombstones are
    never rows: kind 0."""
    if raw is None:
        return KIND_NOT_JSON, None
    doc = decode(raw)
    if isinstance(doc, NotJson):
        return KIND_NOT_JSON, None
    try:
        return KIND_IMAGE, _image_text(doc)
    except (_NoImage, RecursionError):
        return KIND_CORE, None


class _Sql:
    """Positional parameters of one statement."""

    def __init__(self, room: str) -> None:
        self.params: list[object] = [room]

    def bind(self, value: object, cast: str = "") -> str:
        self.params.append(value)
        return f"${len(self.params)}{cast}"


def _target(sql: _Sql, pointer: Pointer) -> str:
    """The pointer on the image: ``jsonb`` or NULL when absent."""
    tokens = list(pointer.tokens)
    for token in tokens:
        if not _INDEX.fullmatch(token) and _PG_INT.fullmatch(token):
            raise _Unpushable
        if not _text_ok(token):
            return "NULL::jsonb"  # no key of an image is like it, and it is no index
    if not tokens:
        return "doc"
    return f"(doc #> {sql.bind(tokens, '::text[]')})"


def _value(sql: _Sql, value: Json) -> str | None:
    """The filter value's image as a ``jsonb`` parameter, or None when it has none (so
    no image equals it)."""
    try:
        return sql.bind(_image_text(value), "::jsonb")
    except _NoImage:
        return None


def _has_image(value: Json) -> bool:
    try:
        _canon(value)
    except _NoImage:
        return False
    return True


def _string(sql: _Sql, value: str) -> str:
    if not _text_ok(value):
        raise _Unpushable
    return sql.bind(value, "::text")


_COMPARE: Final = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _filter(sql: _Sql, f: Filter) -> str:
    """SQL for one filter on an image row (true or false, never NULL). A filter that no
    image can pass is ``false`` before its pointer is bound (a parameter SQL does not
    use has no type)."""
    if f.op == "eq" and not _has_image(f.value):
        return "false"
    if f.op == "prefix" and not (isinstance(f.value, str) and _text_ok(f.value)):
        return "false"
    t = _target(sql, f.pointer)
    if f.op == "exists":
        return f"({t} IS NOT NULL)"
    if f.op in ("eq", "ne"):
        v = _value(sql, f.value)
        if f.op == "eq":
            assert v is not None
            return f"COALESCE({t} = {v}, false)"
        return f"({t} IS NOT NULL)" if v is None else f"COALESCE({t} <> {v}, false)"
    if f.op in _COMPARE:
        op = _COMPARE[f.op]
        if isinstance(f.value, str):
            s = _string(sql, f.value)
            return (
                f"(CASE WHEN jsonb_typeof({t}) = 'string' "
                f"THEN ({t} #>> '{{}}') COLLATE \"C\" {op} {s} ELSE false END)"
            )
        assert isinstance(f.value, int | float)
        try:
            number = float(f.value)
        except OverflowError:
            number = math.inf if f.value > 0 else -math.inf
        n = sql.bind(number, "::float8")
        return (
            f"(CASE WHEN jsonb_typeof({t}) = 'number' THEN ({t})::float8 {op} {n} ELSE false END)"
        )
    if f.op == "prefix":
        assert isinstance(f.value, str)
        s = sql.bind(f.value, "::text")
        return (
            f"(CASE WHEN jsonb_typeof({t}) = 'string' "
            f"THEN starts_with({t} #>> '{{}}', {s}) ELSE false END)"
        )
    assert f.op == "contains"
    v = _value(sql, f.value)
    in_array = (
        "false"
        if v is None
        else f"EXISTS (SELECT 1 FROM jsonb_array_elements({t}) e WHERE e = {v})"
    )
    in_string = "false"
    if isinstance(f.value, str) and _text_ok(f.value):
        in_string = f"strpos({t} #>> '{{}}', {sql.bind(f.value, '::text')}) > 0"
    return (
        f"(CASE jsonb_typeof({t}) WHEN 'string' THEN {in_string} "
        f"WHEN 'array' THEN {in_array} ELSE false END)"
    )


def _range(sql: _Sql, prefix: str) -> str:
    """The prefix (segment-wise, SPEC §1) as a range of the primary key (``COLLATE
    "C"``): the prefix itself and ``[prefix/, prefix0)``."""
    if prefix == "/":
        return "true"
    if not _text_ok(prefix):
        raise _Unpushable
    p, below, end = sql.bind(prefix), sql.bind(prefix + "/"), sql.bind(prefix + "0")
    return f"path >= {p} AND path < {end} AND (path = {p} OR path >= {below})"


def _confirm(spec: QuerySpec, path: str, raw: bytes, stats: QueryStats) -> Candidate | None:
    doc = decode(raw)
    stats.candidates += 1
    if not matches(spec, doc):
        stats.dropped += 1
        return None
    return sort_key(spec, path, doc), row_of(spec, path, doc, raw)


async def _in_path_order(
    conn: Any, room: str, spec: QuerySpec, count: int, after: SortKey | None, stats: QueryStats
) -> list[Candidate]:
    sql = _Sql(room)
    where = ["room = $1", "value IS NOT NULL", _range(sql, spec.prefix)]
    if spec.filters:
        test = " AND ".join(_filter(sql, f) for f in spec.filters)
        where.append(f"(kind = {KIND_CORE} OR (kind = {KIND_IMAGE} AND {test}))")
    cursor = sql.bind(None if after is None else after[2], "::text")
    where.append(f"({cursor} IS NULL OR path > {cursor})")
    limit = sql.bind(count, "::int")
    text = (
        f"SELECT path, value, kind FROM entries WHERE {' AND '.join(where)} "
        f"ORDER BY path LIMIT {limit}"
    )
    found: list[Candidate] = []
    position = len(sql.params) - 2  # the cursor's parameter
    while True:
        rows = await conn.fetch(text, *sql.params)
        for path, raw, kind in rows:
            if kind == KIND_CORE and spec.filters:
                stats.in_python += 1
                doc = decode(raw)
                if matches(spec, doc):
                    found.append((sort_key(spec, path, doc), row_of(spec, path, doc, raw)))
            else:
                candidate = _confirm(spec, path, raw, stats)
                if candidate is not None:
                    found.append(candidate)
            if len(found) >= count:
                return found
        if len(rows) < count:
            return found
        sql.params[position] = rows[-1][0]


def _after(sql: _Sql, spec: QuerySpec, key: SortKey | None) -> str:
    if key is None:
        return "true"
    assert spec.order is not None
    rank, value, path = key
    p = sql.bind(path, "::text")
    if rank == 2:
        return f"(k0 > 2 OR (k0 = 2 AND path > {p}))"
    r = sql.bind(rank, "::int")
    beyond = "<" if spec.order.desc else ">"
    if isinstance(value, float):
        v = sql.bind(value, "::float8")
        column = "k1"
    else:
        assert isinstance(value, str)
        v = _string(sql, value)
        column = 'k2 COLLATE "C"'
    return (
        f"(k0 > {r} OR (k0 = {r} AND ({column} {beyond} {v} OR ({column} = {v} AND path > {p}))))"
    )


async def _ranked_in_sql(
    conn: Any, room: str, spec: QuerySpec, count: int, after: SortKey | None, stats: QueryStats
) -> list[Candidate]:
    assert spec.order is not None
    sql = _Sql(room)
    where = ["room = $1", "value IS NOT NULL", f"kind <> {KIND_CORE}", _range(sql, spec.prefix)]
    if spec.filters:
        test = " AND ".join(_filter(sql, f) for f in spec.filters)
        where.append(f"kind = {KIND_IMAGE} AND {test}")
    t = _target(sql, spec.order.pointer)
    numbers, strings = (1, 0) if spec.order.desc else (0, 1)
    ranked = (
        f"SELECT path, value, CASE jsonb_typeof({t}) WHEN 'number' THEN {numbers} "
        f"WHEN 'string' THEN {strings} ELSE 2 END AS k0, "
        f"CASE WHEN jsonb_typeof({t}) = 'number' THEN ({t})::float8 END AS k1, "
        f"CASE WHEN jsonb_typeof({t}) = 'string' THEN ({t} #>> '{{}}') END AS k2 "
        f"FROM entries WHERE {' AND '.join(where)}"
    )
    direction = "DESC" if spec.order.desc else "ASC"
    condition = _after(sql, spec, after)
    limit, offset = sql.bind(count, "::int"), sql.bind(0, "::int")
    text = (
        f"SELECT path, value FROM ({ranked}) ranked WHERE {condition} "
        f'ORDER BY k0, k1 {direction}, k2 COLLATE "C" {direction}, path '
        f"LIMIT {limit} OFFSET {offset}"
    )
    found: list[Candidate] = []
    read = 0
    while True:
        sql.params[-1] = read
        rows = await conn.fetch(text, *sql.params)
        for path, raw in rows:
            candidate = _confirm(spec, path, raw, stats)
            if candidate is not None:
                found.append(candidate)
        if len(found) >= count or len(rows) < count:
            return found[:count]
        read += len(rows)  # the core dropped some (never on exact images): read on


async def _in_python(
    conn: Any,
    room: str,
    spec: QuerySpec,
    count: int,
    after: SortKey | None,
    stats: QueryStats,
    only_core: bool,
) -> list[Candidate]:
    sql = _Sql(room)
    prefix = "true" if spec.prefix == "/" or not _text_ok(spec.prefix) else _range(sql, spec.prefix)
    kinds = f" AND kind = {KIND_CORE}" if only_core else ""
    text = (
        f"SELECT path, value FROM entries WHERE room = $1 AND value IS NOT NULL "
        f"AND {prefix}{kinds} ORDER BY path"
    )
    rows = await conn.fetch(text, *sql.params)
    stats.in_python += len(rows)
    pairs: Iterable[tuple[str, bytes]] = ((path, raw) for path, raw in rows)
    return select(spec, pairs, after=after, count=count, in_order=spec.order is None)


async def run(
    conn: Any,
    room: str,
    spec: QuerySpec,
    *,
    limit: int | None = None,
    cursor: str | None = None,
    pushdown: bool = True,
) -> tuple[list[dict[str, object]], str | None, QueryStats]:
    """One page of ``spec`` over ``room``'s live entries: ``(rows, next_cursor, stats)``,
    equal to :func:`roomsync.core.query.evaluate`'s answer. Call inside one read
    transaction (one snapshot) on an asyncpg connection. :class:`ValueError` (or
    :class:`~roomsync.core.query.QueryCursorError`) for a bad ``limit`` or ``cursor``."""
    n = checked_limit(spec, limit)
    after = None if cursor is None else cursor_key(spec, cursor)
    stats = QueryStats()
    count = n + 1
    try:
        if not pushdown:
            raise _Unpushable
        if spec.order is None:
            found = await _in_path_order(conn, room, spec, count, after, stats)
        else:
            found = await _in_python(conn, room, spec, count, after, stats, only_core=True)
            found += await _ranked_in_sql(conn, room, spec, count, after, stats)
            found = sort_candidates(spec, found)[:count]
    except _Unpushable:
        stats = QueryStats(pushed_down=False)
        found = await _in_python(conn, room, spec, count, after, stats, only_core=False)
    rows, next_cursor = page(spec, found, n)
    return rows, next_cursor, stats
