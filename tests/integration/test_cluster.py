"""Several nodes on one PostgreSQL store and one Redis bus (SPEC §8, issue 15).

Every test runs real nodes (in this process, each with its own store pool and bus
connection; or as ``roomsync serve`` processes where a node must die by kill -9) against
the test PostgreSQL and Redis, and talks to them over real WebSockets and HTTP.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roomsync.client import Backoff, RoomClient, connect
from roomsync.core.codec import unpack_data
from roomsync.testing.cluster import cluster_processes, running_cluster
from roomsync.testing.control import ok
from roomsync.testing.proxy import TcpProxy
from roomsync.testing.server import ServerHandle, wait_until
from roomsync.testing.wsclient import closed, hello, recv_type, write_until_closed

FAST = Backoff(base=0.02, factor=2, max=0.2)


@pytest.fixture
async def nodes(
    tmp_path: Path, dsn: str, redis: str, prefix: str
) -> AsyncIterator[list[ServerHandle]]:
    async with running_cluster(tmp_path, dsn=dsn, redis=redis, prefix=prefix) as handles:
        await wait_until(lambda: all(len(h.server.cluster.live) == 2 for h in handles), timeout=10)  # type: ignore[union-attr]
        yield handles


async def converged(clients: list[RoomClient], *nodes: RoomClient, timeout: float = 20) -> str:
    """Wait until every client's root equals the server's (asked of each); the root."""
    for c in clients:
        await c.flush(timeout=timeout)

    async def same() -> bool:
        roots = {c.root for c in clients}
        if len(roots) != 1:
            return False
        return {await c.server_root() for c in clients} == roots

    await wait_until(same, timeout=timeout, interval=0.05)
    return clients[0].root


async def test_writes_on_each_node_converge_everywhere(nodes: list[ServerHandle]) -> None:
    a, b = nodes
    rng = random.Random(7)
    clients = [
        await connect(srv.url, "doc", actor=f"w{i}", backoff=FAST)
        for i, srv in enumerate([a, b, a, b])
    ]
    try:
        for round_ in range(20):
            for c in clients:
                path = f"/k/{rng.randrange(30)}"
                if rng.random() < 0.15:
                    c.delete(path)
                else:
                    c.set(path, b"%s:%d" % (c.actor.encode(), round_))
            await asyncio.sleep(rng.random() * 0.01)
        root = await converged(clients)
        values = {c.actor: dict(c.items()) for c in clients}
        assert len({tuple(sorted(v.items())) for v in values.values()}) == 1, values
        assert values["w0"], "nothing was written"
    finally:
        for c in clients:
            await c.close()
    # A joiner on either node gets the same state from the store and the bus.
    for srv in nodes:
        late = await connect(srv.url, "doc", actor=f"late-{srv.port}")
        try:
            await late.wait_synced(timeout=10)
            assert late.root == root
        finally:
            await late.close()


async def test_presence_and_its_leave_cross_nodes(nodes: list[ServerHandle]) -> None:
    a, b = nodes
    ca = await connect(a.url, "room-p", actor="alice")
    cb = await connect(b.url, "room-p", actor="bob")
    try:
        ca.set_presence({"cursor": 1})
        cb.set_presence({"cursor": 2})
        await wait_until(
            lambda: (
                {p.actor for p in cb.presence.values()} >= {"alice"}
                and {p.actor for p in ca.presence.values()} >= {"bob"}
            ),
            timeout=10,
        )
        alice = next(p for p in cb.presence.values() if p.actor == "alice")
        assert alice.state == {"cursor": 1}
        async with aiohttp.ClientSession() as http:
            view = await ok(http, b, "room presence", {"room": "room-p"})
        by_actor = {p["actor"]: p["node"] for p in view["peers"]}
        assert by_actor == {"alice": "node-0", "bob": "node-1"}
        # A peer that joins later on node-1 is told who is on node-0 too.
        cc = await connect(b.url, "room-p", actor="carol")
        try:
            await wait_until(lambda: {"alice", "bob"} <= {p.actor for p in cc.presence.values()})
        finally:
            await cc.close()
        # A presence signal lost on the way (here: a member node-1 was told about that
        # node-0 never had) is repaired by node-0's periodic full announcement.
        host = b.server.rooms.hosts["room-p"]
        ghost = {"peer": "p-ghost", "actor": "ghost", "state": {"cursor": 9}}
        host.remote_presence_diff("node-0", [ghost], [])
        await wait_until(lambda: "ghost" in {p.actor for p in cb.presence.values()})
        await wait_until(lambda: "ghost" not in {p.actor for p in cb.presence.values()})
        assert "alice" in {p.actor for p in cb.presence.values()}
        await ca.close()
        await wait_until(lambda: "alice" not in {p.actor for p in cb.presence.values()})
    finally:
        await ca.close()
        await cb.close()


async def test_a_blob_uploaded_on_one_node_is_announced_and_served_by_the_other(
    nodes: list[ServerHandle],
) -> None:
    a, b = nodes
    up = await connect(a.url, "room-b", actor="up")
    down = await connect(b.url, "room-b", actor="down")
    announced: list[str] = []
    down.on_blob_available(lambda info: announced.append(info.hash))
    try:
        data = random.Random(3).randbytes(50_000)
        digest = await up.put_blob(data)
        await wait_until(lambda: digest in announced, timeout=10)
        assert await down.get_blob(digest, timeout=10) == data
    finally:
        await up.close()
        await down.close()


async def test_revoke_and_room_close_on_one_node_end_sessions_on_the_other(
    nodes: list[ServerHandle],
) -> None:
    a, b = nodes
    async with aiohttp.ClientSession() as http:
        token = b.mint("room-r", ("read", "write"), actor="mallory")
        ws, _ = await hello(http, b.ws_url("room-r"), token=token)
        assert (await ok(http, a, "room revoke", {"sub": "mallory"}))["revoked"] is True
        _, code = await closed(ws)
        assert code == 4003
        # The revocation holds at the handshake of the other node too.
        ws2 = await http.ws_connect(b.ws_url("room-r"))
        await ws2.send_json({"type": "hello", "v": 1, "token": token})
        seen, code = await closed(ws2)
        assert code == 4003, seen
        # Closing the room on node-0 ends node-1's sessions of it (4004).
        await ok(http, a, "room create", {"room": "room-c"})
        ws3, _ = await hello(http, b.ws_url("room-c"), actor="x")
        await ok(http, a, "room close", {"room": "room-c"})
        _, code = await closed(ws3)
        assert code == 4004


async def test_a_global_policy_set_on_one_node_applies_on_the_other(
    nodes: list[ServerHandle],
) -> None:
    a, b = nodes
    async with aiohttp.ClientSession() as http:
        await ok(http, a, "policy set", {"patch": {"max_peers": 3}})
        await wait_until(lambda: b.server.node.policy.max_peers == 3, timeout=10)
        view = await ok(http, b, "policy get", {})
        assert view["policy"]["max_peers"] == 3


async def test_topology_lists_every_node_and_drains_another(
    nodes: list[ServerHandle],
) -> None:
    a, b = nodes
    # The client knows both nodes: drained off node-1, it reconnects to node-0.
    client = await connect([b.url, a.url], "room-d", actor="mover", backoff=FAST)
    writer = await connect(a.url, "room-d", actor="stay")
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until(
                lambda: any(
                    v["node"] == "node-1" and "room-d" in v["rooms"] and v["connections"] >= 1
                    for v in a.server.cluster.views()  # type: ignore[union-attr]
                ),
                timeout=10,
            )
            view = await ok(http, a, "topology get", {})
            by_node = {v["node"]: v for v in view["nodes"]}
            assert set(by_node) == {"node-0", "node-1"}
            assert all(v["alive"] for v in by_node.values())
            assert by_node["node-1"]["url"] == b.url
            assert "room-d" in by_node["node-1"]["rooms"]
            drained = await ok(http, a, "topology drain", {"node": "node-1"})
            assert drained["node"] == "node-1" and drained["closed"] >= 1
            await wait_until(lambda: b.server.node.draining, timeout=10)
            await wait_until(lambda: not b.server.node.connections, timeout=10)
            client.set("/after-drain", b"1")
            writer.set("/from-a", b"2")
            await converged([client, writer])
            assert client.get("/from-a") == b"2"
            view = await ok(http, a, "topology get", {})
            await wait_until(
                lambda: any(
                    v["node"] == "node-1" and v["draining"]
                    for v in a.server.cluster.views()  # type: ignore[union-attr]
                ),
                timeout=10,
            )
            status, body = await _call_raw(http, a, "topology drain", {"node": "node-9"})
            assert status == 404 and body["reject"]["code"] == "node-unknown"
            placed = await ok(http, a, "topology place", {"room": "room-d", "node": "node-1"})
            assert placed == {"room": "room-d", "node": "node-1"}
    finally:
        await client.close()
        await writer.close()


async def _call_raw(
    http: aiohttp.ClientSession, srv: ServerHandle, command: str, payload: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    from roomsync.testing.control import call

    return await call(http, srv, command, payload)


async def test_ticks_run_on_one_node_and_move_when_it_leaves(
    tmp_path: Path, dsn: str, redis: str, prefix: str
) -> None:
    async with running_cluster(tmp_path, dsn=dsn, redis=redis, prefix=prefix, nodes=2) as (a, b):
        await wait_until(lambda: len(a.server.cluster.live) == 2 == len(b.server.cluster.live))  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:
            await ok(http, a, "room create", {"room": "clock"})
            await ok(http, a, "tick set", {"room": "clock", "interval_ms": 50})
            await wait_until(
                lambda: (
                    a.server.node.ticks.running("clock") or b.server.node.ticks.running("clock")
                ),
                timeout=10,
            )
            running = [s for s in (a, b) if s.server.node.ticks.running("clock")]
            assert len(running) == 1, "exactly one node runs the room's timer"
            owner, other = (a, b) if running[0] is a else (b, a)
            watcher = await connect(other.url, "clock", actor="watch")
            try:
                seen: list[int] = []
                watcher.on_tick(lambda t: seen.append(t.n))
                await wait_until(lambda: len(seen) >= 5, timeout=10)
                assert seen == sorted(seen), "ticks arrive in order on the other node"
                # Placement moves the timer to the node named (live).
                await ok(
                    http, a, "topology place", {"room": "clock", "node": other.server.node_name}
                )
                await wait_until(lambda: other.server.node.ticks.running("clock"), timeout=10)
                await wait_until(lambda: not owner.server.node.ticks.running("clock"), timeout=10)
                before = (await ok(http, other, "tick get", {"room": "clock"}))["n"]
                await asyncio.sleep(1.0)
                after = (await ok(http, other, "tick get", {"room": "clock"}))["n"]
                # One timer: at most one advance per 50 ms interval (plus the edge).
                assert 1 <= after - before <= 21, (before, after)
            finally:
                await watcher.close()


async def test_a_bus_cut_loses_no_change(tmp_path: Path, dsn: str, redis: str, prefix: str) -> None:
    """node-1 reaches Redis through a proxy that is cut while node-0 takes writes: its peers
    converge once the bus is back (the node reads the store from its durable head)."""
    host, port = redis.removeprefix("redis://").split("/")[0].split(":")
    async with TcpProxy(host, int(port)) as proxy:
        async with running_cluster(tmp_path, dsn=dsn, redis=redis, prefix=prefix, nodes=1) as (a,):
            url_b = f"redis://127.0.0.1:{proxy.port}/0"
            async with running_cluster(
                tmp_path / "b",
                dsn=dsn,
                redis=url_b,
                prefix=prefix,
                nodes=1,
                server__node_id="node-b",
            ) as (b,):
                wa = await connect(a.url, "cut", actor="wa", backoff=FAST)
                rb = await connect(b.url, "cut", actor="rb", backoff=FAST)
                try:
                    wa.set("/before", b"0")
                    await wait_until(lambda: rb.get("/before") == b"0", timeout=10)
                    await proxy.cut()
                    for i in range(200):
                        wa.set(f"/during/{i}", b"%d" % i)
                    await wa.flush(timeout=10)
                    await asyncio.sleep(0.5)
                    await proxy.restore()
                    await wait_until(lambda: rb.get("/during/199") == b"199", timeout=20)
                    await converged([wa, rb])
                    assert sum(1 for _ in rb.items("/during/")) == 200
                finally:
                    await wa.close()
                    await rb.close()


async def test_acked_writes_survive_kill_9_of_their_node(
    tmp_path: Path, dsn: str, redis: str, prefix: str
) -> None:
    """Two ``roomsync serve`` processes; the writer's node is killed mid-stream: every
    change it acknowledged is on the other node, and peers there converge."""
    with cluster_processes(tmp_path, dsn=dsn, redis=redis, prefix=prefix) as (p0, p1):
        acked: dict[str, int] = {}
        async with aiohttp.ClientSession() as http:
            reader = await connect(p1.url, "k9", actor="reader", backoff=FAST)
            try:
                ws, _ = await hello(http, p0.ws_url("k9"), actor="writer", catchup=False)

                def kill_at_1000(n: int) -> None:
                    if n == 1000:
                        p0.proc.send_signal(signal.SIGKILL)

                await write_until_closed(ws, acked, on_acked=kill_at_1000)
                p0.proc.wait(10)
                assert len(acked) >= 1000
                await wait_until(lambda: all(reader.get(p) is not None for p in acked), timeout=20)
                # A fresh peer on the surviving node reads every acknowledged change.
                assert p1.proc.poll() is None, "the surviving node is running"
                ws1, _ = await hello(http, p1.ws_url("k9"), catchup=False)
                await ws1.send_json({"type": "request", "paths": sorted(acked)})
                found: dict[str, int] = {}
                while True:
                    msg = await recv_type(ws1, "pack")
                    for c in unpack_data(msg["data"]):
                        found[c.path] = c.seq or 0
                    if msg.get("done"):
                        break
                assert set(found) >= set(acked)
                assert all(found[p] == s for p, s in acked.items())
                await ws1.close()
                # node-1 sees node-0 gone from the registry's live set.
                await wait_until(lambda: _live_nodes(http, p1), timeout=10, interval=0.2)
            finally:
                await reader.close()


async def _live_nodes(http: aiohttp.ClientSession, srv: Any) -> bool:
    view = await ok(http, srv, "topology get", {})
    alive = {v["node"]: v["alive"] for v in view["nodes"]}
    return alive.get("node-0") is False and alive.get("node-1") is True
