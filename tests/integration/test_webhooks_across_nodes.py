"""Signed webhooks with several nodes on one PostgreSQL store (issue 17, SPEC §8).

Each event is produced by the one node where it happened (the node that committed seq 1
makes ``room.created``, the peer's node its ``peer.joined``/``peer.left``, each node the
``changes.committed`` of its own commits) and goes into the shared outbox; every node
runs a deliverer, and leased claims make each delivery attempted by one node at a time.
So a receiver gets every event once, and a node that stops leaves its undelivered events
to the others. Real nodes (in this process), a real receiver on a free port that checks
every signature, the test PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.hooks.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify
from roomsync.testing.cluster import node_settings, running_cluster
from roomsync.testing.server import ServerHandle, free_port, running_server, wait_until
from roomsync.testing.server import test_settings as settings_of
from roomsync.testing.wsclient import hello, recv_type

SECRET = "whsec-nodes-0123456789abcdef"
FAST = {
    "webhooks__debounce_ms": 100,
    "webhooks__max_backoff_ms": 300,
    "webhooks__lease_ms": 1000,
}


class Receiver:
    """Records every verified event; counts each ``Roomsync-Event-Id`` it was sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self.events: list[dict[str, Any]] = []
        self.ids: dict[str, int] = {}
        self.bad = 0
        self.refused = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(SECRET, request.headers.get(SIGNATURE_HEADER, ""), body):
            self.bad += 1
            return web.Response(status=401)
        if self.status != 200:
            self.refused += 1
            return web.Response(status=self.status)
        event = await request.json()
        eid = request.headers[EVENT_ID_HEADER]
        assert eid == event["id"]
        self.ids[eid] = self.ids.get(eid, 0) + 1
        if self.ids[eid] == 1:
            self.events.append(event)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def of(self, type_: str, room: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_ and room in (None, e["room"])]

    def committed(self, room: str) -> int:
        return sum(e["data"]["changes"] for e in self.of("changes.committed", room))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def ch(path: str, ts: int) -> Change:
    return Change(path, ts, 0, "a", b"v")


async def write(ws: aiohttp.ClientWebSocketResponse, changes: list[Change]) -> None:
    await ws.send_json({"type": "pack", "data": pack_data(changes)})
    ack = await recv_type(ws, "ack")
    assert None not in ack["seqs"], ack


async def live(handles: list[ServerHandle]) -> None:
    n = len(handles)
    await wait_until(lambda: all(len(h.server.cluster.live) == n for h in handles), timeout=10)  # type: ignore[union-attr]


