"""The ``topology`` family (SPEC §6) for the single node; scale-out (issue 15) lists every
node from the store's node registry. ``place`` records the node that owns a room's ticks
and compaction (the room record's ``node``); a node runs the tick timer only of rooms
placed on it or not placed at all."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from ..payloads import Empty, NodeRef, Payload, Result, RoomId
from ..registry import REGISTRY, Context
from ..rejects import not_found
from ..snapshots import record_of


class Place(Payload):
    room: RoomId
    node: Annotated[str, Meta(min_length=1, max_length=256)]


class NodeView(Result):
    node: str
    rooms: list[str]
    connections: int
    draining: bool


class TopologyResult(Result):
    nodes: list[NodeView]


class DrainResult(Result):
    node: str
    closed: int


class PlaceResult(Result):
    room: str
    node: str


def _node_view(ctx: Context) -> dict[str, Any]:
    node = ctx.node
    return {
        "node": node.name,
        "rooms": sorted(node.rooms.hosts),
        "connections": len(node.connections),
        "draining": node.draining,
    }


@REGISTRY.command(
    "topology",
    "get",
    Empty,
    "Nodes with their rooms, connections and draining.",
    result=TopologyResult,
)
async def get(ctx: Context, p: Empty) -> dict[str, Any]:
    return {"nodes": [_node_view(ctx)]}


@REGISTRY.command(
    "topology",
    "drain",
    NodeRef,
    "Close the node's peers with 1012 and admit no new ones (bounded by the grace).",
    result=DrainResult,
)
async def drain(ctx: Context, p: NodeRef) -> dict[str, Any]:
    node = ctx.node
    if p.node != node.name:
        raise not_found("node", p.node, field="node")
    open_before = sum(1 for c in node.connections if c.close_code is None)
    await node.drain()
    return {"node": node.name, "closed": open_before}


@REGISTRY.command(
    "topology",
    "place",
    Place,
    "Record the node that owns a room's ticks and compaction.",
    result=PlaceResult,
)
async def place(ctx: Context, p: Place) -> dict[str, Any]:
    if p.node != ctx.node.name:
        raise not_found("node", p.node, field="node")
    await record_of(ctx, p.room)
    await ctx.node.rooms.update_record(p.room, node=p.node)
    return {"room": p.room, "node": p.node}
