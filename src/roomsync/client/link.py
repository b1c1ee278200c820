"""One WebSocket connection of the SDK (a *link*): its socket, its frames, what it awaits.

A link lives from the WebSocket handshake to the close: ``hello`` → ``welcome`` →
catch-up (or an MST resync) → broadcasts, acks and answers. Everything a request sent on
it is waiting for is kept on it, so that when it goes down every waiter gets
:class:`_LinkDown` at once and can start over on the next link
(:class:`~roomsync.client.connection.Connection` does that).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..core import messages as m
from ..core.keepalive import Keepalive
from ..core.packing import DEFAULT_PACK_LIMITS, PackLimits
from ..core.replica import Answer, SyncMode


class _LinkDown(Exception):
    """The link a request was sent on went down before the answer came.

    Private to the client package (the app never sees it: a request that gets it starts
    over on the next link), hence outside the error tree."""


@dataclass(eq=False)
class BlobCall:
    """A blob frame sent on a link, waiting for its reply (``core.blobflow.REPLIES``)."""

    sent: str  # the type of the frame sent
    hash: str
    future: asyncio.Future[m.Message]


@dataclass(eq=False)
class Link:
    """One WebSocket connection: its socket, its outgoing frames, its waiters and tasks."""

    ws: aiohttp.ClientWebSocketResponse
    mode: SyncMode
    welcome: m.Welcome | None = None
    synced: bool = False
    closing: bool = False
    #: The session negotiated ``binary``: packs go out (and may come in) as binary frames.
    binary: bool = False
    #: The server's last ``error`` envelope (the reason of the close that follows).
    last_error: dict[str, Any] | None = None
    #: Frames to write: JSON text, or the payload of a binary frame.
    outbox: deque[str | bytes] = field(default_factory=deque)
    outbox_ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: Chunked ``pack`` answers expected (catch-up, ``request{paths}``, ``subscribe``).
    answers: dict[Answer, asyncio.Future[None]] = field(default_factory=dict)
    roots: deque[asyncio.Future[m.MstRoot]] = field(default_factory=deque)
    nodes: deque[asyncio.Future[m.MstNodes]] = field(default_factory=deque)
    sketches: deque[asyncio.Future[m.MstSketch]] = field(default_factory=deque)
    blob_calls: list[BlobCall] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Set when the keepalive deadline may have moved closer (a presence state was set).
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: The server holds a (non-null) presence state of ours for this session.
    presence_sent: bool = False
    #: Event-loop times (ms) of the last frame written and read.
    last_sent_ms: float = 0.0
    last_recv_ms: float = 0.0
    catchup_changes: int = 0
    #: From the welcome: the largest pack to send, and the keepalive schedule.
    pack_limits: PackLimits = DEFAULT_PACK_LIMITS
    keepalive: Keepalive | None = None
    #: Rate limiting of packs: no pack before this event-loop time (s); packs refused in a row.
    pause_until: float = 0.0
    rate_limited: int = 0

    def send(self, obj: dict[str, Any]) -> None:
        """Queue a frame; frames leave in the order they were queued.

        Raises :class:`_LinkDown` when the link is closing (the caller starts over).
        """
        if self.closing:
            raise _LinkDown()
        self.outbox.append(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
        self.outbox_ready.set()

    def send_binary(self, payload: bytes) -> None:
        """Queue a binary frame (a ``pack`` when ``binary`` was negotiated), in order
        with the text frames; :class:`_LinkDown` when the link is closing."""
        if self.closing:
            raise _LinkDown()
        self.outbox.append(payload)
        self.outbox_ready.set()

    def abort(self) -> None:
        """Drop the connection without a closing handshake, as a network failure would."""
        self.closing = True
        sock = self.ws.get_extra_info("socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.outbox_ready.set()

    def fail_waiters(self) -> None:
        """The link is down: every request waiting on it gets :class:`_LinkDown`."""
        waiting: list[asyncio.Future[Any]] = [
            *self.answers.values(),
            *self.roots,
            *self.nodes,
            *self.sketches,
            *(call.future for call in self.blob_calls),
        ]
        for future in waiting:
            if not future.done():
                future.set_exception(_LinkDown())
                future.exception()  # retrieved: the awaiting side re-raises it
        self.answers.clear()
        self.roots.clear()
        self.nodes.clear()
        self.sketches.clear()
        self.blob_calls.clear()
