"""Query specs and their reference evaluator (SPEC §6 ``query``; ``docs/control.md``,
"Queries").

A spec selects rows ``{path, value}`` from a room's live entries::

    {"prefix": "/todos",                                  # SPEC §1 path, segment-wise
     "filters": [{"pointer": "/done", "op": "eq", "value": false}],
     "project": ["/title", "/due"],                       # absent: the whole value
     "order": {"pointer": "/due", "dir": "asc"},          # absent: path ascending
     "limit": 100}                                        # page size, 1..1000

:func:`parse_spec` checks a spec and gives a :class:`QuerySpec`; :func:`evaluate` runs it
over entries and is *the* definition of a query's answer: every store that pushes a query
down (``roomsync.storage.sqlite_query``) must give exactly what it gives, which
``tests/storage/test_query_equivalence.py`` checks on random rooms and specs.

The rules, exactly:

- **JSON values.** An entry's value is JSON when its bytes are UTF-8 and parse as one RFC
  8259 JSON text (no ``NaN``/``Infinity``), nested at most :data:`MAX_DEPTH` deep. An
  object with a repeated key keeps the first occurrence (as SQLite reads it). Any other
  value is *not JSON*: it matches no filter; without filters it is still a row, with
  ``"value": null`` and ``"raw"``: its bytes in base64; it has no pointer, so it sorts
  with the rows missing the order pointer, and ``project`` leaves it as it is.
  Tombstones are never rows.
- **Pointers** are RFC 6901 JSON pointers into the value (``""``: the whole value); a
  token on an array is an index only when it is ``0`` or ``[1-9][0-9]*`` (at most nine
  digits) and in range.
- **Numbers** (never ``true``/``false``) compare as IEEE-754 doubles, ints included
  (``1 == 1.0``; an integer too large for a double is +-infinity). **Strings** compare
  by code point. Nothing else is ordered.
- **Filters** all apply (AND); every op but ``exists`` needs the pointer present.
  ``eq``/``ne``: JSON equality (numbers as above, arrays element-wise, objects by key
  set and values; ``"1"`` is not ``1``, ``true`` is not ``1``); ``ne`` is "present and
  not equal". ``lt le gt ge``: both numbers or both strings, else false. ``contains``: a
  string containing the (string) value, or an array with an element equal to it.
  ``prefix``: a string starting with the (string) value. ``exists``: present.
- **Order** by a pointer: in ``asc``, rows whose value there is a number (by value), then
  those with a string (by code point), then all the others (missing, null, booleans,
  arrays, objects, not JSON); ``desc`` reverses the numbers and strings (strings first,
  descending, then numbers, descending) and keeps the others last. Ties, and the others,
  go by path ascending. Without ``order``: path ascending.
- **Paging.** A page holds ``limit`` rows; its ``cursor`` (None on the last page) names
  the last row's place in that order (sort value and path), and the next page starts
  strictly after it. Over a room nobody writes, the pages are the whole answer, each row
  once; a write between pages affects only the rows it changes (one moved from before
  the cursor to after it comes again, one moved the other way is not seen). A cursor is
  opaque; one from another order is refused.
"""

from __future__ import annotations

import base64
import binascii
import functools
import heapq
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from .codes import CloseCode, RejectClass
from .entries import Change
from .errors import RoomsyncError
from .types import path_error, prefix_matches

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_DEPTH",
    "MAX_FILTERS",
    "MAX_LIMIT",
    "MAX_POINTER",
    "MAX_PROJECT",
    "MAX_VALUE_DEPTH",
    "NOT_JSON",
    "OPS",
    "Candidate",
    "Filter",
    "Json",
    "NotJson",
    "Order",
    "Pointer",
    "QueryCursorError",
    "QuerySpec",
    "QuerySpecError",
    "SortKey",
    "checked_limit",
    "compare_keys",
    "cursor_key",
    "decode",
    "encode_cursor",
    "evaluate",
    "json_equal",
    "matches",
    "page",
    "parse_pointer",
    "parse_spec",
    "resolve",
    "row_of",
    "select",
    "sort_candidates",
    "sort_key",
]

Json: TypeAlias = "bool | int | float | str | list[Json] | dict[str, Json] | None"

