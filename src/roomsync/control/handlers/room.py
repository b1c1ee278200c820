"""The ``room`` family (SPEC §6): records, flags, deletion and revocation. Lineage
(``fork``/``propose``/``validate``/``promote``/``reject``) is in :mod:`.lineage`,
``capture`` in :mod:`.capture`.

``delete`` first writes a final archive (unless ``hard``), so a deleted room can be
restored with ``archive restore {room, ref}``; its archives and proposals outlive it."""

from __future__ import annotations

from typing import Any

import msgspec

from ...config.errors import ConfigError
from ...config.policy import masked_policy
from ...core.codes import CloseCode, RejectClass
from ...storage.base import lineage
from ...storage.webhooks import WebhookOutbox
from ..payloads import Payload, Result, Revoke, RoomCreate, RoomId, RoomList, RoomRef
from ..registry import REGISTRY, Context
from ..rejects import Rejected, not_found
from ..snapshots import archive_room, record_of, settle

#: Lineage refs ``room get`` shows (newest first); ``archive list`` pages them all.
LINEAGE_SHOWN = 100


class RoomDelete(Payload):
    room: RoomId
    hard: bool = False


class Lineage(Result):
    archives: list[str]
    source: str | None = None
    checkpoint: str | None = None


class WebhookOutcomeView(Result):
    id: str
    event: str
    url: str
    outcome: str
    status: int | None
    attempts: int
    at_ms: int
    error: str = ""


class RoomView(Result):
    room: str
    head: int
    root: str
    count: int
    locked: bool
    closed: bool
    peers: int
    lineage: Lineage
    node: str | None = None
    #: The room's last finished webhook deliveries, newest first (``docs/hooks.md``).
    webhooks: list[WebhookOutcomeView] = msgspec.field(default_factory=list)


class RoomSummary(Result):
    room: str
    head: int
    locked: bool
    closed: bool


class RoomListResult(Result):
    rooms: list[RoomSummary]
    cursor: str | None


class RoomCreateResult(Result):
    room: str
    created: bool
    locked: bool
    policy: dict[str, Any]


class RoomFlags(Result):
    room: str
    locked: bool
    closed: bool


class RoomDeleteResult(Result):
    room: str
    deleted: bool
    archive: str | None
    closed: int


class RevokeResult(Result):
    revoked: bool
    closed: int


async def _room_view(ctx: Context, room: str) -> dict[str, Any]:
    node = ctx.node
    record = await record_of(ctx, room)
    # Through the loaded room (loading it, as a join would; it then stays loaded for
    # room_idle_unload_ms, so repeated reads are cheap), after the commits in flight.
    host = await node.rooms.acquire(room)
    try:
        await settle(host)
        state = host.state
        head, root, count, peers = host.head, state.root, state.live_count(), len(host.peers)
        record = host.record
    finally:
        node.rooms.release(host)
    chain = await lineage(node.store, room, limit=LINEAGE_SHOWN)
    view_lineage: dict[str, Any] = {"archives": [a.ref for a in chain]}
    if record.source is not None:
        view_lineage["source"] = record.source
        view_lineage["checkpoint"] = record.checkpoint
    store = node.store
    webhooks = []
    if isinstance(store, WebhookOutbox):
        webhooks = [
            {"id": r.id, "event": r.event, "url": r.url, "outcome": r.outcome,
             "status": r.status, "attempts": r.attempts, "at_ms": r.at_ms, "error": r.error}
            for r in await store.webhook_log(room, limit=10)
        ]  # fmt: skip
    return {
        "room": room,
        "head": head,
        "root": root,
        "count": count,
        "locked": record.locked,
        "closed": record.closed,
        "peers": peers,
        "lineage": view_lineage,
        "node": record.node,
        "webhooks": webhooks,
    }


