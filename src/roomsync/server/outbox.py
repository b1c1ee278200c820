"""The one place frames are written to a peer: its :class:`Outbox`.

Every frame a connection sends goes through its outbox, from the first PONG before a
``hello`` to the final CLOSE: broadcasts, acks, errors, streamed answers (catch-up,
``request``, ``subscribe``) and control frames. That makes the outbox the place where
the stream budget is enforced (SPEC §2: a peer whose queue passes it gets 4001), where
broadcasts wait while an answer streams (so the peer sees them after the answer, in
order), and where answers are paced by backpressure.

Frames are built once (``transport.encode_frame``; server frames are unmasked, so a
broadcast hands the same ``bytes`` to every receiver) and written straight to the
connection's transport. picows owns the handshake and the reader; it writes only its
own handshake, and our writes never interleave inside its frames (all synchronous).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.binpack import deflate, server_frame
from ..core.catchup import (
    BlockCache,
    chunk_count,
    chunk_message,
    chunk_part,
    group_head,
    group_message,
)
from ..core.entries import Change
from ..core.postcard import encode_pack
from .transport import OP_BINARY as _OP_BINARY
from .transport import encode_frame

if TYPE_CHECKING:
    from .capture import Capture
    from .metrics import Metrics

_json_encode = msgspec.json.Encoder().encode

#: A streamed answer pauses while this much is queued for the peer.
CATCHUP_HIGH_WATER = 1 << 20
#: A peer that reads nothing for this long during a streamed answer is told to resync.
CATCHUP_STALL_S = 30.0


def text_frame(obj: dict[str, Any]) -> bytes:
    """One JSON envelope as a ready-to-write text frame."""
    return encode_frame(_json_encode(obj))


def binary_frame(payload: bytes) -> bytes:
    """One binary ``pack`` (:mod:`roomsync.core.binpack`) as a ready-to-write frame."""
    return encode_frame(payload, _OP_BINARY)


class FrameSnapshot:
    """The ``pack`` frames of one answer, encoded on first use and shared by its readers.

    Peers that join a room together (a join storm) stream the same frames, encoded once,
    as JSON text or binary frames (SPEC §2 cap ``binary``), each kind built only when a
    reader of that kind asks; the framing itself is :mod:`roomsync.core.catchup`'s.
    """

    __slots__ = ("_binary", "_changes", "_chunk", "_frames", "final_head", "readers")

    def __init__(self, changes: list[Change], final_head: int, chunk: int) -> None:
        self._changes = changes
        self._chunk = chunk
        self._frames: list[bytes] = []
        self._binary: list[bytes] = []
        self.final_head = final_head
        self.readers = 0

    def __len__(self) -> int:
        return chunk_count(len(self._changes), self._chunk)

    def changes_in(self, i: int) -> int:
        """How many changes frame ``i`` carries (the last one may carry none)."""
        return max(0, min(self._chunk, len(self._changes) - i * self._chunk))

    def frame(self, i: int, binary: bool = False) -> bytes:
        """Frame ``i``: JSON text, or binary for a session that negotiated ``binary``."""
        if binary:
            frames = self._binary
            while len(frames) <= i:
                part, head, done = chunk_part(
                    self._changes, len(frames), chunk=self._chunk, final_head=self.final_head
                )
                pack = encode_pack(part)
                zipped = deflate(pack)
                if zipped is not None:
                    payload = server_frame(zipped, head=head, done=done, deflated=True)
                else:
                    payload = server_frame(pack, head=head, done=done)
                frames.append(binary_frame(payload))
            return frames[i]
        frames = self._frames
        while len(frames) <= i:
            frames.append(
                text_frame(
                    chunk_message(
                        self._changes, len(frames), chunk=self._chunk, final_head=self.final_head
                    )
                )
            )
        return frames[i]


class FullStateSnapshot(FrameSnapshot):
    """The frames of a full catch-up: one per group of :func:`~..core.catchup.seq_blocks`,
    each group's ``data`` taken from the room's :class:`~..core.catchup.BlockCache`, so
    a joiner after a few writes costs the encoding of the groups they touched."""

    __slots__ = ("_cache", "_groups")

    def __init__(self, groups: list[list[Change]], final_head: int, cache: BlockCache) -> None:
        super().__init__([], final_head, 1)
        self._groups = groups
        self._cache = cache

    def __len__(self) -> int:
        return len(self._groups)

    def changes_in(self, i: int) -> int:
        return len(self._groups[i])

    def frame(self, i: int, binary: bool = False) -> bytes:
        groups = self._groups
        frames = self._binary if binary else self._frames
        while len(frames) <= i:
            group = groups[len(frames)]
            last = len(frames) == len(groups) - 1
            if binary:
                head = group_head(group, last=last, final_head=self.final_head)
                body, deflated = self._cache.binary(group)
                payload = server_frame(body, head=head, done=last, deflated=deflated)
                frames.append(binary_frame(payload))
            else:
                data = self._cache.data(group)
                frames.append(
                    text_frame(group_message(group, data, last=last, final_head=self.final_head))
                )
        return frames[i]


class Outbox:
    """Writes frames to one peer and keeps its queue within the stream budget.

    ``on_overflow(message)`` is called once when the budget is passed or the peer stalls
    during an answer; the connection then closes with 4001 (``resync-required``).

    Once the peer's room is known, :attr:`capture` is the room's
    :class:`~.capture.Capture`: the envelopes :meth:`send` writes and the chunks of
    streamed answers are recorded there under :attr:`peer` (broadcast frames are
    recorded once by the room, not here per receiver).
    """

    __slots__ = (
        "binary",
        "budget",
        "capture",
        "closing",
        "held",
        "held_bytes",
        "jobs",
        "metrics",
        "on_overflow",
        "peer",
        "streamer",
        "transport",
    )

    def __init__(self, budget: int, metrics: Metrics, on_overflow: Callable[[str], None]) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.budget = budget
        self.metrics = metrics
        self.on_overflow = on_overflow
        #: Set once the connection starts closing: data frames are dropped from then on.
        self.closing = False
        # While an answer streams, data frames wait here (counted against the budget).
        # Both lists are made on first use: most connections never need them, and an
        # idle connection's memory is what the node's capacity is measured in.
        self.held: list[bytes] | None = None
        self.held_bytes = 0
        self.jobs: list[FrameSnapshot | Callable[[], FrameSnapshot]] | None = None
        self.streamer: asyncio.Task[None] | None = None
        self.capture: Capture | None = None
        self.peer = ""
        #: The session negotiated ``binary``: packs go out as binary frames.
        self.binary = False

    # -- writing ---------------------------------------------------------------------------

    def write(self, frame: bytes) -> int:
        """Write ``frame`` now, ahead of held frames (control frames, the closing error
        and CLOSE); the bytes queued for the peer, or -1 when the transport is gone."""
        t = self.transport
        if t is None or t.is_closing():
            return -1
        t.write(frame)  # type: ignore[attr-defined]
        return int(t.get_write_buffer_size())  # type: ignore[attr-defined]

    def send(self, obj: dict[str, Any]) -> bool:
        """Encode and queue one envelope for this peer (recorded in the capture when it
        was queued)."""
        frame = text_frame(obj)
        ok = self.send_frame(frame)
        if ok and self.capture is not None:
            self.capture.record_out(self.peer, obj, len(frame))
        return ok

    def send_frame(self, frame: bytes) -> bool:
        """Queue a data frame in order (held behind a streaming answer); False when it was
        not written because the peer is closing or just passed its budget.

        The broadcast hot path: one call per delivery.
        """
        if self.closing:
            return False
        if self.streamer is not None:
            if self.held is None:
                self.held = [frame]
            else:
                self.held.append(frame)
            self.held_bytes += len(frame)
            queued = self.held_bytes
        else:
            queued = self.write(frame)
            if queued < 0:
                return False
        if queued > self.budget:
            self.overflow(
                f"outbound queue passed the stream budget ({self.budget} bytes): "
                "reconnect and resync"
            )
            return False
        return True

    def control(self, frame: bytes) -> bool:
        """Write a control frame the peer caused (a PONG) now, counted against the
        budget like data; False when it passed the budget."""
        if self.closing:
            return False
        queued = self.write(frame)
        if queued > self.budget:
            self.overflow(
                f"outbound queue passed the stream budget ({self.budget} bytes): the peer "
                "sends pings and does not read the pongs"
            )
            return False
        return queued >= 0

    def overflow(self, message: str) -> None:
        if not self.closing:
            self.on_overflow(message)

    def queued_bytes(self) -> int:
        t = self.transport
        if t is None or t.is_closing():
            return 0
        return int(t.get_write_buffer_size())  # type: ignore[attr-defined]

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()  # type: ignore[attr-defined]

    # -- streamed answers ---------------------------------------------------------------------

    def answers_queued(self) -> int:
        """Answers waiting or streaming."""
        return len(self.jobs or ()) + (1 if self.streamer is not None else 0)

    def queue_answer(self, job: FrameSnapshot | Callable[[], FrameSnapshot]) -> None:
        """Stream an answer as chunked ``pack`` frames after those queued before it.

        A waiting answer is built only when its turn comes. Chunks are encoded one at a
        time and written only while the peer's socket keeps up (backpressure), so a large
        answer neither builds up in memory nor trips the stream budget; data frames wait
        in :attr:`held` meanwhile and follow the answers, in order.
        """
        if isinstance(job, FrameSnapshot):
            job.readers += 1
        if self.jobs is None:
            self.jobs = [job]
        else:
            self.jobs.append(job)
        if self.streamer is None:
            self.streamer = asyncio.get_running_loop().create_task(self._stream())

    async def _stream(self) -> None:
        high_water = min(CATCHUP_HIGH_WATER, max(64 * 1024, self.budget // 2))
        try:
            while self.jobs and not self.closing:
                job = self.jobs.pop(0)
                if isinstance(job, FrameSnapshot):
                    snap = job
                else:
                    snap = job()
                    snap.readers += 1
                try:
                    for i in range(len(snap)):
                        frame = snap.frame(i, self.binary)
                        if self.write(frame) < 0:
                            return
                        self.metrics.msg_out("pack")
                        if self.capture is not None:
                            done = ("done", True) if i == len(snap) - 1 else ()
                            binary = ("binary", True) if self.binary else ()
                            self.capture.record_frame(
                                self.peer, "pack", len(frame),
                                "changes", snap.changes_in(i), "answer", True, *done, *binary,
                            )  # fmt: skip
                        if not await self._drained(high_water):
                            return
                finally:
                    snap.readers -= 1
        finally:
            for waiting in self.jobs or ():
                if isinstance(waiting, FrameSnapshot):
                    waiting.readers -= 1
            self.jobs = None
            self.streamer = None
            if not self.closing:
                self._release_held()

    async def _drained(self, high_water: int) -> bool:
        """Wait until the socket buffer is under ``high_water``; False on a stall."""
        delay = 0.001
        last_queued = self.queued_bytes()
        stalled_since = time.monotonic()
        while last_queued > high_water:
            await asyncio.sleep(delay)
            if self.closing:
                return False
            queued = self.queued_bytes()
            if queued < last_queued:
                stalled_since = time.monotonic()
                delay = 0.001
            else:
                delay = min(delay * 2, 0.005)
                if time.monotonic() - stalled_since > CATCHUP_STALL_S:
                    self.overflow(
                        f"the peer read nothing for {CATCHUP_STALL_S:.0f} s during a "
                        "catch-up: reconnect and resync"
                    )
                    return False
            last_queued = queued
        return True

    def _release_held(self) -> None:
        """Write the frames held during the answers, in order."""
        held, self.held, self.held_bytes = self.held, None, 0
        for frame in held or ():
            if not self.send_frame(frame):
                return
