"""Room events between committing and delivering: the :class:`Bus` Protocol and the
in-process :class:`MemoryBus` (SPEC §8)."""

from __future__ import annotations

from .base import Bus, BusError, Handler, RoomEvent, Subscription
from .memory import MemoryBus

__all__ = ["Bus", "BusError", "Handler", "MemoryBus", "RoomEvent", "Subscription"]
