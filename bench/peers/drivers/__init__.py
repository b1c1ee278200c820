"""One driver per protocol family; ``get_driver(system)`` picks it for a system name."""

from __future__ import annotations

from .base import Client, Driver


def get_driver(system: str, family: str) -> Driver:
    if family == "yjs":
        from .yjs import YjsDriver

        return YjsDriver(system)
    if family == "hocuspocus":
        from .yjs import YjsDriver

        return YjsDriver(system, hocuspocus=True)
    if family == "raw":
        from .raw import RawDriver

        return RawDriver(system)
    if family in ("roomsync", "roomsync-json"):
        from .roomsync import RoomsyncDriver

        return RoomsyncDriver(system, binary=family == "roomsync")
    raise ValueError(f"unknown driver family {family!r}")


__all__ = ["Client", "Driver", "get_driver"]
