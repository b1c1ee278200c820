"""What archive and lineage commands share: a room's durable state, writing an archive of
it, reading an archive back (checked against its ref), and replacing a room's state.

They go through the node's room registry and the store's Protocols, as the data plane
does: a loaded room is read through its :class:`~roomsync.server.rooms.RoomHost` (its
durable view), a room that is not loaded from the store; a state is replaced inside
:meth:`~roomsync.server.rooms.RoomRegistry.exclusive`, so no live copy races it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.archive import (
    SnapshotHasher,
    SnapshotHeader,
    decode_body,
    decode_header,
    encode_snapshot,
)
from ..core.codes import RejectClass
from ..core.entries import Change
from ..core.errors import CodecError
from ..core.mst import MerkleSearchTree
from ..storage.base import ArchiveRecord, RoomRecord
from .registry import Context

if TYPE_CHECKING:
    from ..core.room import RoomState
    from ..server.rooms import RoomHost
from .rejects import Rejected, not_found

__all__ = [
    "ReadBack",
    "RoomSnapshot",
    "archive_of",
    "archive_room",
    "read_archive",
    "record_of",
    "replace_state",
    "room_head",
    "settle",
    "snapshot_of",
]

# Rooms bigger than this are encoded off the event loop's thread.
_THREAD_ENTRIES = 10_000
_FLUSH_TRIES = 5


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """A room's durable state at ``head``: its live entries and their canonical root."""

    room: str
    head: int
    root: str
    entries: list[Change]


async def record_of(ctx: Context, room: str) -> RoomRecord:
    """The room's record (the loaded room's, else the store's); ``not-found`` when the
    room exists nowhere."""
    host = ctx.node.rooms.hosts.get(room)
    record = host.record if host is not None else await ctx.node.store.get_room(room)
    if record is None:
        raise not_found("room", room, field="room")
    return record


async def room_head(ctx: Context, room: str) -> int:
    """The room's durable head (0 for a room never written)."""
    host = ctx.node.rooms.hosts.get(room)
    if host is not None:
        return host.head
    record = await ctx.node.store.get_room(room)
    return 0 if record is None else record.head


async def settle(host: RoomHost) -> bool:
    """Wait for the room's commits in flight; True when nothing is pending now (then,
    until the caller's next ``await``, its state is its durable state). False when peers
    kept writing through a few commits."""
    for _ in range(_FLUSH_TRIES):
        await host.flush()
        if not host.state.pending:
            return True
    return False


async def snapshot_of(ctx: Context, room: str, state: RoomState | None = None) -> RoomSnapshot:
    """The durable live state of ``room`` (an unknown room is empty at head 0).
    ``state``: the room's state as :meth:`~roomsync.server.rooms.RoomRegistry.exclusive`
    handed it out (durable, out of service), used as it is."""
    if state is not None and not state.pending:
        live = [c for c in state.entries.values() if c.value is not None]
        return RoomSnapshot(room, state.durable_head, state.root, live)
    host = ctx.node.rooms.hosts.get(room)
    if host is not None:
        state = host.state
        if await settle(host):  # no await since: this is one state
            live = [c for c in state.entries.values() if c.value is not None]
            return RoomSnapshot(room, state.durable_head, state.root, live)
        # Still writing after a few commits: take the durable view and hash it ourselves.
        live = [c for c in state.changes_since(0) if c.value is not None]
        return RoomSnapshot(room, state.durable_head, _root(live), live)
    loaded = await ctx.node.store.load_room(room, now_ms=ctx.now_ms)
    live = [c for c in loaded.entries if c.value is not None]
    return RoomSnapshot(room, loaded.record.head, _root(live), live)


def _root(entries: Iterable[Change]) -> str:
    return MerkleSearchTree(entries).root_hex


def _encode(header: SnapshotHeader, entries: list[Change]) -> tuple[list[bytes], str, int]:
    hasher = SnapshotHasher()
    chunks = []
    for chunk in encode_snapshot(header, entries):
        hasher.update(chunk)
        chunks.append(chunk)
    return chunks, hasher.ref, hasher.size


