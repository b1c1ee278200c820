"""Lineage commands of the ``room`` family (SPEC §6, "Lineage, exactly"): ``fork``,
``propose``, ``validate``, ``promote``, ``reject``. The rules are pure
(:mod:`roomsync.core.lineage`); this module reads states, archives and proposals and
writes through the same seams as the data plane.

Proposal lifecycle: ``draft`` → ``validate`` → ``validated`` | ``invalid`` (validate may
run again, e.g. with ``resolve``, after the parent moved) → ``promote`` → ``promoted``;
``reject`` ends any proposal that is not promoted. ``promoted`` and ``rejected`` are
final (another ``validate``/``promote``/``reject`` is ``conflict``).
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Annotated, Any, Literal

from msgspec import Meta

from ...core.codes import CloseCode, RejectClass
from ...core.entries import Change
from ...core.errors import Overload, RoomClosed
from ...core.lineage import conflicts, promotion_batch, proposed_changes, resolved
from ...core.room import refusal
from ...storage.base import ArchiveRecord, ProposalRecord, lineage
from ..payloads import ArchiveRef, Payload, Result, RoomId, RoomRef
from ..registry import REGISTRY, Context
from ..rejects import Rejected, not_found
from ..snapshots import archive_of, read_archive, record_of, replace_state

ProposalId = Annotated[str, Meta(pattern=r"^prop-[0-9a-f]{16}$")]
_FINAL = ("promoted", "rejected")


class RoomFork(Payload):
    source: RoomId
    checkpoint: ArchiveRef
    room: RoomId


class ProposalRef(Payload):
    proposal: ProposalId


class ProposalValidate(Payload):
    proposal: ProposalId
    resolve: Literal["child", "parent"] | None = None


class RoomForkResult(Result):
    room: str
    source: str
    checkpoint: str
    head: int
    root: str


class ProposeResult(Result):
    proposal: str
    state: str
    changes: int
    room: str
    source: str
    checkpoint: str


class ConflictPath(Result):
    path: str


class ValidateResult(Result):
    proposal: str
    state: str
    conflicts: list[ConflictPath]
    resolve: str | None
    changes: int


class PromoteResult(Result):
    proposal: str
    state: str
    head: int
    applied: int


class RejectResult(Result):
    proposal: str
    state: str


def _invalid_checkpoint(checkpoint: str, source: str, field: str) -> Rejected:
    return Rejected(
        RejectClass.PRECONDITION_FAILED,
        "lineage-checkpoint-invalid",
        f"archive {checkpoint} is not in the lineage of room {source!r} "
        "(a restore moved its lineage past it, or it was deleted)",
        field=field,
    )


async def _in_lineage(ctx: Context, room: str, ref: str) -> bool:
    return any(a.ref == ref for a in await lineage(ctx.node.store, room))


async def _checkpoint_state(ctx: Context, archive: ArchiveRecord) -> dict[str, Change]:
    read = await read_archive(ctx, archive)
    return {c.path: c for c in read.entries}


@REGISTRY.command(
    "room",
    "fork",
    RoomFork,
    "Create a child room from an archive (checkpoint) in the source room's lineage.",
    result=RoomForkResult,
    preconditions=("archive-ref-unknown", "lineage-checkpoint-invalid"),
)
async def fork(ctx: Context, p: RoomFork) -> dict[str, Any]:
    await record_of(ctx, p.source)
    archive = await archive_of(ctx, p.checkpoint, field="checkpoint")
    if archive.room != p.source or not await _in_lineage(ctx, p.source, archive.ref):
        raise _invalid_checkpoint(archive.ref, p.source, "checkpoint")
    if p.room in ctx.node.rooms.hosts or await ctx.node.store.get_room(p.room) is not None:
        raise Rejected(
            RejectClass.CONFLICT, "room-exists", f"room {p.room!r} already exists", field="room"
        )
    read = await read_archive(ctx, archive)
    async with ctx.node.rooms.exclusive(
        p.room,
        CloseCode.RESYNC_REQUIRED,
        "resync-required",
        f"room forked from {archive.ref}",
        reason="forked",
    ):
        if await ctx.node.store.get_room(p.room) is not None:
            raise Rejected(
                RejectClass.CONFLICT, "room-exists", f"room {p.room!r} already exists", field="room"
            )
        head = await replace_state(ctx, p.room, read.entries)
        await ctx.node.rooms.update_record(p.room, source=p.source, checkpoint=archive.ref)
    return {
        "room": p.room,
        "source": p.source,
        "checkpoint": archive.ref,
        "head": head,
        "root": archive.root,
    }


@REGISTRY.command(
    "room",
    "propose",
    RoomRef,
    "Collect a forked child's changes since its checkpoint into a draft proposal.",
    result=ProposeResult,
    preconditions=("room-not-forked", "archive-ref-unknown"),
)
async def propose(ctx: Context, p: RoomRef) -> dict[str, Any]:
    record = await record_of(ctx, p.room)
    if record.source is None or record.checkpoint is None:
        raise Rejected(
            RejectClass.PRECONDITION_FAILED,
            "room-not-forked",
            f"room {p.room!r} was not made by `room fork`: it has no checkpoint to compare with",
            field="room",
        )
    archive = await archive_of(ctx, record.checkpoint, field="room")
    checkpoint = await _checkpoint_state(ctx, archive)
    _, child_state = await _state(ctx, p.room)
    changes = proposed_changes(checkpoint, child_state)
    proposal = ProposalRecord(
        proposal="prop-" + secrets.token_hex(8),
        room=p.room,
        source=record.source,
        checkpoint=archive.ref,
        state="draft",
        changes=tuple(changes),
        created_ms=ctx.now_ms,
    )
    await ctx.node.store.put_proposal(proposal)
    return {
        "proposal": proposal.proposal,
        "state": proposal.state,
        "changes": len(changes),
        "room": p.room,
        "source": record.source,
        "checkpoint": archive.ref,
    }


async def _proposal(ctx: Context, proposal: str) -> ProposalRecord:
    record = await ctx.node.store.get_proposal(proposal)
    if record is None:
        raise not_found("proposal", proposal, field="proposal")
    return record


def _final(record: ProposalRecord) -> Rejected:
    return Rejected(
        RejectClass.CONFLICT,
        "proposal-final",
        f"proposal {record.proposal} is {record.state}: propose again for a new one",
        field="proposal",
    )


async def _state(ctx: Context, room: str) -> tuple[int, dict[str, Change]]:
    """A room's durable head and state, tombstones included."""
    host = ctx.node.rooms.hosts.get(room)
    if host is not None:
        await host.flush()
        state = host.state
        entries = {p: c for p in state.entries if (c := state.durable(p)) is not None}
        return state.durable_head, entries
    loaded = await ctx.node.store.load_room(room, now_ms=ctx.now_ms)
    return loaded.record.head, {c.path: c for c in loaded.entries}


