"""The ``topology`` family (SPEC §6) for the single node; scale-out (issue 15) lists every
node from the store's node registry. ``place`` comes with it."""

from __future__ import annotations

from typing import Any

from ..payloads import Empty, NodeRef
from ..registry import REGISTRY, Context
from ..rejects import not_found


def _node_view(ctx: Context) -> dict[str, Any]:
    node = ctx.node
    return {
        "node": node.name,
        "rooms": sorted(node.rooms.hosts),
        "connections": len(node.connections),
        "draining": node.draining,
    }


@REGISTRY.command("topology", "get", Empty, "Nodes with their rooms, connections and draining.")
async def get(ctx: Context, p: Empty) -> dict[str, Any]:
    return {"nodes": [_node_view(ctx)]}


@REGISTRY.command(
    "topology",
    "drain",
    NodeRef,
    "Close the node's peers with 1012 and admit no new ones (bounded by the grace).",
)
async def drain(ctx: Context, p: NodeRef) -> dict[str, Any]:
    node = ctx.node
    if p.node != node.name:
        raise not_found("node", p.node, field="node")
    open_before = sum(1 for c in node.connections if c.close_code is None)
    await node.drain()
    return {"node": node.name, "closed": open_before}
