"""The ``query`` family (SPEC §6): named query specs, node-wide, and ``run`` over a room's
durable state (a live room's committed changes are in the store already).

A spec is checked twice before it is stored: by msgspec against :class:`QuerySpecModel`
(types, bounds, unknown fields; the published schema) and by
:func:`roomsync.core.query.parse_spec` (pointer syntax, which ops take which values),
whose refusal names the field (``spec.filters[0].value``). It is stored in its canonical
form (defaults filled in, the prefix without its trailing ``/``), which ``get`` and
``list`` show. ``run`` asks the store (:meth:`~roomsync.storage.base.QuerySpecs.run_query`:
SQLite pushes it into its JSON functions) for one page; the semantics are those of
:mod:`roomsync.core.query` (``docs/control.md``, "Queries").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ...core.codes import RejectClass
from ...core.query import (
    MAX_FILTERS,
    MAX_POINTER,
    MAX_PROJECT,
    QueryCursorError,
    QuerySpec,
    QuerySpecError,
    parse_spec,
)
from ...core.types import MAX_PATH_BYTES
from ..payloads import Limit, Payload, Result, RoomId
from ..registry import REGISTRY, Context
from ..rejects import Rejected, not_found

QueryName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,128}$")]
QueryPointer = Annotated[str, Meta(max_length=MAX_POINTER)]
QueryCursor = Annotated[str, Meta(min_length=1, max_length=4096)]


class QueryFilterModel(Payload):
    """``{pointer, op, value?}``: ``exists`` takes no value, every other op one."""

    pointer: QueryPointer
    op: Literal["eq", "ne", "lt", "le", "gt", "ge", "exists", "contains", "prefix"]
    value: Any | msgspec.UnsetType = msgspec.UNSET


class QueryOrderModel(Payload):
    pointer: QueryPointer
    dir: Literal["asc", "desc"] = "asc"


class QuerySpecModel(Payload):
    """A query spec (``docs/control.md``, "Queries")."""

    prefix: Annotated[str, Meta(min_length=1, max_length=MAX_PATH_BYTES + 1)] = "/"
    filters: Annotated[list[QueryFilterModel], Meta(max_length=MAX_FILTERS)] = msgspec.field(
        default_factory=list
    )
    project: Annotated[list[QueryPointer], Meta(max_length=MAX_PROJECT)] | None = None
    order: QueryOrderModel | None = None
    limit: Limit = 100


class QueryDefine(Payload):
    name: QueryName
    spec: QuerySpecModel


class QueryRef(Payload):
    name: QueryName


class QueryList(Payload):
    limit: Limit = 100
    cursor: QueryName | None = None


class QueryRun(Payload):
    room: RoomId
    name: QueryName
    limit: Limit | None = None
    cursor: QueryCursor | None = None


class QueryDefineResult(Result):
    name: str
    created: bool


class QueryView(Result):
    name: str
    spec: QuerySpecModel


class QueryListResult(Result):
    queries: list[QueryView]
    cursor: str | None


class QueryRow(Result):
    """A row: ``value`` is the (projected) JSON value; for a value that is not JSON it
    is null and ``raw`` holds the bytes in base64."""

    path: str
    value: Any
    raw: str | None = None


class QueryRunResult(Result):
    room: str
    name: str
    rows: list[QueryRow]
    cursor: str | None


class QueryDropResult(Result):
    name: str
    dropped: bool


def _checked(spec: QuerySpecModel) -> QuerySpec:
    try:
        return parse_spec(msgspec.to_builtins(spec))
    except QuerySpecError as exc:
        raise Rejected(RejectClass.INVALID_PAYLOAD, "invalid", str(exc), field=exc.field) from None


async def _stored(ctx: Context, name: str) -> dict[str, Any] | None:
    return await ctx.node.store.get_query(name)


@REGISTRY.command(
    "query",
    "define",
    QueryDefine,
    "Define or replace a named query spec: prefix, filters, projection, order, limit.",
    result=QueryDefineResult,
)
async def define(ctx: Context, p: QueryDefine) -> dict[str, Any]:
    spec = _checked(p.spec)
    created = await ctx.node.store.put_query(p.name, spec.to_json())
    return {"name": p.name, "created": created}


@REGISTRY.command(
    "query", "get", QueryRef, "A named query spec, as stored (canonical).", result=QueryView
)
async def get(ctx: Context, p: QueryRef) -> dict[str, Any]:
    spec = await _stored(ctx, p.name)
    if spec is None:
        raise not_found("query", p.name, field="name")
    return {"name": p.name, "spec": spec}


@REGISTRY.command(
    "query",
    "list",
    QueryList,
    "Query specs by name, paged with limit and cursor.",
    result=QueryListResult,
)
async def list_(ctx: Context, p: QueryList) -> dict[str, Any]:
    page, cursor = await ctx.node.store.list_queries(limit=p.limit, cursor=p.cursor)
    return {"queries": [{"name": n, "spec": s} for n, s in page], "cursor": cursor}


@REGISTRY.command(
    "query",
    "run",
    QueryRun,
    "Run a named query over a room's durable state: one page of rows {path, value}.",
    result=QueryRunResult,
    preconditions=("query-spec-missing",),
)
async def run(ctx: Context, p: QueryRun) -> dict[str, Any]:
    node = ctx.node
    if p.room not in node.rooms.hosts and await node.store.get_room(p.room) is None:
        raise not_found("room", p.room, field="room")
    stored = await _stored(ctx, p.name)
    if stored is None:
        raise Rejected(
            RejectClass.PRECONDITION_FAILED,
            "query-spec-missing",
            f"no query spec {p.name!r}: define it with query define first",
            field="name",
        )
    try:
        spec = parse_spec(stored)
    except QuerySpecError as exc:  # stored by something else than query define
        raise Rejected(
            RejectClass.PRECONDITION_FAILED,
            "query-spec-invalid",
            f"the stored spec {p.name!r} does not run ({exc}): define it again",
            field="name",
        ) from None
    try:
        rows, cursor = await node.store.run_query(p.room, spec, limit=p.limit, cursor=p.cursor)
    except QueryCursorError as exc:
        raise Rejected(
            RejectClass.INVALID_PAYLOAD, "invalid", f"cursor: {exc}", field="cursor"
        ) from None
    return {"room": p.room, "name": p.name, "rows": rows, "cursor": cursor}


@REGISTRY.command("query", "drop", QueryRef, "Drop a named query spec.", result=QueryDropResult)
async def drop(ctx: Context, p: QueryRef) -> dict[str, Any]:
    if not await ctx.node.store.delete_query(p.name):
        raise not_found("query", p.name, field="name")
    return {"name": p.name, "dropped": True}