@REGISTRY.command(
    "room",
    "get",
    RoomRef,
    "A room's durable head, canonical root, size, flags, peers and lineage.",
    result=RoomView,
)
async def get(ctx: Context, p: RoomRef) -> dict[str, Any]:
    return await _room_view(ctx, p.room)


@REGISTRY.command(
    "room", "list", RoomList, "Rooms by id, paged with limit and cursor.", result=RoomListResult
)
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
    "room",
    "create",
    RoomCreate,
    "Create a room, or reopen a closed one; optionally locked.",
    result=RoomCreateResult,
)
async def create(ctx: Context, p: RoomCreate) -> dict[str, Any]:
    existing = await ctx.node.store.get_room(p.room)
    if existing is not None and not existing.closed:
        raise Rejected(
            RejectClass.CONFLICT, "room-exists", f"room {p.room!r} already exists", field="room"
        )
    changes: dict[str, Any] = {"locked": p.locked, "closed": False}
    if p.policy is not None:
        try:
            ctx.node.policy.patched(p.policy)  # validated before anything is stored
        except ConfigError as exc:
            key = (exc.key or "policy").split("[")[0]
            raise Rejected(RejectClass.INVALID_PAYLOAD, "invalid", exc.message, field=key) from None
        changes["policy"] = dict(p.policy)
    record = await ctx.node.set_room(p.room, **changes)
    return {
        "room": p.room,
        "created": existing is None,
        "locked": record.locked,
        "policy": masked_policy(dict(record.policy)),
    }


async def _flag(ctx: Context, room: str, **changes: bool) -> dict[str, Any]:
    if await ctx.node.store.get_room(room) is None and room not in ctx.node.rooms.hosts:
        raise not_found("room", room, field="room")
    record = await ctx.node.set_room(room, **changes)
    return {"room": room, "locked": record.locked, "closed": record.closed}


@REGISTRY.command(
    "room", "lock", RoomRef, "Admit only valid tokens for the room from now on.", result=RoomFlags
)
async def lock(ctx: Context, p: RoomRef) -> dict[str, Any]:
    return await _flag(ctx, p.room, locked=True)


@REGISTRY.command(
    "room",
    "unlock",
    RoomRef,
    "Admit anonymous peers again, as policy allows.",
    result=RoomFlags,
)
async def unlock(ctx: Context, p: RoomRef) -> dict[str, Any]:
    return await _flag(ctx, p.room, locked=False)


@REGISTRY.command(
    "room",
    "close",
    RoomRef,
    "End every session with 4004; refuse new ones until create.",
    result=RoomFlags,
)
async def close(ctx: Context, p: RoomRef) -> dict[str, Any]:
    return await _flag(ctx, p.room, closed=True)


@REGISTRY.command(
    "room",
    "revoke",
    Revoke,
    "Revoke tokens by sub or jti (persisted); live sessions of them end with 4003.",
    result=RevokeResult,
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


@REGISTRY.command(
    "room",
    "delete",
    RoomDelete,
    "Write a final archive (unless hard), delete the room; its peers end with 4004.",
    result=RoomDeleteResult,
)
async def delete(ctx: Context, p: RoomDelete) -> dict[str, Any]:
    record = await record_of(ctx, p.room)
    host = ctx.node.rooms.hosts.get(p.room)
    closed = 0 if host is None else sum(1 for peer in host.peers if not peer.closing)
    async with ctx.node.rooms.exclusive(
        p.room, CloseCode.ROOM_CLOSED, "room-closed", f"room {p.room!r} was deleted"
    ) as state:
        # Out of service from here: the final archive holds every write before the delete.
        final = None if p.hard else (await archive_room(ctx, p.room, state=state))[0].ref
        deleted = await ctx.node.store.delete_room(p.room)
    if deleted:
        await ctx.node.notify_room(
            p.room, "room.deleted", {"archive": final, "hard": p.hard}, record=record
        )
    return {"room": p.room, "deleted": deleted, "archive": final, "closed": closed}
