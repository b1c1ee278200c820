"""The SDK's presence API (SPEC §5): publish our state, follow the other peers'.

The last state given to :meth:`PresenceChannel.set_presence` is sent once per event-loop
turn and again after every ``welcome`` (a new session); while one is set, the heartbeat
keeps the server hearing from the client at least every ``min(heartbeat_ms,
presence_ttl_ms / 3)`` (:class:`~roomsync.core.keepalive.Keepalive`).
:meth:`PresenceChannel.clear_presence` sends ``presence{state: null}``, which receivers
treat as "no presence". The others' presence follows the rules of
:class:`~roomsync.core.presence_view.PresenceView`: emptied when a link drops, refilled
from the next welcome's snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ..core import messages as m
from ..core.codes import ErrorCode
from ..core.limits import WelcomeLimits
from ..core.presence_view import PresenceEvent, PresenceInfo, PresenceView
from .connection import Connection
from .errors import RequestRefused
from .events import Listeners, PresenceStream
from .link import Link

log = logging.getLogger("roomsync.client")


class PresenceChannel:
    """This client's presence state and its view of the other peers'."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._view = PresenceView()
        self._state: Any = None  # our state (a private copy); None: no presence
        self._dirty = False
        self._scheduled = False
        self.events = Listeners[PresenceEvent]()
        connection.end_with_client(self.events)
        connection.handle("presence", self._on_presence)
        connection.handle("presence-leave", self._on_presence_leave)
        connection.handle_error("presence", self._on_refused)
        connection.watch(self)

    @property
    def peers(self) -> dict[str, PresenceInfo]:
        return dict(self._view.peers)

    @property
    def local_state(self) -> Any:
        return self._state

    def set_presence(self, state: Any) -> None:
        """Check ``state`` now (JSON, size, capability), send it after this turn."""
        self._connection.check_running()
        if state is None:
            self.clear_presence()
            return
        text = json.dumps(state, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        info = self._connection.session_info
        if info is not None:
            limit = WelcomeLimits.parse(info.limits).presence_max_bytes
            size = len(text.encode("utf-8"))
            if limit and size > limit:
                raise ValueError(
                    f"presence state of {size} bytes exceeds presence_max_bytes {limit}"
                )
            if "presence" not in self._connection.caps:
                raise RequestRefused(
                    {
                        "code": str(ErrorCode.FORBIDDEN),
                        "message": "this session has no 'presence' capability",
                    }
                )
        self._state = json.loads(text)
        self._mark()

    def clear_presence(self) -> None:
        self._state = None
        self._mark()

    def stream(self) -> PresenceStream:
        return PresenceStream(self.events)

    # -- sending -----------------------------------------------------------------------------

    def _mark(self) -> None:
        self._dirty = True
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send our presence state (or its clearing) on the current link, once per turn."""
        self._scheduled = False
        link = self._connection.link
        if link is not None and self._dirty:
            self._send(link)

    def _send(self, link: Link) -> None:
        if link.welcome is None or link.closing:
            return  # the next welcome sends it
        self._dirty = False
        state = self._state
        if state is None and not link.presence_sent:
            return
        if "presence" not in link.welcome.caps:
            log.warning("presence not sent: this session has no 'presence' capability")
            return
        link.send({"type": "presence", "state": state})
        link.presence_sent = state is not None
        link.wake.set()  # the keepalive may have to ping sooner now

    # -- sessions and incoming frames --------------------------------------------------------

    def link_welcomed(self, link: Link) -> None:
        """A new session: take the welcome's snapshot, restore our state (SPEC §5)."""
        welcome = link.welcome
        assert welcome is not None
        self._changed(self._view.reset(welcome.peer, welcome.presence))
        if self._state is not None:
            self._send(link)

    def link_down(self, link: Link) -> None:
        """Nobody is known to be present until the next welcome."""
        self._changed(self._view.clear())

    def _changed(self, event: PresenceEvent) -> None:
        if event:
            self.events.emit(event)

    def _on_presence(self, link: Link, msg: m.Presence) -> None:
        self._changed(self._view.update(msg.peers or ()))

    def _on_presence_leave(self, link: Link, msg: m.PresenceLeave) -> None:
        self._changed(self._view.leave(msg.peer))

    def _on_refused(self, link: Link, error: m.Error, refused: RequestRefused) -> None:
        log.warning("presence refused by the server: %s: %s", error.code, error.message)