async def test_each_event_is_delivered_once_whichever_node_made_it(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    dsn: str,
    redis: str,
    prefix: str,
    receiver: Receiver,
) -> None:
    hooks = [{"url": receiver.url, "secret": SECRET}]
    async with running_cluster(
        tmp_path, dsn=dsn, redis=redis, prefix=prefix, policy__webhooks=hooks, **FAST
    ) as (a, b):
        await live([a, b])
        on_a, _ = await hello(http, a.ws_url("shared"))
        on_b, _ = await hello(http, b.ws_url("shared"))
        only_b, _ = await hello(http, b.ws_url("solo"))
        ts = itertools.count(1)
        for i in range(10):  # both nodes commit to "shared", interleaved
            await write(on_a, [ch(f"/a/{i}", next(ts)), ch(f"/a/{i}/x", next(ts))])
            await write(on_b, [ch(f"/b/{i}", next(ts))])
            await write(only_b, [ch(f"/s/{i}", next(ts))])
        for ws in (on_a, on_b, only_b):
            await ws.close()
        await wait_until(
            lambda: (
                receiver.committed("shared") == 30
                and receiver.committed("solo") == 10
                and len(receiver.of("peer.left")) == 3
            ),
            timeout=20,
        )
        await asyncio.sleep(1.0)  # nothing more comes (a duplicate would be a second claim)

    assert receiver.bad == 0
    assert set(receiver.ids.values()) == {1}, "an event was delivered twice"
    assert receiver.committed("shared") == 30 and receiver.committed("solo") == 10
    nodes = {a.server.node_name: "a", b.server.node_name: "b"}
    assert {e["node"] for e in receiver.events} == set(nodes)
    # One room.created per room, made by the node that committed its seq 1.
    created = {e["room"]: e for e in receiver.of("room.created")}
    assert len(receiver.of("room.created")) == 2 and set(created) == {"shared", "solo"}
    assert nodes[created["solo"]["node"]] == "b"
    # Each peer's join and leave, once, from its own node.
    for kind in ("peer.joined", "peer.left"):
        made = sorted((e["room"], nodes[e["node"]]) for e in receiver.of(kind))
        assert made == [("shared", "a"), ("shared", "b"), ("solo", "b")], kind
    # A node's changes.committed events of one room never overlap each other, and
    # together with the other node's they account for every seq: the shared room's
    # commits were interleaved, so a node's seq ranges may enclose the other's seqs.
    for node in nodes:
        ranges = sorted(
            (e["data"]["first_seq"], e["data"]["last_seq"])
            for e in receiver.of("changes.committed", "shared")
            if e["node"] == node
        )
        assert all(prev[1] < nxt[0] for prev, nxt in itertools.pairwise(ranges)), ranges
    by_node = {
        nodes[e["node"]]: e["data"]["paths"] for e in receiver.of("changes.committed", "shared")
    }
    assert set(by_node) == {"a", "b"}
    paths = {
        p: nodes[e["node"]]
        for e in receiver.of("changes.committed", "shared")
        for p in e["data"]["paths"]
    }
    assert {p for p, n in paths.items() if n == "a"} == {
        p for i in range(10) for p in (f"/a/{i}", f"/a/{i}/x")
    }
    assert {p for p, n in paths.items() if n == "b"} == {f"/b/{i}" for i in range(10)}


async def test_a_stopped_node_leaves_its_undelivered_events_to_the_other(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    dsn: str,
    redis: str,
    prefix: str,
    receiver: Receiver,
) -> None:
    receiver.status = 503  # refuses for now: every delivery is retried
    hooks = [{"url": receiver.url, "secret": SECRET}]
    values = {"policy__webhooks": hooks, **FAST}

    def settings(i: int) -> Any:
        dotted = node_settings(tmp_path, i, dsn=dsn, redis=redis, prefix=prefix, **values)
        return settings_of(tmp_path / f"node-{i}", **dotted)

    async with running_server(tmp_path, settings=settings(1)) as b:
        async with contextlib.AsyncExitStack() as stack:
            a = await stack.enter_async_context(running_server(tmp_path, settings=settings(0)))
            await live([a, b])
            ws, _ = await hello(http, a.ws_url("left-behind"))
            await write(ws, [ch("/x", 1), ch("/y", 2)])
            await ws.close()
            # a made room.created, peer.joined, changes.committed and peer.left; the
            # receiver has refused some of them already.
            await wait_until(lambda: receiver.refused >= 4, timeout=15)
            made_by = a.server.node_name
        # a is stopped: nothing it made has arrived, all of it is in the outbox.
        assert receiver.events == []
        receiver.status = 200
        await wait_until(lambda: len(receiver.events) == 4, timeout=20)
        await asyncio.sleep(1.0)
        assert {e["type"] for e in receiver.events} == {
            "room.created",
            "peer.joined",
            "changes.committed",
            "peer.left",
        }
        assert {e["node"] for e in receiver.events} == {made_by}  # made by a, sent by b
        assert set(receiver.ids.values()) == {1} and receiver.bad == 0
        store: Any = b.server.store
        log = await store.webhook_log("left-behind")
        assert {o.outcome for o in log} == {"delivered"} and len(log) == 4
