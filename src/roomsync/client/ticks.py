"""The SDK's view of the room's tick counter (SPEC §2 ``tick{n, at}``, §6 ``tick``).

The server sends ``tick`` to the room's reading peers each time the counter changes
(its timer, or an operator's ``tick set``/``tick advance``). Ticks are not room state:
nothing is caught up after a reconnect, so :attr:`TickChannel.last` is the last one
received on any connection of this client (None: none yet), and the next change brings
the current value.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import messages as m
from .connection import Connection
from .events import Listeners
from .link import Link


@dataclass(frozen=True, slots=True)
class TickInfo:
    """A ``tick{n, at}``: the counter's value and the server's wall clock (ms) when it
    changed."""

    n: int
    at: int


class TickChannel:
    """Receives the room's ``tick`` messages for one client."""

    def __init__(self, connection: Connection) -> None:
        self.events = Listeners[TickInfo]()
        self.last: TickInfo | None = None
        connection.handle("tick", self._on_tick)

    def _on_tick(self, link: Link, msg: m.Tick) -> None:
        tick = TickInfo(msg.n, msg.at)
        self.last = tick
        self.events.emit(tick)
