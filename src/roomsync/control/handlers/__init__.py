"""Control handlers, one module per family; importing this package registers them."""

from __future__ import annotations

from . import room, topology

__all__ = ["room", "topology"]