async def archive_room(
    ctx: Context, room: str, *, state: RoomState | None = None
) -> tuple[ArchiveRecord, bool]:
    """Archive the room's durable state and make it the head of the room's lineage;
    ``(record, new)``. Archiving an unchanged room again gives the same ref (not new).
    ``state``: as for :func:`snapshot_of`."""
    record = await record_of(ctx, room)
    if record.lineage_head is not None:
        # Nothing written since the lineage head was archived (any write or restore moves
        # the head): it is this state's archive already, no need to encode it again.
        newest = await ctx.node.store.get_archive(record.lineage_head)
        head = await room_head(ctx, room)
        host = ctx.node.rooms.hosts.get(room)
        idle = (host is None or not host.state.pending) and (state is None or not state.pending)
        if newest is not None and newest.room == room and newest.head == head and idle:
            return newest, False
    snap = await snapshot_of(ctx, room, state)
    header = SnapshotHeader(room, snap.head, snap.root, len(snap.entries))
    if len(snap.entries) > _THREAD_ENTRIES:
        chunks, ref, size = await asyncio.to_thread(_encode, header, snap.entries)
    else:
        chunks, ref, size = _encode(header, snap.entries)
    existing = await ctx.node.store.get_archive(ref)
    if existing is not None:
        return existing, False
    archive = ArchiveRecord(
        ref=ref,
        room=room,
        head=snap.head,
        root=snap.root,
        count=len(snap.entries),
        size=size,
        chunks=len(chunks),
        created_ms=ctx.now_ms,
        parent=record.lineage_head,
    )
    new = await ctx.node.store.put_archive(archive, chunks)
    del chunks
    await ctx.node.rooms.update_record(room, lineage_head=ref)
    if new:
        await ctx.node.notify_room(
            room,
            "archive.created",
            {"ref": ref, "head": archive.head, "root": archive.root, "count": archive.count},
        )
    return archive, new


async def archive_of(ctx: Context, ref: str, *, field: str = "ref") -> ArchiveRecord:
    """The archive ``ref``; ``precondition-failed``/``archive-ref-unknown`` otherwise."""
    archive = await ctx.node.store.get_archive(ref)
    if archive is None:
        raise Rejected(
            RejectClass.PRECONDITION_FAILED,
            "archive-ref-unknown",
            f"no archive {ref!r}: list a room's archives with `archive list`",
            field=field,
        )
    return archive


@dataclass(frozen=True, slots=True)
class ReadBack:
    """An archive read back: its entries, and what reading found."""

    entries: list[Change]
    header: SnapshotHeader
    ref: str  # the hash of the bytes read


async def read_archive(ctx: Context, archive: ArchiveRecord) -> ReadBack:
    """Every entry of ``archive``, decoded one chunk at a time while hashing the bytes.
    A snapshot that does not decode is ``precondition-failed``/``archive-corrupt``."""
    store = ctx.node.store
    hasher = SnapshotHasher()
    entries: list[Change] = []
    try:
        first = await store.archive_chunk(archive.ref, 0)
        hasher.update(first)
        header = decode_header(first)
        for index in range(1, archive.chunks):
            chunk = await store.archive_chunk(archive.ref, index)
            hasher.update(chunk)
            entries.extend(decode_body(chunk))
    except CodecError as exc:
        raise Rejected(
            RejectClass.PRECONDITION_FAILED,
            "archive-corrupt",
            f"archive {archive.ref} does not decode: {exc}",
            field="ref",
        ) from None
    return ReadBack(entries, header, hasher.ref)


async def replace_state(ctx: Context, room: str, entries: list[Change]) -> int:
    """Make ``entries`` the whole state of ``room``; the new head. Call it inside
    :meth:`~roomsync.server.rooms.RoomRegistry.exclusive`, so no live copy of the room
    writes meanwhile."""
    head = await room_head(ctx, room)
    return await ctx.node.store.replace_state(room, entries, expected_head=head)
