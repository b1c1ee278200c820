"""``room capture`` (SPEC §6): a loaded room's recent envelopes, redacted.

The records come from the room's :class:`~roomsync.server.capture.Capture` (its ring of
``policy.capture_envelopes``), newest last. A room that exists but is not loaded on this
node has no capture (``{"envelopes": []}``); a room that exists nowhere is ``not-found``.
"""

from __future__ import annotations

from typing import Any, Literal

from ..payloads import Limit, Payload, Result, RoomId
from ..registry import REGISTRY, Context
from ..rejects import not_found


class RoomCapture(Payload):
    room: RoomId
    limit: Limit = 100


class CapturedEnvelope(Result):
    """One record; its other fields are the type's metadata (``docs/control.md``)."""

    at: int
    dir: Literal["in", "out"]
    peer: str
    type: str
    bytes: int


class RoomCaptureResult(Result):
    envelopes: list[CapturedEnvelope]


@REGISTRY.command(
    "room",
    "capture",
    RoomCapture,
    "A room's recent envelopes both ways (newest last; values, data and tokens redacted).",
    result=RoomCaptureResult,
)
async def capture(ctx: Context, p: RoomCapture) -> dict[str, Any]:
    host = ctx.node.rooms.hosts.get(p.room)
    if host is None:
        if await ctx.node.store.get_room(p.room) is None:
            raise not_found("room", p.room, field="room")
        return {"envelopes": []}
    return {"envelopes": host.capture.snapshot(p.limit)}
