"""Replay a room's op log and recompute its canonical hashes (SPEC §1, §7 evidence).

A store keeps a room as a base snapshot (the compacted part) plus an op log; its live state
must always equal the base with the log replayed by the LWW rule. :func:`replay` does that
replay from the store's own rows, records the canonical MST root at checkpoints, and
compares the final root with the root of the live state the store serves. ``roomsync
replay`` prints the report; ``archive verify`` and ``doctor`` drive the same function.

Only reads: the store is never written, and a room is read as it is at the time of each
query (replay a quiet room, or a copy, for a consistent report).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .core.entries import Change
from .core.merge import merge_into
from .core.mst import build_root
from .storage.base import Store

__all__ = ["Checkpoint", "ReplayReport", "replay"]

#: Op-log rows read per query.
PAGE = 10_000
#: Checkpoints a replay records when the caller does not choose the interval.
DEFAULT_CHECKPOINTS = 10


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The canonical root of the replayed state right after ``seq``."""

    seq: int
    root: str


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What a replay found. ``match`` is None when it stopped before the head (``to_seq``),
    else whether the replayed root equals the live one."""

    room: str
    compacted_through: int
    head: int
    replayed_to: int
    checkpoints: tuple[Checkpoint, ...]
    replayed_root: str
    live_root: str
    live_count: int
    match: bool | None

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-able data (what ``roomsync replay --json`` prints)."""
        return {
            "room": self.room,
            "compacted_through": self.compacted_through,
            "head": self.head,
            "replayed_to": self.replayed_to,
            "checkpoints": [{"seq": cp.seq, "root": cp.root} for cp in self.checkpoints],
            "replayed_root": self.replayed_root,
            "live_root": self.live_root,
            "live_count": self.live_count,
            "match": self.match,
        }


async def replay(
    store: Store, room: str, *, to_seq: int | None = None, every: int | None = None
) -> ReplayReport:
    """Replay ``room`` from ``store``: its base snapshot, then the op log through ``to_seq``
    (default: the head), with a checkpoint root every ``every`` seqs (default: about
    :data:`DEFAULT_CHECKPOINTS` over the replayed range).

    Raises LookupError when the store has no such room, ValueError when ``every`` is not
    positive or the op log has a gap (a seq missing between the base and the head).
    """
    if every is not None and every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    record = await store.get_room(room)
    if record is None:
        raise LookupError(f"room {room!r} does not exist in this store")
    state: dict[str, Change] = {}
    merge_into(state, await store.base_snapshot(room))
    head = record.head
    stop = head if to_seq is None else min(to_seq, head)
    step = every or max(1, (stop - record.compacted_through) // DEFAULT_CHECKPOINTS)
    checkpoints: list[Checkpoint] = []
    cursor = record.compacted_through
    next_mark = cursor + step
    while cursor < stop:
        rows = await store.changes_since(room, cursor, limit=PAGE)
        if not rows:
            break
        for change in rows:
            if change.seq is None or change.seq > stop:
                cursor = stop
                break
            if change.seq != cursor + 1:
                raise ValueError(f"op log gap: seq {cursor + 1} missing before {change.seq}")
            merge_into(state, [change])
            cursor = change.seq
            if cursor >= next_mark:
                checkpoints.append(Checkpoint(cursor, build_root(state.values())))
                next_mark = cursor + step
    replayed_root = build_root(state.values())
    loaded = await store.load_room(room, now_ms=0)
    live_root = build_root(loaded.entries)
    return ReplayReport(
        room=room,
        compacted_through=record.compacted_through,
        head=head,
        replayed_to=cursor,
        checkpoints=tuple(checkpoints),
        replayed_root=replayed_root,
        live_root=live_root,
        live_count=sum(1 for c in loaded.entries if c.value is not None),
        match=replayed_root == live_root if cursor == head else None,
    )