@REGISTRY.command(
    "room",
    "validate",
    ProposalValidate,
    "Check a proposal against its parent: conflicts listed, validated or invalid.",
    result=ValidateResult,
    preconditions=("lineage-checkpoint-invalid", "archive-ref-unknown"),
)
async def validate(ctx: Context, p: ProposalValidate) -> dict[str, Any]:
    record = await _proposal(ctx, p.proposal)
    if record.state in _FINAL:
        raise _final(record)
    await record_of(ctx, record.source)
    if not await _in_lineage(ctx, record.source, record.checkpoint):
        await ctx.node.store.put_proposal(replace(record, state="invalid", validated_head=None))
        raise _invalid_checkpoint(record.checkpoint, record.source, "proposal")
    archive = await archive_of(ctx, record.checkpoint, field="proposal")
    checkpoint = await _checkpoint_state(ctx, archive)
    head, parent = await _state(ctx, record.source)
    found = conflicts(checkpoint, parent, record.changes)
    state: Literal["validated", "invalid"] = (
        "invalid" if found and p.resolve is None else "validated"
    )
    await ctx.node.store.put_proposal(
        replace(
            record,
            state=state,
            conflicts=tuple(found),
            resolve=p.resolve,
            validated_head=head if state == "validated" else None,
        )
    )
    return {
        "proposal": record.proposal,
        "state": state,
        "conflicts": [{"path": path} for path in found],
        "resolve": p.resolve,
        "changes": len(record.changes),
    }


@REGISTRY.command(
    "room",
    "promote",
    ProposalRef,
    "Apply a validated proposal to its parent live, as one batch, if the parent has not moved.",
    result=PromoteResult,
    preconditions=("proposal-not-validated", "proposal-stale", "promotion-refused"),
)
async def promote(ctx: Context, p: ProposalRef) -> dict[str, Any]:
    record = await _proposal(ctx, p.proposal)
    if record.state in _FINAL:
        raise _final(record)
    if record.state != "validated" or record.validated_head is None:
        raise Rejected(
            RejectClass.PRECONDITION_FAILED,
            "proposal-not-validated",
            f"proposal {record.proposal} is {record.state}: run `room validate` first",
            field="proposal",
        )
    changes = resolved(record.changes, record.conflicts, record.resolve or "child")
    rooms = ctx.node.rooms
    host = await rooms.acquire(record.source)
    try:
        await host.flush()
        if host.head != record.validated_head:
            raise Rejected(
                RejectClass.PRECONDITION_FAILED,
                "proposal-stale",
                f"room {record.source!r} moved from head {record.validated_head} to "
                f"{host.head} since validation: validate again",
                field="proposal",
            )
        # No await between the check and the apply: the batch lands on the validated head.
        batch = promotion_batch(changes, host.state.entries, now_ms=ctx.now_ms)
        limits = host.limits()
        for change in batch:
            problem = refusal(change, now_ms=ctx.now_ms, limits=limits)
            if problem is not None:
                raise Rejected(
                    RejectClass.PRECONDITION_FAILED,
                    "promotion-refused",
                    f"{change.path}: {problem[1]} (the parent's policy refuses it; "
                    "nothing was promoted)",
                    field="proposal",
                )
        if batch:
            try:
                host.apply_local(batch)
            except RoomClosed as exc:
                raise Rejected(
                    RejectClass.CONFLICT, "room-closed", exc.message, field="proposal"
                ) from None
            except Overload as exc:
                raise Rejected(
                    RejectClass.UNAVAILABLE, "room-unavailable", exc.message, retry_after_s=1
                ) from None
        await host.flush()
        if host.failed is not None:
            raise Rejected(
                RejectClass.UNAVAILABLE,
                "store-unavailable",
                "the store failed while promoting: nothing was promoted, retry",
            )
        head = host.head
    finally:
        rooms.release(host)
    await ctx.node.store.put_proposal(replace(record, state="promoted"))
    await ctx.node.notify_room(
        record.source,
        "proposal.promoted",
        {"proposal": record.proposal, "head": head, "applied": len(batch)},
    )
    return {"proposal": record.proposal, "state": "promoted", "head": head, "applied": len(batch)}


@REGISTRY.command(
    "room",
    "reject",
    ProposalRef,
    "End a proposal without applying it.",
    result=RejectResult,
)
async def reject(ctx: Context, p: ProposalRef) -> dict[str, Any]:
    record = await _proposal(ctx, p.proposal)
    if record.state in _FINAL:
        raise _final(record)
    await ctx.node.store.put_proposal(replace(record, state="rejected"))
    return {"proposal": record.proposal, "state": "rejected"}
