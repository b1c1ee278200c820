"""When a client pings and when it gives up on a silent link (SPEC §2 ``ping``, §5), sans I/O.

Two rules, both driven by the times of the last frame sent and received (milliseconds on
any monotonic clock; the shell passes them in):

* **ping when idle**: when nothing was sent for :meth:`Keepalive.idle_ms`, send ``ping``.
  That is the welcome's ``heartbeat_ms``; while the server holds a presence state of
  ours it is at most ``presence_ttl_ms / 3`` (never under :data:`MIN_KEEPALIVE_MS`), since
  the server drops a presence it has not heard about for ``presence_ttl_ms`` and any
  frame refreshes it;
* **drop a silent link**: when nothing was received for more than
  :data:`SILENT_HEARTBEATS` heartbeats, the link is dead even if the socket says
  otherwise: drop it and reconnect.

The shell sleeps until :meth:`Keepalive.next_deadline_ms`, asks :meth:`Keepalive.check`
and does what it says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .limits import WelcomeLimits

SILENT_HEARTBEATS = 3
"""Heartbeats without any frame received after which the link counts as dead."""
MIN_HEARTBEAT_MS = 100
"""A ``heartbeat_ms`` below this is read as this (a bogus welcome cannot make us spin)."""
MIN_KEEPALIVE_MS = 50
"""The keepalive never pings more often than this, nor wakes up sooner after a check."""


class KeepaliveAction(Enum):
    """What :meth:`Keepalive.check` asks for."""

    NOTHING = "nothing"
    PING = "ping"
    """Send ``ping{}``: the link has been idle for :meth:`Keepalive.idle_ms`."""
    DROP = "drop"
    """Drop the link and reconnect: the server has been silent too long."""


@dataclass(frozen=True, slots=True)
class Keepalive:
    """The keepalive schedule of one session (from its ``welcome``)."""

    heartbeat_ms: int
    presence_ttl_ms: int = 0

    @classmethod
    def from_welcome(cls, heartbeat_ms: int, limits: Mapping[str, Any]) -> Keepalive:
        """The schedule for ``welcome{heartbeat_ms, limits}``."""
        return cls(heartbeat_ms, WelcomeLimits.parse(limits).presence_ttl_ms)

    def __post_init__(self) -> None:
        object.__setattr__(self, "heartbeat_ms", max(self.heartbeat_ms, MIN_HEARTBEAT_MS))

    @property
    def silence_limit_ms(self) -> int:
        """A link silent for longer than this is dropped."""
        return SILENT_HEARTBEATS * self.heartbeat_ms

    def idle_ms(self, presence_held: bool) -> float:
        """How long the link may go without a frame sent.

        ``presence_held``: the server holds a (non-null) presence state of this session.
        """
        if not presence_held or not self.presence_ttl_ms:
            return float(self.heartbeat_ms)
        return max(MIN_KEEPALIVE_MS, min(self.heartbeat_ms, self.presence_ttl_ms / 3))

    def check(
        self,
        now_ms: float,
        *,
        last_recv_ms: float,
        last_sent_ms: float,
        presence_held: bool,
        sending: bool = False,
    ) -> KeepaliveAction:
        """What to do at ``now_ms``. ``sending``: frames are queued (a ping would wait
        behind them, and they refresh the link anyway)."""
        if now_ms - last_recv_ms > self.silence_limit_ms:
            return KeepaliveAction.DROP
        if now_ms - last_sent_ms >= self.idle_ms(presence_held) and not sending:
            return KeepaliveAction.PING
        return KeepaliveAction.NOTHING

    def next_deadline_ms(
        self,
        now_ms: float,
        *,
        last_recv_ms: float,
        last_sent_ms: float,
        presence_held: bool,
    ) -> float:
        """When to :meth:`check` next: the earlier of the ping and the drop deadline, but
        at least :data:`MIN_KEEPALIVE_MS` after ``now_ms`` (a due ping waiting behind
        queued frames must not make the shell spin)."""
        ping_at = last_sent_ms + self.idle_ms(presence_held)
        drop_at = last_recv_ms + self.silence_limit_ms
        return max(min(ping_at, drop_at), now_ms + MIN_KEEPALIVE_MS)
