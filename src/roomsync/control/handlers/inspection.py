"""``room entries`` and ``room presence`` (SPEC §6): read-only views of a room for
operators and the inspector (``docs/control.md``).

``entries`` reads the loaded room (acquired like ``room get``, after the commits in
flight) through its sorted path index, so a page costs ``O(log n + limit)`` plus the
tombstones it skips; its cursor is the last path of the page. ``presence`` reads the
room's presence table on this node, with the members other nodes announced for it
(``node`` names the node a peer is connected to): a room that is not loaded on the node
answering has no presence there (ask a node ``topology get`` lists it on).
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from msgspec import Meta

from ...core.codes import RejectClass
from ...core.entries import Change
from ...core.types import MAX_PATH_BYTES, path_error
from ..payloads import Limit, Payload, Result, RoomId, RoomRef
from ..registry import REGISTRY, Context
from ..rejects import Rejected
from ..snapshots import record_of, settle

#: Values up to this size are also shown parsed (``value_json``); bigger ones only as
#: base64, with ``json_truncated`` set.
JSON_VIEW_BYTES = 64 * 1024

_PathText = Annotated[str, Meta(min_length=1, max_length=MAX_PATH_BYTES + 1)]


class RoomEntries(Payload):
    room: RoomId
    prefix: _PathText = "/"
    limit: Limit = 100
    cursor: _PathText | None = None
    include_deleted: bool = False


class EntryView(Result):
    path: str
    seq: int
    ts: int
    counter: int
    actor: str
    deleted: bool
    #: The value's size in bytes (0 for a tombstone).
    size: int = 0
    value_b64: str | None = None
    #: True when the value is UTF-8 JSON; then ``value_json`` is it, parsed (unless
    #: ``json_truncated``: the value is over ``JSON_VIEW_BYTES``).
    is_json: bool = False
    value_json: Any = None
    json_truncated: bool = False


class RoomEntriesResult(Result):
    room: str
    head: int
    entries: list[EntryView]
    cursor: str | None


class PresenceView(Result):
    peer: str
    actor: str
    state: Any
    #: When the peer last refreshed its presence (any frame it sent), server clock; 0 for
    #: a peer of another node (that node keeps it fresh).
    updated_ms: int
    #: The node the peer is connected to.
    node: str


class RoomPresenceResult(Result):
    room: str
    peers: list[PresenceView]


def _normal_prefix(prefix: str) -> str:
    if prefix == "/":
        return prefix
    if prefix.endswith("/") and len(prefix) > 1:
        prefix = prefix[:-1]
    why = path_error(prefix)
    if why is not None:
        raise Rejected(
            RejectClass.INVALID_PAYLOAD, "invalid", f"prefix {prefix!r}: {why}", field="prefix"
        )
    return prefix


def entry_view(change: Change) -> dict[str, Any]:
    """One entry as ``room entries`` shows it."""
    view: dict[str, Any] = {
        "path": change.path,
        "seq": change.seq or 0,
        "ts": change.ts,
        "counter": change.counter,
        "actor": change.actor,
        "deleted": change.value is None,
        "size": 0,
        "value_b64": None,
        "is_json": False,
        "value_json": None,
        "json_truncated": False,
    }
    value = change.value
    if value is None:
        return view
    view["size"] = len(value)
    view["value_b64"] = base64.b64encode(value).decode("ascii")
    if len(value) > JSON_VIEW_BYTES:
        view["json_truncated"] = True
        return view
    try:
        parsed = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return view
    view["is_json"] = True
    view["value_json"] = parsed
    return view


@REGISTRY.command(
    "room",
    "entries",
    RoomEntries,
    "A room's durable entries under a prefix in path order, paged (values as base64 and JSON).",
    result=RoomEntriesResult,
)
async def entries(ctx: Context, p: RoomEntries) -> dict[str, Any]:
    prefix = _normal_prefix(p.prefix)
    if p.cursor is not None and (why := path_error(p.cursor)) is not None:
        raise Rejected(
            RejectClass.INVALID_PAYLOAD, "invalid", f"cursor {p.cursor!r}: {why}", field="cursor"
        )
    await record_of(ctx, p.room)  # not-found for a room that exists nowhere
    host = await ctx.node.rooms.acquire(p.room)
    try:
        await settle(host)
        state = host.state
        # No await from here: the index is not changed while it is iterated.
        page: list[Change] = []
        more = False
        for path in state.index.under_after(prefix, p.cursor):
            entry = state.durable(path)
            if entry is None or (entry.value is None and not p.include_deleted):
                continue
            if len(page) == p.limit:
                more = True
                break
            page.append(entry)
        head = state.durable_head
    finally:
        ctx.node.rooms.release(host)
    return {
        "room": p.room,
        "head": head,
        "entries": [entry_view(c) for c in page],
        "cursor": page[-1].path if more else None,
    }


@REGISTRY.command(
    "room",
    "presence",
    RoomRef,
    "The room's current presence: each peer's actor, state and node.",
    result=RoomPresenceResult,
)
async def presence(ctx: Context, p: RoomRef) -> dict[str, Any]:
    host = ctx.node.rooms.hosts.get(p.room)
    if host is None:
        return {"room": p.room, "peers": []}
    here = ctx.node.name
    peers = [
        {"peer": e.peer, "actor": e.actor, "state": e.state, "updated_ms": e.seen_ms, "node": here}
        for e in host.presence.entries.values()
        if e.leaving_at_ms is None
    ]
    for node, members in sorted(host.remote_presence.items()):
        peers.extend({**entry, "updated_ms": 0, "node": node} for entry in members.values())
    return {"room": p.room, "peers": peers}


__all__ = ["JSON_VIEW_BYTES", "entries", "entry_view", "presence"]
