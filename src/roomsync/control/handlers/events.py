"""``topology events`` (SPEC §7 evidence, issue 12): the node's recent events.

Answers from the node's :class:`~roomsync.server.events.NodeEvents`: its recent log
records (redacted before they were kept), the sessions that ended with their close
codes, reconnects by actor and the refused control requests with the caps they carried:
the runbook's "close codes and reconnect attempts" and "capability scope used for
failing control-plane requests". ``since_ms`` is a wall-clock time in ms (the ``at`` of
the records); ``kind`` an event name or its prefix (``session`` matches ``session.*``);
``room`` keeps that room's records, closes and reconnects. ``events`` are the newest
``limit`` matches, newest last; ``cursor`` (when more match) pages to older ones. The
counts (``closes``, ``reconnects``, ``control_failures``) cover the whole window,
whatever ``limit``, ``cursor`` and ``kind``; ``control_failures`` carry no room and are
never filtered by one. ``ring.complete`` is false when records of the window were
already pushed out of the ring (``server.events_ring``).
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from ...core.codes import RejectClass
from ..payloads import Payload, Result, RoomId
from ..registry import REGISTRY, Context
from ..rejects import Rejected


class TopologyEvents(Payload):
    since_ms: Annotated[int, Meta(ge=0)] | None = None
    limit: Annotated[int, Meta(ge=1, le=10000)] = 200
    cursor: Annotated[str, Meta(max_length=32)] | None = None
    kind: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    room: RoomId | None = None


class NodeEvent(Result):
    """One log record: its fields, redacted; ``room``, ``peer``, ``session`` and ``code``
    repeated from them when present."""

    id: int
    at: int
    level: str
    logger: str
    event: str
    fields: dict[str, Any]
    room: str | None = None
    peer: str | None = None
    session: str | None = None
    code: int | None = None


class RingState(Result):
    size: int
    held: int
    kept: int
    dropped: int
    oldest_at: int | None
    complete: bool


class SessionClosed(Result):
    at: int
    room: str
    peer: str
    session: str
    welcomed: bool
    actor: str | None = None
    code: int | None = None


class Reconnects(Result):
    room: str
    actor: str
    sessions: int
    open: int
    reconnects: int
    codes: dict[str, int]
    peers: list[str]
    first_at: int
    last_at: int


class ControlFailure(Result):
    family: str
    command: str
    outcome: str
    code: str | None
    required: str
    operator: str | None
    caps: list[str]
    count: int
    first_at: int
    last_at: int


class EventsResult(Result):
    node: str
    since_ms: int
    now_ms: int
    events: list[NodeEvent]
    cursor: str | None
    ring: RingState
    closes: dict[str, int]
    closed: list[SessionClosed]
    reconnects: list[Reconnects]
    control_failures: list[ControlFailure]


def _before(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit():
        raise Rejected(
            RejectClass.INVALID_PAYLOAD,
            "invalid",
            "cursor must be the cursor of a previous answer",
            field="cursor",
        )
    return int(cursor)


@REGISTRY.command(
    "topology",
    "events",
    TopologyEvents,
    "The node's recent log records (redacted), closes by code, reconnects by actor and "
    "refused control requests with their caps.",
    result=EventsResult,
)
async def events(ctx: Context, p: TopologyEvents) -> dict[str, Any]:
    node = ctx.node
    live = [
        (c.session.room, c.session.actor, c.session.peer)
        for c in node.connections
        if c.peer is not None and c.close_code is None
    ]
    answer = node.events.query(
        since_ms=p.since_ms,
        limit=p.limit,
        before=_before(p.cursor),
        kind=p.kind,
        room=p.room,
        live=live,
    )
    return {"node": node.name, **answer}
