"""A connected peer as the server sees it: its core session, its outbound stream, its room."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.codes import CloseCode
from ..core.session import Session
from .transport import Outbound, encode_frame

if TYPE_CHECKING:
    from .rooms import FrameSnapshot, RoomHost

_json_encode = msgspec.json.Encoder().encode


def text_frame(obj: dict[str, Any]) -> bytes:
    """One JSON envelope as a ready-to-write text frame."""
    return encode_frame(_json_encode(obj))


class Peer:
    """Everything the room needs to deliver to one peer and to close it."""

    __slots__ = (
        "__weakref__",
        "actor_bound",
        "closing",
        "expiry_handle",
        "held",
        "held_bytes",
        "host",
        "jobs",
        "last_seen_ms",
        "on_close",
        "out",
        "pending_acks",
        "reads",
        "session",
        "stream_budget",
        "streamer",
    )

    def __init__(
        self,
        session: Session,
        out: Outbound,
        *,
        stream_budget: int,
        on_close: Callable[[Peer, CloseCode, dict[str, Any] | None], None],
        now_ms: int,
    ) -> None:
        self.session = session
        self.reads = "read" in session.caps  # caps are fixed for a session
        self.out = out
        self.stream_budget = stream_budget
        self.on_close = on_close
        self.host: RoomHost | None = None
        #: With a token naming a ``sub``: the actor every change must be written as
        #: (``sub`` or ``sub#<suffix>``); None for anonymous sessions.
        self.actor_bound: str | None = None
        self.closing = False
        self.last_seen_ms = now_ms
        self.pending_acks = 0
        self.expiry_handle: asyncio.TimerHandle | None = None
        # While a catch-up/request answer is streaming (see rooms.RoomHost.stream_changes),
        # broadcast frames wait here so the peer sees them after the answer, in order.
        self.streamer: asyncio.Task[None] | None = None
        # Answers waiting to stream, in order: a shared snapshot, or how to build one.
        self.jobs: list[FrameSnapshot | Callable[[], FrameSnapshot]] = []
        self.held: list[bytes] = []
        self.held_bytes = 0

    @property
    def id(self) -> str:
        return self.session.peer

    def send(self, obj: dict[str, Any]) -> bool:
        return self.send_frame(text_frame(obj))

    def send_frame(self, frame: bytes) -> bool:
        """Queue a frame; close with 4001 when the stream budget is passed (SPEC §2).

        While an answer is streaming to this peer, the frame is held (and counted against
        the budget) and written when the answer is done.
        """
        if self.closing:
            return False
        if self.streamer is not None:
            # The streamed answer itself is paced by backpressure; the budget bounds what
            # piles up behind it.
            self.held.append(frame)
            self.held_bytes += len(frame)
            queued = self.held_bytes
        else:
            queued = self.out.send(frame)
            if queued < 0:
                return False
        if queued > self.stream_budget:
            self.close(
                CloseCode.RESYNC_REQUIRED,
                {
                    "type": "error",
                    "code": "resync-required",
                    "message": "outbound queue passed the stream budget "
                    f"({self.stream_budget} bytes): reconnect and resync",
                },
                reason="stream-budget",
            )
            return False
        return True

    def release_held(self) -> None:
        """Write the broadcasts held during a streamed answer, in order."""
        held, self.held, self.held_bytes = self.held, [], 0
        for frame in held:
            if not self.send_frame(frame):
                return

    def close(
        self, code: CloseCode, error: dict[str, Any] | None = None, *, reason: str | None = None
    ) -> None:
        """Start closing: the error frame first (SPEC: sent before every non-normal close)."""
        if self.closing:
            return
        self.closing = True
        if reason is not None and error is not None:
            error = {**error, "reason": reason}
        self.on_close(self, code, error)