#: The filter ops (SPEC §6).
OPS: Final = ("eq", "ne", "lt", "le", "gt", "ge", "exists", "contains", "prefix")
_ORDERED_OPS: Final = frozenset({"lt", "le", "gt", "ge"})
MAX_FILTERS: Final = 32
MAX_PROJECT: Final = 32
#: Characters of a pointer.
MAX_POINTER: Final = 256
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100
#: Values nested deeper are not JSON for queries (a bound every evaluator can keep).
MAX_DEPTH: Final = 512
#: How deep a filter's own value may nest.
MAX_VALUE_DEPTH: Final = 32
_SPEC_KEYS: Final = frozenset({"prefix", "filters", "project", "order", "limit"})
_MAX_EXACT_INT: Final = 1 << 64
_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")
_POINTER_ESCAPE = re.compile(r"~(?![01])")


class _QueryError(RoomsyncError, ValueError):
    """The caller's query or cursor is wrong; nothing ran (control: ``invalid-payload``)."""

    close: CloseCode | None = None
    reject_class: Final = RejectClass.INVALID_PAYLOAD

    @property
    def next_action(self) -> str:
        return self.reject_class.next_action


class QuerySpecError(_QueryError):
    """A spec that cannot run; ``field`` names the part at fault (``spec.filters[0].op``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", close=None)
        self.field = field
        self.reason = message


class QueryCursorError(_QueryError):
    """A cursor this query did not hand out (garbled, or from another order)."""

    field: Final = "cursor"

    def __init__(self, message: str) -> None:
        super().__init__(message, close=None)


class NotJson:
    """The type of :data:`NOT_JSON`."""

    _instance: NotJson | None = None

    def __new__(cls) -> NotJson:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_JSON"


#: What :func:`decode` gives for a value that is not JSON.
NOT_JSON: Final = NotJson()


@dataclass(frozen=True, slots=True)
class Pointer:
    """An RFC 6901 pointer: its text and its unescaped tokens."""

    text: str
    tokens: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Filter:
    """``pointer op value``; ``value`` is None for ``exists``."""

    pointer: Pointer
    op: str
    value: Json = None


@dataclass(frozen=True, slots=True)
class Order:
    pointer: Pointer
    desc: bool = False


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A checked spec (:func:`parse_spec`). ``prefix`` is ``/`` or a path (no trailing
    slash); ``project`` None keeps whole values."""

    prefix: str = "/"
    filters: tuple[Filter, ...] = ()
    project: tuple[Pointer, ...] | None = None
    order: Order | None = None
    limit: int = DEFAULT_LIMIT

    def to_json(self) -> dict[str, object]:
        """The canonical JSON form (defaults filled in): what ``query get`` shows and a
        store keeps; :func:`parse_spec` reads it back to an equal spec."""
        out: dict[str, object] = {
            "prefix": self.prefix,
            "filters": [_filter_json(f) for f in self.filters],
            "limit": self.limit,
        }
        if self.project is not None:
            out["project"] = [p.text for p in self.project]
        if self.order is not None:
            out["order"] = {
                "pointer": self.order.pointer.text,
                "dir": "desc" if self.order.desc else "asc",
            }
        return out


def _filter_json(f: Filter) -> dict[str, object]:
    out: dict[str, object] = {"pointer": f.pointer.text, "op": f.op}
    if f.op != "exists":
        out["value"] = f.value
    return out


# -- parsing specs ------------------------------------------------------------------------


def parse_pointer(text: object, field: str = "pointer") -> Pointer:
    """Check an RFC 6901 pointer (``""`` or ``/``-separated tokens, ``~0`` = ``~``,
    ``~1`` = ``/``) of at most :data:`MAX_POINTER` characters."""
    if not isinstance(text, str):
        raise QuerySpecError(field, "a pointer is a string")
    if len(text) > MAX_POINTER:
        raise QuerySpecError(field, f"a pointer has at most {MAX_POINTER} characters")
    if text == "":
        return Pointer("", ())
    if not text.startswith("/"):
        raise QuerySpecError(field, 'a pointer is "" or starts with "/" (RFC 6901)')
    if _POINTER_ESCAPE.search(text):
        raise QuerySpecError(field, '"~" must be escaped as "~0" ("~1" is "/")')
    tokens = tuple(t.replace("~1", "/").replace("~0", "~") for t in text[1:].split("/"))
    return Pointer(text, tokens)


