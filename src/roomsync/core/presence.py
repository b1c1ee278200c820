"""Ephemeral per-peer presence of one room (SPEC §5). Pure: driven by ``now_ms``.

Presence is never room state: it is not in the op log, archives or the canonical hash.
Each peer's entry is refreshed by every application frame the peer sends (``presence``,
``ping``, any message) and expires ``ttl_ms`` after the last one. Changes are collected
and taken as one batch per broadcast window (:meth:`PresenceTable.take_dirty`), so a room
of N peers moving cursors costs one message per peer per window, not N² messages.
A disconnect leaves after ``leave_grace_ms`` (0: at once), which hides flapping links.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import TooLarge


@dataclass(slots=True)
class PresenceEntry:
    peer: str
    actor: str
    state: Any
    seen_ms: int
    leaving_at_ms: int | None = None

    def wire(self) -> dict[str, Any]:
        return {"peer": self.peer, "actor": self.actor, "state": self.state}


class PresenceTable:
    __slots__ = (
        "_dirty",
        "_left",
        "entries",
        "leave_grace_ms",
        "max_bytes",
        "max_members",
        "ttl_ms",
    )

    def __init__(
        self, *, ttl_ms: int, max_bytes: int, max_members: int, leave_grace_ms: int = 0
    ) -> None:
        self.ttl_ms = ttl_ms
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.leave_grace_ms = leave_grace_ms
        self.entries: dict[str, PresenceEntry] = {}
        self._dirty: dict[str, None] = {}
        self._left: list[str] = []

    def update(self, peer: str, actor: str, state: Any, size: int, now_ms: int) -> None:
        """Set ``peer``'s state (``size`` = its encoded JSON bytes). TooLarge when over limits."""
        if size > self.max_bytes:
            raise TooLarge(
                f"presence state of {size} bytes exceeds presence_max_bytes {self.max_bytes}"
            )
        entry = self.entries.get(peer)
        if entry is None:
            live = sum(1 for e in self.entries.values() if e.leaving_at_ms is None)
            if live >= self.max_members:
                raise TooLarge(
                    f"room has {live} presence members, the limit "
                    f"presence_max_members is {self.max_members}"
                )
            self.entries[peer] = PresenceEntry(peer, actor, state, now_ms)
        else:
            entry.state = state
            entry.seen_ms = now_ms
            entry.leaving_at_ms = None
        self._dirty[peer] = None

    def touch(self, peer: str, now_ms: int) -> None:
        """A heartbeat: any application frame from ``peer`` keeps its presence alive."""
        entry = self.entries.get(peer)
        if entry is not None and entry.leaving_at_ms is None:
            entry.seen_ms = now_ms

    def clear(self, peer: str) -> bool:
        """``presence{state: null}``: the peer leaves presence now (it stays connected)."""
        if peer in self.entries:
            self._leave(peer)
            return True
        return False

    def disconnect(self, peer: str, now_ms: int) -> None:
        """``peer`` went away: leave now, or after the grace period."""
        entry = self.entries.get(peer)
        if entry is None:
            return
        if self.leave_grace_ms <= 0:
            self._leave(peer)
        else:
            entry.leaving_at_ms = now_ms + self.leave_grace_ms

    def _leave(self, peer: str) -> None:
        if self.entries.pop(peer, None) is not None:
            self._dirty.pop(peer, None)
            self._left.append(peer)

    def expire(self, now_ms: int) -> list[str]:
        """Remove entries past their TTL or leave grace; return the peers removed."""
        gone = [
            e.peer
            for e in self.entries.values()
            if (e.leaving_at_ms is not None and now_ms >= e.leaving_at_ms)
            or now_ms - e.seen_ms > self.ttl_ms
        ]
        for peer in gone:
            self._leave(peer)
        return gone

    def next_deadline(self) -> int | None:
        """The earliest instant (ms) at which :meth:`expire` may remove someone, or None
        when the table is empty. Heartbeats move it later, so a shell that sleeps until
        it may wake early: :meth:`expire` then removes nobody and the shell sleeps on."""
        soonest: int | None = None
        for e in self.entries.values():
            due = e.leaving_at_ms if e.leaving_at_ms is not None else e.seen_ms + self.ttl_ms + 1
            if soonest is None or due < soonest:
                soonest = due
        return soonest

    def take_dirty(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The batch of this window: (changed entries, peers that left); resets both."""
        changed = [self.entries[p].wire() for p in self._dirty if p in self.entries]
        left, self._left = self._left, []
        self._dirty = {}
        return changed, left

    def has_pending(self) -> bool:
        return bool(self._dirty or self._left)

    def snapshot(self) -> list[dict[str, Any]]:
        return [e.wire() for e in self.entries.values() if e.leaving_at_ms is None]

    def __len__(self) -> int:
        return len(self.entries)
