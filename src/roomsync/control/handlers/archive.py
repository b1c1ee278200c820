"""The ``archive`` family (SPEC §6): content-addressed snapshots of a room's live state
that chain into the room's lineage (format: :mod:`roomsync.core.archive`).

- ``create`` archives the durable state and makes it the lineage head (``parent``: the
  previous head); archiving an unchanged room again returns the same ref.
- ``restore`` first archives the current state (``previous``, so a restore can be undone
  by restoring ``previous``), then replaces the live state with the archive's, makes the
  archive the lineage head (archives made after it leave the lineage but are kept) and
  closes the room's peers with 4001 so they resync to it. A room deleted by ``room
  delete`` is restored from its final archive the same way.
- ``verify`` re-reads the snapshot, re-hashes it and rebuilds its canonical root.
- ``delete`` refuses (``conflict``) an archive some fork still uses as its checkpoint.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from ...core.codes import CloseCode, RejectClass
from ...core.mst import MerkleSearchTree
from ...storage.base import ArchiveRecord, lineage
from ..payloads import ArchiveRef, Limit, Payload, Result, RoomId, RoomRef
from ..registry import REGISTRY, Context
from ..rejects import Rejected
from ..snapshots import archive_of, archive_room, read_archive, replace_state


class ArchiveRefPayload(Payload):
    ref: ArchiveRef


class ArchiveList(Payload):
    room: RoomId
    limit: Limit = 100
    cursor: Annotated[str, Meta(pattern=r"^[0-9]{1,18}$")] | None = None


class ArchiveRestore(Payload):
    room: RoomId
    ref: ArchiveRef


class ArchiveInfo(Result):
    ref: str
    room: str
    head: int
    root: str
    parent: str | None
    count: int
    size: int
    created_ms: int


class ArchiveListResult(Result):
    archives: list[ArchiveInfo]
    cursor: str | None
    lineage: list[str]


class ArchiveRestoreResult(Result):
    room: str
    ref: str
    head: int
    root: str
    previous: str | None


class ArchiveVerifyResult(Result):
    ref: str
    ok: bool
    root: str
    replayed_root: str
    hash_ok: bool
    count: int


class ArchiveDeleteResult(Result):
    ref: str
    deleted: bool


def info(archive: ArchiveRecord) -> dict[str, Any]:
    return {
        "ref": archive.ref,
        "room": archive.room,
        "head": archive.head,
        "root": archive.root,
        "parent": archive.parent,
        "count": archive.count,
        "size": archive.size,
        "created_ms": archive.created_ms,
    }


@REGISTRY.command(
    "archive",
    "create",
    RoomRef,
    "Archive a room's durable state; it becomes the head of the room's lineage.",
    result=ArchiveInfo,
)
async def create(ctx: Context, p: RoomRef) -> dict[str, Any]:
    archive, _ = await archive_room(ctx, p.room)
    return info(archive)


@REGISTRY.command(
    "archive",
    "list",
    ArchiveList,
    "A room's archives, newest first, paged; with the refs of its lineage.",
    result=ArchiveListResult,
)
async def list_(ctx: Context, p: ArchiveList) -> dict[str, Any]:
    archives, cursor = await ctx.node.store.list_archives(p.room, limit=p.limit, cursor=p.cursor)
    chain = await lineage(ctx.node.store, p.room, limit=1000)
    return {
        "archives": [info(a) for a in archives],
        "cursor": cursor,
        "lineage": [a.ref for a in chain],
    }


@REGISTRY.command(
    "archive",
    "get",
    ArchiveRefPayload,
    "One archive: its room, head, root, size and lineage parent.",
    result=ArchiveInfo,
    preconditions=("archive-ref-unknown",),
)
async def get(ctx: Context, p: ArchiveRefPayload) -> dict[str, Any]:
    return info(await archive_of(ctx, p.ref))


@REGISTRY.command(
    "archive",
    "restore",
    ArchiveRestore,
    "Archive the current state (previous), replace it with the archive's; peers get 4001.",
    result=ArchiveRestoreResult,
    preconditions=("archive-ref-unknown", "archive-corrupt"),
)
async def restore(ctx: Context, p: ArchiveRestore) -> dict[str, Any]:
    archive = await archive_of(ctx, p.ref)
    if archive.room != p.room:
        raise Rejected(
            RejectClass.PRECONDITION_FAILED,
            "archive-ref-unknown",
            f"{p.ref} is an archive of room {archive.room!r}, not of {p.room!r} "
            "(use `room fork` to start another room from it)",
            field="ref",
        )
    read = await read_archive(ctx, archive)
    if read.ref != archive.ref:
        raise Rejected(
            RejectClass.PRECONDITION_FAILED,
            "archive-corrupt",
            f"archive {archive.ref} reads back as {read.ref}: run `archive verify`",
            field="ref",
        )
    previous: str | None = None
    exists = p.room in ctx.node.rooms.hosts or await ctx.node.store.get_room(p.room) is not None
    async with ctx.node.rooms.exclusive(
        p.room,
        CloseCode.RESYNC_REQUIRED,
        "resync-required",
        f"room restored to archive {archive.ref}: resync",
        reason="restored",
    ) as state:
        # Out of service from here: `previous` holds every write made before the restore.
        if exists:
            previous = (await archive_room(ctx, p.room, state=state))[0].ref
        head = await replace_state(ctx, p.room, read.entries)
        await ctx.node.rooms.update_record(p.room, lineage_head=archive.ref)
    return {
        "room": p.room,
        "ref": archive.ref,
        "head": head,
        "root": archive.root,
        "previous": previous,
    }


@REGISTRY.command(
    "archive",
    "verify",
    ArchiveRefPayload,
    "Re-read an archive, re-hash it and rebuild its root; compare with the recorded root.",
    result=ArchiveVerifyResult,
    preconditions=("archive-ref-unknown",),
)
async def verify(ctx: Context, p: ArchiveRefPayload) -> dict[str, Any]:
    archive = await archive_of(ctx, p.ref)
    try:
        read = await read_archive(ctx, archive)
    except Rejected as exc:
        if exc.reject_code != "archive-corrupt":
            raise
        return {
            "ref": archive.ref,
            "ok": False,
            "root": archive.root,
            "replayed_root": "",
            "hash_ok": False,
            "count": 0,
        }
    replayed = MerkleSearchTree(read.entries).root_hex
    hash_ok = read.ref == archive.ref
    ok = (
        hash_ok
        and replayed == archive.root == read.header.root
        and len(read.entries) == archive.count == read.header.count
    )
    return {
        "ref": archive.ref,
        "ok": ok,
        "root": archive.root,
        "replayed_root": replayed,
        "hash_ok": hash_ok,
        "count": len(read.entries),
    }


@REGISTRY.command(
    "archive",
    "delete",
    ArchiveRefPayload,
    "Delete an archive (its lineage stays linked); refused while a fork uses it.",
    result=ArchiveDeleteResult,
    preconditions=("archive-ref-unknown",),
)
async def delete(ctx: Context, p: ArchiveRefPayload) -> dict[str, Any]:
    archive = await archive_of(ctx, p.ref)
    forks = await ctx.node.store.forks_of(archive.ref)
    if forks:
        raise Rejected(
            RejectClass.CONFLICT,
            "archive-is-checkpoint",
            f"archive {archive.ref} is the lineage checkpoint of {', '.join(forks[:10])}: "
            "delete or promote those forks first",
            field="ref",
        )
    # The room's lineage head moves to the archive's parent through the one path room
    # records change (serialized with the others), then the store relinks the chain.
    await ctx.node.rooms.change_record(
        archive.room,
        lambda current: (
            {"lineage_head": archive.parent} if current.lineage_head == archive.ref else None
        ),
        create=False,
    )
    deleted = await ctx.node.store.delete_archive(archive.ref)
    return {"ref": archive.ref, "deleted": deleted}
