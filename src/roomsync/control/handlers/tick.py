"""The ``tick`` family (SPEC §6): a room's logical tick counter and its timer.

- ``tick get {room}``: the counter, the interval and when ``n`` last changed.
- ``tick set {room, n?, interval_ms?}`` (at least one): ``n`` sets the counter (>= 0;
  persisted and broadcast as ``tick{n, at}``, also when it was already ``n``);
  ``interval_ms`` sets the timer: 0 stops it, 10 ms to 24 h starts it (its first advance
  one interval from now). Setting only the interval does not change ``n`` nor ``at``.
- ``tick advance {room, n?}``: adds ``n`` (default 1) to the counter, persisted and
  broadcast; past 2^53 - 1 it is ``conflict``/``tick-overflow`` and nothing changes.

Every result is ``{room, n, interval_ms, at, running}``: ``at`` is the node's wall clock
(ms) when ``n`` last changed (0: never), ``running`` whether this node runs the room's
timer (false when it has none, or when ``topology place`` put its ticks on another node).
The timer and what survives a restart: :mod:`roomsync.server.ticks`.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from ...core.codes import RejectClass
from ...server.ticks import MAX_INTERVAL_MS, MAX_N, MIN_INTERVAL_MS
from ...storage.base import RoomRecord
from ..payloads import Payload, Result, RoomId, RoomRef
from ..registry import REGISTRY, Context
from ..rejects import Rejected, not_found
from ..snapshots import record_of

TickN = Annotated[int, Meta(ge=0, le=MAX_N, description="The counter's new value.")]
TickStep = Annotated[int, Meta(ge=1, le=MAX_N, description="How much to add (default 1).")]
Interval = Annotated[
    int,
    Meta(
        ge=0,
        le=MAX_INTERVAL_MS,
        description=f"Timer interval, ms: 0 stops the timer, else {MIN_INTERVAL_MS} or more.",
    ),
]


class TickSet(Payload):
    room: RoomId
    n: TickN | None = None
    interval_ms: Interval | None = None


class TickAdvance(Payload):
    room: RoomId
    n: TickStep = 1


class TickView(Result):
    room: str
    n: int
    interval_ms: int
    at: int
    running: bool


def _view(ctx: Context, record: RoomRecord) -> dict[str, Any]:
    return {
        "room": record.room,
        "n": record.tick_n,
        "interval_ms": record.tick_interval_ms,
        "at": record.tick_at_ms,
        "running": ctx.node.ticks.running(record.room),
    }


@REGISTRY.command(
    "tick",
    "get",
    RoomRef,
    "A room's tick counter, its timer interval (0: none) and when it last advanced.",
    result=TickView,
)
async def get(ctx: Context, p: RoomRef) -> dict[str, Any]:
    return _view(ctx, await record_of(ctx, p.room))


@REGISTRY.command(
    "tick",
    "set",
    TickSet,
    "Set a room's tick counter (broadcast as tick) and/or its timer (interval_ms; 0 stops).",
    result=TickView,
)
async def set_(ctx: Context, p: TickSet) -> dict[str, Any]:
    if p.n is None and p.interval_ms is None:
        raise Rejected(
            RejectClass.INVALID_PAYLOAD,
            "n-or-interval",
            "give n, interval_ms or both",
            field="interval_ms",
        )
    if p.interval_ms is not None and 0 < p.interval_ms < MIN_INTERVAL_MS:
        raise Rejected(
            RejectClass.INVALID_PAYLOAD,
            "interval-too-short",
            f"interval_ms must be 0 (no timer) or at least {MIN_INTERVAL_MS}",
            field="interval_ms",
        )
    record = await ctx.node.ticks.set(p.room, n=p.n, interval_ms=p.interval_ms)
    if record is None:
        raise not_found("room", p.room, field="room")
    return _view(ctx, record)


@REGISTRY.command(
    "tick",
    "advance",
    TickAdvance,
    "Advance a room's tick counter by n (default 1); broadcast as tick{n, at}.",
    result=TickView,
)
async def advance(ctx: Context, p: TickAdvance) -> dict[str, Any]:
    record = await ctx.node.ticks.advance(p.room, p.n)
    if record is None:  # nothing changed: the room is unknown, or n would overflow
        current = await record_of(ctx, p.room)
        raise Rejected(
            RejectClass.CONFLICT,
            "tick-overflow",
            f"tick counter {current.tick_n} + {p.n} would pass {MAX_N}: set a smaller n first",
            field="n",
        )
    return _view(ctx, record)
