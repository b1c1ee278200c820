"""Control handlers, one module per family; importing this package registers them."""

from __future__ import annotations

from . import archive, capture, events, inspection, lineage, policy, query, room, tick, topology

__all__ = [
    "archive",
    "capture",
    "events",
    "inspection",
    "lineage",
    "policy",
    "query",
    "room",
    "tick",
    "topology",
]
