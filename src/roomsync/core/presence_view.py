"""The client's view of the other peers' presence (SPEC §5), sans I/O.

Presence is ephemeral per-peer JSON state: never room state, never in the canonical hash.
The view starts from the ``welcome`` snapshot, then follows the server's batched
``presence{peers}`` frames and ``presence-leave{peer}``. The rules every client follows:

* a peer whose state is ``null`` has no presence: that is how a client clears its own
  (the protocol has no client leave message), so a ``null`` state removes the peer from
  the view and reports it as left;
* the client's own peer (the welcome's ``peer``) is never in the view;
* when the connection drops the view is emptied (everyone reported as left): nobody is
  known to be present until the next welcome's snapshot, which replaces it whole.

Each update returns the :class:`PresenceEvent` to report (empty when nothing changed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PresenceInfo:
    """One other peer's presence: its session ``peer`` id, its ``actor``, its ``state``."""

    peer: str
    actor: str
    state: Any


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """What changed in the view (``RoomClient.presence``): peers with a new state, peers gone."""

    changed: tuple[PresenceInfo, ...] = ()
    left: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changed or self.left)


class PresenceView:
    """``peer -> PresenceInfo`` of the other peers; each update returns its event."""

    __slots__ = ("peers", "self_peer")

    def __init__(self) -> None:
        self.peers: dict[str, PresenceInfo] = {}
        self.self_peer: str | None = None

    def reset(self, self_peer: str, snapshot: Iterable[object]) -> PresenceEvent:
        """A new session (``welcome``): replace everything with its snapshot."""
        self.self_peer = self_peer
        fresh: dict[str, PresenceInfo] = {}
        for item in snapshot:
            info = _info(item)
            if info is not None and info.peer != self_peer and info.state is not None:
                fresh[info.peer] = info
        left = tuple(p for p in self.peers if p not in fresh)
        changed = tuple(i for p, i in fresh.items() if self.peers.get(p) != i)
        self.peers = fresh
        return PresenceEvent(changed, left)

    def update(self, items: Iterable[object]) -> PresenceEvent:
        """A ``presence{peers}`` batch: the latest state of every peer that changed."""
        changed: dict[str, PresenceInfo] = {}
        left: list[str] = []
        for item in items:
            info = _info(item)
            if info is None or info.peer == self.self_peer:
                continue
            if info.state is None:
                changed.pop(info.peer, None)
                if self.peers.pop(info.peer, None) is not None:
                    left.append(info.peer)
            elif self.peers.get(info.peer) != info:
                self.peers[info.peer] = info
                changed[info.peer] = info
        return PresenceEvent(tuple(changed.values()), tuple(left))

    def leave(self, peer: str) -> PresenceEvent:
        """``presence-leave{peer}``: the peer disconnected or its presence expired."""
        if self.peers.pop(peer, None) is None:
            return PresenceEvent()
        return PresenceEvent(left=(peer,))

    def clear(self) -> PresenceEvent:
        """The connection dropped: nobody is known to be present until the next welcome."""
        left = tuple(self.peers)
        self.peers = {}
        self.self_peer = None
        return PresenceEvent(left=left)


def _info(item: object) -> PresenceInfo | None:
    if not isinstance(item, Mapping):
        return None
    peer = item.get("peer")
    actor = item.get("actor")
    if not isinstance(peer, str):
        return None
    return PresenceInfo(peer, actor if isinstance(actor, str) else "", item.get("state"))
