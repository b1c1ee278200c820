"""The ``room`` family (SPEC §6): the commands whose owners exist (node, registry,
store). Lineage (``fork``/``propose``/``validate``/``promote``/``reject``) and ``capture``
come with the archives of issue 11."""

from __future__ import annotations

from typing import Any

from ...core.codes import RejectClass
from ..payloads import Revoke, RoomCreate, RoomList, RoomRef
from ..registry import REGISTRY, Context
from ..rejects import Rejected, not_found


async def _room_view(ctx: Context, room: str) -> dict[str, Any]:
    node = ctx.node
    host = node.rooms.hosts.get(room)
    record = host.record if host is not None else await node.store.get_room(room)
    if record is None:
        raise not_found("room", room, field="room")
    if host is not None:
        head, root, count, peers = (
            host.head,
            host.state.root,
            host.state.live_count(),
            len(host.peers),
        )
    else:
        loaded = await node.store.load_room(room, now_ms=ctx.now_ms)
        from ...core.room import RoomState

        state = RoomState(room, loaded.entries, head=loaded.record.head)
        head, root, count, peers = state.head, state.root, state.live_count(), 0
    return {
        "room": room,
        "head": head,
        "root": root,
        "count": count,
        "locked": record.locked,
        "closed": record.closed,
        "peers": peers,
        # Archives and forks come with issue 11; until then a room's lineage is empty.
        "lineage": {"archives": []},
    }


@REGISTRY.command("room", "get", RoomRef, "A room's head, canonical root, size, flags and peers.")
async def get(ctx: Context, p: RoomRef) -> dict[str, Any]:
    return await _room_view(ctx, p.room)


@REGISTRY.command("room", "list", RoomList, "Rooms by id, paged with limit and cursor.")
async def list_(ctx: Context, p: RoomList) -> dict[str, Any]:
    records = await ctx.node.store.list_rooms(limit=p.limit + 1, cursor=p.cursor)
    page = records[: p.limit]
    return {
        "rooms": [
            {"room": r.room, "head": r.head, "locked": r.locked, "closed": r.closed} for r in page
        ],
        "cursor": page[-1].room if len(records) > p.limit else None,
    }


@REGISTRY.command(
    "room", "create", RoomCreate, "Create a room, or reopen a closed one; optionally locked."
)
async def create(ctx: Context, p: RoomCreate) -> dict[str, Any]:
    existing = await ctx.node.store.get_room(p.room)
    if existing is not None and not existing.closed:
        raise Rejected(
            RejectClass.CONFLICT, "room-exists", f"room {p.room!r} already exists", field="room"
        )
    record = await ctx.node.set_room(p.room, locked=p.locked, closed=False)
    return {"room": p.room, "created": existing is None, "locked": record.locked}


async def _flag(ctx: Context, room: str, **changes: bool) -> dict[str, Any]:
    if await ctx.node.store.get_room(room) is None and room not in ctx.node.rooms.hosts:
        raise not_found("room", room, field="room")
    record = await ctx.node.set_room(room, **changes)
    return {"room": room, "locked": record.locked, "closed": record.closed}


@REGISTRY.command("room", "lock", RoomRef, "Admit only valid tokens for the room from now on.")
async def lock(ctx: Context, p: RoomRef) -> dict[str, Any]:
    return await _flag(ctx, p.room, locked=True)


@REGISTRY.command("room", "unlock", RoomRef, "Admit anonymous peers again, as policy allows.")
async def unlock(ctx: Context, p: RoomRef) -> dict[str, Any]:
    return await _flag(ctx, p.room, locked=False)


@REGISTRY.command(
    "room", "close", RoomRef, "End every session with 4004; refuse new ones until create."
)
async def close(ctx: Context, p: RoomRef) -> dict[str, Any]:
    return await _flag(ctx, p.room, closed=True)


@REGISTRY.command(
    "room",
    "revoke",
    Revoke,
    "Revoke tokens by sub or jti (persisted); live sessions of them end with 4003.",
)
async def revoke(ctx: Context, p: Revoke) -> dict[str, Any]:
    if (p.sub is None) == (p.jti is None):
        raise Rejected(
            RejectClass.INVALID_PAYLOAD,
            "sub-or-jti",
            "give exactly one of sub or jti",
            field="sub" if p.sub is None else "jti",
        )
    kind, value = ("sub", p.sub) if p.sub is not None else ("jti", p.jti)
    assert value is not None
    revoked, closed = await ctx.node.revoke(kind, value, expires_ms=p.expires_ms)  # type: ignore[arg-type]
    return {"revoked": revoked, "closed": closed}