def _check_value(value: object, field: str, depth: int = 0) -> Json:
    """``value`` if it is JSON data (finite numbers, string keys), nested at most
    :data:`MAX_VALUE_DEPTH` deep."""
    if depth > MAX_VALUE_DEPTH:
        raise QuerySpecError(field, f"nested deeper than {MAX_VALUE_DEPTH}")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_EXACT_INT:
            raise QuerySpecError(field, "integers are within +-2**64 (numbers compare as doubles)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuerySpecError(field, "numbers must be finite")
        return value
    if isinstance(value, list):
        return [_check_value(v, field, depth + 1) for v in value]
    if isinstance(value, dict):
        out: dict[str, Json] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise QuerySpecError(field, "object keys are strings")
            out[k] = _check_value(v, field, depth + 1)
        return out
    raise QuerySpecError(field, f"not JSON data: {type(value).__name__}")


def _parse_filter(raw: object, field: str) -> Filter:
    if not isinstance(raw, Mapping):
        raise QuerySpecError(field, "a filter is an object {pointer, op, value?}")
    extra = sorted(set(raw) - {"pointer", "op", "value"})
    if extra:
        raise QuerySpecError(f"{field}.{extra[0]}", "unknown field")
    if "pointer" not in raw:
        raise QuerySpecError(f"{field}.pointer", "missing")
    pointer = parse_pointer(raw["pointer"], f"{field}.pointer")
    op = raw.get("op")
    if op not in OPS:
        raise QuerySpecError(f"{field}.op", f"must be one of {', '.join(OPS)}")
    assert isinstance(op, str)
    vfield = f"{field}.value"
    if op == "exists":
        if "value" in raw:
            raise QuerySpecError(vfield, "exists takes no value")
        return Filter(pointer, op)
    if "value" not in raw:
        raise QuerySpecError(vfield, f"{op} needs a value")
    value = _check_value(raw["value"], vfield)
    if op == "prefix" and not isinstance(value, str):
        raise QuerySpecError(vfield, "prefix compares with a string")
    if op in _ORDERED_OPS and not (_is_number(value) or isinstance(value, str)):
        raise QuerySpecError(vfield, f"{op} compares with a number or a string")
    return Filter(pointer, op, value)


def parse_spec(raw: object, field: str = "spec") -> QuerySpec:
    """Check a spec (a JSON object; unknown fields refused) and return it; raise
    :class:`QuerySpecError` naming the first field at fault."""
    if not isinstance(raw, Mapping):
        raise QuerySpecError(field, "a spec is a JSON object")
    extra = sorted(set(raw) - _SPEC_KEYS)
    if extra:
        raise QuerySpecError(f"{field}.{extra[0]}", "unknown field")
    prefix = raw.get("prefix", "/")
    if prefix != "/":
        if isinstance(prefix, str) and len(prefix) > 1 and prefix.endswith("/"):
            prefix = prefix[:-1]
        why = path_error(prefix)
        if why is not None:
            raise QuerySpecError(f"{field}.prefix", f'"/" or a state path (SPEC §1): {why}')
    assert isinstance(prefix, str)
    filters_raw = raw.get("filters", [])
    if filters_raw is None:
        filters_raw = []
    if not isinstance(filters_raw, list):
        raise QuerySpecError(f"{field}.filters", "a list of filters")
    if len(filters_raw) > MAX_FILTERS:
        raise QuerySpecError(f"{field}.filters", f"at most {MAX_FILTERS} filters")
    filters = tuple(_parse_filter(f, f"{field}.filters[{i}]") for i, f in enumerate(filters_raw))
    project: tuple[Pointer, ...] | None = None
    project_raw = raw.get("project")
    if project_raw is not None:
        if not isinstance(project_raw, list):
            raise QuerySpecError(f"{field}.project", "a list of pointers")
        if len(project_raw) > MAX_PROJECT:
            raise QuerySpecError(f"{field}.project", f"at most {MAX_PROJECT} pointers")
        project = tuple(
            parse_pointer(p, f"{field}.project[{i}]") for i, p in enumerate(project_raw)
        )
    order: Order | None = None
    order_raw = raw.get("order")
    if order_raw is not None:
        if not isinstance(order_raw, Mapping):
            raise QuerySpecError(f"{field}.order", "an object {pointer, dir}")
        extra = sorted(set(order_raw) - {"pointer", "dir"})
        if extra:
            raise QuerySpecError(f"{field}.order.{extra[0]}", "unknown field")
        if "pointer" not in order_raw:
            raise QuerySpecError(f"{field}.order.pointer", "missing")
        direction = order_raw.get("dir", "asc")
        if direction not in ("asc", "desc"):
            raise QuerySpecError(f"{field}.order.dir", 'must be "asc" or "desc"')
        order = Order(
            parse_pointer(order_raw["pointer"], f"{field}.order.pointer"), direction == "desc"
        )
    limit = raw.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise QuerySpecError(f"{field}.limit", f"an integer from 1 to {MAX_LIMIT}")
    return QuerySpec(prefix, filters, project, order, limit)


# -- values ---------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Json:
    raise ValueError(f"{name} is not JSON")


def _first_wins(pairs: list[tuple[str, Json]]) -> dict[str, Json]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # a repeated key: keep its first occurrence
        obj = {}
        for key, value in pairs:
            obj.setdefault(key, value)
    return obj


def _long_int(digits: str) -> Json:
    # Past Python's int-from-text limit: the double it stands for, as every evaluator
    # compares it anyway (an integer beyond the double range is +-infinity).
    return int(digits) if len(digits) <= 4000 else float(digits)


_DECODER = json.JSONDecoder(object_pairs_hook=_first_wins, parse_constant=_refuse_constant)
_LONG_DECODER = json.JSONDecoder(
    object_pairs_hook=_first_wins, parse_constant=_refuse_constant, parse_int=_long_int
)


def _depth(value: Json) -> int:
    deepest = 0
    stack: list[tuple[Json, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item.values())
    return deepest


def decode(raw: bytes) -> Json | NotJson:
    """The JSON value of an entry's bytes, or :data:`NOT_JSON` (see the module rules)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_JSON
    try:
        try:
            value: Json = _DECODER.decode(text)
        except ValueError as exc:
            if "digits" not in str(exc):  # not the int-from-text limit: not JSON
                raise
            value = _LONG_DECODER.decode(text)
    except (ValueError, RecursionError):
        return NOT_JSON
    # Depth needs at least that many brackets; only then is it worth measuring.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        return NOT_JSON
    return value


def resolve(doc: Json, pointer: Pointer) -> tuple[bool, Json]:
    """``(True, value)`` at ``pointer`` in ``doc``, or ``(False, None)``."""
    for token in pointer.tokens:
        if isinstance(doc, dict):
            if token not in doc:
                return False, None
            doc = doc[token]
        elif isinstance(doc, list):
            if not _INDEX.fullmatch(token) or int(token) >= len(doc):
                return False, None
            doc = doc[int(token)]
        else:
            return False, None
    return True, doc


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _double(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond the double range
        return math.inf if value > 0 else -math.inf


def json_equal(a: Json, b: Json) -> bool:
    """JSON equality: numbers as doubles, arrays element-wise, objects by keys and values;
    no two types are equal (``"1"`` is not ``1``, ``true`` is not ``1``)."""
    if _is_number(a):
        return _is_number(b) and _double(a) == _double(b)  # type: ignore[arg-type]
    if isinstance(a, bool) or a is None:
        return type(b) is type(a) and a == b
    if isinstance(a, str):
        return isinstance(b, str) and a == b
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    assert isinstance(a, dict)
    return (
        isinstance(b, dict)
        and a.keys() == b.keys()
        and all(json_equal(v, b[k]) for k, v in a.items())
    )


def _ordered(op: str, a: Json, b: Json) -> bool:
    x: float | str
    y: float | str
    if _is_number(a) and _is_number(b):
        x, y = _double(a), _double(b)  # type: ignore[arg-type]
    elif isinstance(a, str) and isinstance(b, str):
        x, y = a, b
    else:
        return False
    if op == "lt":
        return x < y  # type: ignore[operator]
    if op == "le":
        return x <= y  # type: ignore[operator]
    if op == "gt":
        return x > y  # type: ignore[operator]
    return x >= y  # type: ignore[operator]


def _passes(f: Filter, doc: Json) -> bool:
    found, value = resolve(doc, f.pointer)
    if not found:
        return False
    op = f.op
    if op == "exists":
        return True
    if op == "eq":
        return json_equal(value, f.value)
    if op == "ne":
        return not json_equal(value, f.value)
    if op in _ORDERED_OPS:
        return _ordered(op, value, f.value)
    if op == "contains":
        if isinstance(value, str):
            return isinstance(f.value, str) and f.value in value
        if isinstance(value, list):
            return any(json_equal(item, f.value) for item in value)
        return False
    assert op == "prefix" and isinstance(f.value, str)
    return isinstance(value, str) and value.startswith(f.value)


def matches(spec: QuerySpec, doc: Json | NotJson) -> bool:
    """True when ``doc`` (a decoded value) passes every filter of ``spec``."""
    if isinstance(doc, NotJson):
        return not spec.filters
    return all(_passes(f, doc) for f in spec.filters)


# -- order, rows, paging ----------------------------------------------------------------------

#: ``(rank, value, path)``: rank 0 and 1 are the numbers and strings (in the order's
#: direction), 2 everything else (value None). Without an order: ``(0, None, path)``.
SortKey: TypeAlias = tuple[int, "float | str | None", str]


def sort_key(spec: QuerySpec, path: str, doc: Json | NotJson) -> SortKey:
    """Where a row goes in the spec's order (compare with :func:`compare_keys`)."""
    order = spec.order
    if order is None:
        return (0, None, path)
    if not isinstance(doc, NotJson):
        found, value = resolve(doc, order.pointer)
        if found and _is_number(value):
            return (1 if order.desc else 0, _double(value), path)  # type: ignore[arg-type]
        if found and isinstance(value, str):
            return (0 if order.desc else 1, value, path)
    return (2, None, path)


def compare_keys(spec: QuerySpec, a: SortKey, b: SortKey) -> int:
    """-1, 0 or 1 as ``a`` sorts before, with or after ``b`` in the spec's order."""
    if a[0] != b[0]:
        return -1 if a[0] < b[0] else 1
    x, y = a[1], b[1]
    if x is not None and y is not None and x != y:
        before = x < y  # type: ignore[operator]
        if spec.order is not None and spec.order.desc:
            before = not before
        return -1 if before else 1
    return (a[2] > b[2]) - (a[2] < b[2])


def row_of(spec: QuerySpec, path: str, doc: Json | NotJson, raw: bytes) -> dict[str, object]:
    """The answer row of an entry: ``{path, value}`` (projected), or for a value that is
    not JSON ``{path, value: None, raw: base64}``."""
    if isinstance(doc, NotJson):
        return {"path": path, "value": None, "raw": base64.b64encode(raw).decode("ascii")}
    if spec.project is None:
        return {"path": path, "value": doc}
    shaped: dict[str, Json] = {}
    for pointer in spec.project:
        found, value = resolve(doc, pointer)
        if found:
            shaped[pointer.text] = value
    return {"path": path, "value": shaped}


def _order_tag(spec: QuerySpec) -> list[object] | None:
    if spec.order is None:
        return None
    return [spec.order.pointer.text, "desc" if spec.order.desc else "asc"]


_CLASSES: Final = ("n", "s", "x")


def encode_cursor(spec: QuerySpec, key: SortKey) -> str:
    """The opaque cursor that resumes strictly after ``key``."""
    rank, value, path = key
    body: dict[str, object] = {"o": _order_tag(spec), "p": path}
    if spec.order is not None:
        klass = "x" if rank == 2 else ("n" if isinstance(value, float) else "s")
        body["c"] = klass
        if klass != "x":
            body["v"] = value
    text = json.dumps(body, separators=(",", ":"))  # inf stays exact as Infinity
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def cursor_key(spec: QuerySpec, cursor: str) -> SortKey:
    """The key a cursor of :func:`encode_cursor` names; :class:`QueryCursorError` for
    anything else, or for a cursor of another order."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
        body = json.loads(text)
    except (ValueError, binascii.Error, RecursionError):
        raise QueryCursorError("not a cursor of this query") from None
    if not isinstance(body, dict) or not isinstance(body.get("p"), str):
        raise QueryCursorError("not a cursor of this query")
    if body.get("o") != _order_tag(spec):
        raise QueryCursorError("the cursor comes from a query with another order")
    path: str = body["p"]
    if spec.order is None:
        return (0, None, path)
    klass, value = body.get("c"), body.get("v")
    desc = spec.order.desc
    if klass == "n" and isinstance(value, float) and not math.isnan(value):
        return (1 if desc else 0, value, path)
    if klass == "s" and isinstance(value, str):
        return (0 if desc else 1, value, path)
    if klass == "x":
        return (2, None, path)
    raise QueryCursorError("not a cursor of this query")


def checked_limit(spec: QuerySpec, limit: int | None) -> int:
    """The page size of a run: ``limit`` or the spec's (:class:`ValueError` outside
    1..:data:`MAX_LIMIT`)."""
    n = spec.limit if limit is None else limit
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, not {n!r}")
    return n


Candidate: TypeAlias = tuple[SortKey, dict[str, object]]


def select(
    spec: QuerySpec,
    entries: Iterable[tuple[str, bytes]],
    *,
    after: SortKey | None,
    count: int,
    in_order: bool = False,
) -> list[Candidate]:
    """The first ``count`` rows (with their keys, in order) among live ``(path, value)``
    pairs that lie under the prefix, pass the filters and sort after ``after``.
    ``in_order``: the pairs come in the spec's order already (a store's index scan), so
    the first ``count`` that qualify are the answer and the rest is not read."""
    prefix = spec.prefix
    cmp: Callable[[SortKey, SortKey], int] = functools.partial(compare_keys, spec)
    found: list[Candidate] = []
    for path, raw in entries:
        if not prefix_matches(prefix, path):
            continue
        doc = decode(raw)
        if not matches(spec, doc):
            continue
        key = sort_key(spec, path, doc)
        if after is not None and cmp(key, after) <= 0:
            continue
        found.append((key, row_of(spec, path, doc, raw)))
        if in_order and len(found) >= count:
            return found
    by_key = functools.cmp_to_key(cmp)
    return heapq.nsmallest(count, found, key=lambda c: by_key(c[0]))


def sort_candidates(spec: QuerySpec, candidates: Iterable[Candidate]) -> list[Candidate]:
    """``candidates`` in the spec's order (a store merges the ones it found two ways)."""
    by_key = functools.cmp_to_key(functools.partial(compare_keys, spec))
    return sorted(candidates, key=lambda c: by_key(c[0]))


def page(
    spec: QuerySpec, candidates: list[Candidate], limit: int
) -> tuple[list[dict[str, object]], str | None]:
    """The answer of a page from its candidates in order (at least ``limit + 1`` when
    there are more rows): ``(rows, next_cursor)``."""
    rows = [r for _, r in candidates[:limit]]
    more = len(candidates) > limit
    return rows, encode_cursor(spec, candidates[limit - 1][0]) if more else None


def evaluate(
    spec: QuerySpec,
    entries: Iterable[Change],
    *,
    limit: int | None = None,
    cursor: str | None = None,
) -> tuple[list[dict[str, object]], str | None]:
    """Run ``spec`` over a room's entries (tombstones are skipped): one page of ``limit``
    rows (default: the spec's), after ``cursor``; ``(rows, next_cursor)``.

    :class:`ValueError` for a limit out of 1..:data:`MAX_LIMIT`,
    :class:`QueryCursorError` for a cursor it did not hand out.
    """
    n = checked_limit(spec, limit)
    after = None if cursor is None else cursor_key(spec, cursor)
    live = ((c.path, c.value) for c in entries if c.value is not None)
    return page(spec, select(spec, live, after=after, count=n + 1), n)
