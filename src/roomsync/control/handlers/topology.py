"""The ``topology`` family (SPEC §6, §8).

``get`` lists this node, and with several nodes every node of the store's node registry
as its last heartbeat described it (``alive`` false once it is older than
``bus.node_dead_ms``). ``drain`` drains this node, or asks another live node to drain
itself (a ``drain`` signal; ``closed`` is then the connections its last heartbeat
counted). ``place`` records the node that owns a room's ticks and compaction (the room
record's ``node``): this node or any node of the registry; while the placed node is not
live, the live node rendezvous hashing picks owns them (``server/cluster.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from ...core.codes import RejectClass
from ..payloads import Empty, NodeRef, Payload, Result, RoomId
from ..registry import REGISTRY, Context
from ..rejects import Rejected, not_found
from ..snapshots import record_of


class Place(Payload):
    room: RoomId
    node: Annotated[str, Meta(min_length=1, max_length=256)]


class NodeView(Result):
    node: str
    rooms: list[str]
    connections: int
    draining: bool
    #: False once its last heartbeat is older than ``bus.node_dead_ms``.
    alive: bool
    #: The base URL the node announced (clients reach it there), "" when unknown.
    url: str
    #: How old its last heartbeat is (0 for the node answering).
    beat_age_ms: int


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
        "alive": True,
        "url": "",
        "beat_age_ms": 0,
    }


@REGISTRY.command(
    "topology",
    "get",
    Empty,
    "Every node (all the registry's, with several) with rooms, connections, draining, liveness.",
    result=TopologyResult,
)
async def get(ctx: Context, p: Empty) -> dict[str, Any]:
    cluster = ctx.node.cluster
    if cluster is None:
        return {"nodes": [_node_view(ctx)]}
    return {"nodes": cluster.views()}


@REGISTRY.command(
    "topology",
    "drain",
    NodeRef,
    "Close the node's peers with 1012 and admit no new ones (any live node, from any node).",
    result=DrainResult,
)
async def drain(ctx: Context, p: NodeRef) -> dict[str, Any]:
    node, cluster = ctx.node, ctx.node.cluster
    if p.node != node.name:
        beat = cluster.beats.get(p.node) if cluster is not None else None
        if cluster is None or beat is None:
            raise not_found("node", p.node, field="node")
        if not cluster.alive(p.node):
            raise Rejected(
                RejectClass.PRECONDITION_FAILED,
                "node-not-live",
                f"node {p.node!r} sent no heartbeat for {cluster.settings.node_dead_ms} ms: "
                "it cannot be asked to drain (its peers reconnect elsewhere already)",
                field="node",
            )
        cluster.send("drain", None, {"target": p.node})
        connections = beat.info.get("connections", 0)
        return {"node": p.node, "closed": connections if isinstance(connections, int) else 0}
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
    cluster = ctx.node.cluster
    known = {ctx.node.name} | (set(cluster.beats) if cluster is not None else set())
    if p.node not in known:
        raise not_found("node", p.node, field="node")
    await record_of(ctx, p.room)
    await ctx.node.rooms.update_record(p.room, node=p.node)
    return {"room": p.room, "node": p.node}
