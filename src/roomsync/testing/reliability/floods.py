"""The hostile floods of ``tests/security`` as scenarios with figures, against a real
``roomsync serve`` child: PINGs from a peer that never reads, ``subscribe`` with 256
prefixes on a 20,000-entry room, ``request{since:0}`` from a peer that never reads,
connections that never say hello, refused hellos to new rooms, and a room at
``max_peers`` during a storm (what the client past the cap is told, and whether the
SDK's retry honours it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from typing import Any

import aiohttp

from ...client import Backoff, connect
from ..load import fill, healthz_worst_s
from ..rawws import OP_PING, RawWebSocket, client_frame
from .harness import Context, Node, Probes, counts_by
from .scorecard import Outcome

MAX_PEERS = 1000
ROOM_ENTRIES = 20_000


async def subscribe_flood(node: Node, out: Outcome, http: aiohttp.ClientSession) -> None:
    """200 ``subscribe`` frames, half with 256 new prefixes, on a 20k-entry room, in one
    burst from a peer with a tiny receive buffer: the slowest ``/healthz`` meanwhile."""
    await fill(http, node.ws_url("big"), ROOM_ENTRIES)
    flooder = await RawWebSocket.open(node.host, node.port, "/ws/big", rcvbuf=4096)
    await flooder.send_json({"type": "hello", "v": 1, "actor": "f", "subscribe": ["/nothing"]})
    prefixes = [f"/other/{i}" for i in range(256)]
    flooder.send_raw(
        b"".join(
            client_frame(
                json.dumps(
                    {"type": "subscribe", "paths": prefixes if i % 2 else ["/nothing"]}
                ).encode()
            )
            for i in range(200)
        )
    )
    worst = await healthz_worst_s(http, node.url, 20)
    await flooder.close()
    out.figures["subscribe_flood_healthz_worst_ms"] = round(worst * 1000, 1)
    out.check(worst < 5.0, f"/healthz took {worst:.2f} s during the subscribe flood")
    out.bad_inputs += 200


async def request_flood(node: Node, out: Outcome, http: aiohttp.ClientSession) -> None:
    """100 ``request{since:0}`` from a reader that does not read: 8 answers queued at
    most, the rest refused ``rate-limited``, the session alive."""
    await fill(http, node.ws_url("wide"), ROOM_ENTRIES, value=b'"' + b"v" * 250 + b'"')
    flooder = await RawWebSocket.open(node.host, node.port, "/ws/wide", rcvbuf=4096)
    await flooder.send_json(
        {"type": "hello", "v": 1, "actor": "f", "catchup": False, "caps": ["read"]}
    )
    flooder.send_raw(client_frame(json.dumps({"type": "request", "since": 0}).encode()) * 100)
    await flooder.writer.drain()
    await asyncio.sleep(1.0)  # the node queues what it queues while nobody reads
    rss_while = node.sample_rss()
    dones = refusals = 0
    first = (await flooder.read_message(timeout=30)).json()
    out.check(first.get("type") == "welcome", f"request flood: {first}")
    while dones + refusals < 100:
        msg = (await flooder.read_message(timeout=60)).json()
        if msg["type"] == "pack" and msg.get("done"):
            dones += 1
        elif msg["type"] == "error":
            refusals += msg.get("code") == "rate-limited"
    await flooder.close()
    out.figures["request_flood_answers"] = dones
    out.figures["request_flood_refused"] = refusals
    out.figures["request_flood_rss_mib"] = None if rss_while is None else rss_while >> 20
    out.check(dones <= 8, f"{dones} whole-room answers queued for one peer")
    out.bad_inputs += 100


async def pings_never_read(node: Node, out: Outcome) -> None:
    flooder = await RawWebSocket.open(node.host, node.port, "/ws/pings", rcvbuf=4096)
    ping = client_frame(b"p" * 125, OP_PING)
    try:
        for _ in range(100):  # 10,000 pings, 1.3 MB, pongs never read
            flooder.send_raw(ping * 100)
            await asyncio.sleep(0.01)
        _, code = await flooder.until_close(timeout=30)
    except (ConnectionError, OSError):
        code = None
    await flooder.close()
    out.figures["ping_flood_close"] = code
    out.bad_inputs += 10_000
    out.check(code in (4008, 4001, None), f"ping flood closed with {code}")


async def silent_connections(node: Node, n: int, out: Outcome, http: aiohttp.ClientSession) -> None:
    """``n`` connections that never say hello, on a node capped at n // 2: newcomers
    shed the oldest silent ones (1011 overload), an honest hello still gets in."""
    silent: list[RawWebSocket] = []
    try:
        for _ in range(n):
            silent.append(await RawWebSocket.open(node.host, node.port, "/ws/silent"))
        ws = await RawWebSocket.open(node.host, node.port, "/ws/silent")
        await ws.send_json({"type": "hello", "v": 1, "actor": "honest"})
        first = (await ws.read_message(timeout=30)).json()
        out.check(first.get("type") == "welcome", f"honest hello at the cap: {first}")
        await ws.close()
        shed = await counts_by(http, node.url, "roomsync_connections_shed_total", "")
        out.figures["silent_shed"] = sum(shed.values())
    finally:
        for raw in silent:
            await raw.close()
    out.bad_inputs += n


async def refused_hellos(node: Node, n: int, out: Outcome) -> None:
    gate = asyncio.Semaphore(25)
    codes: dict[str, int] = {}

    async def one(i: int) -> None:
        async with gate:
            ws = await RawWebSocket.open(node.host, node.port, f"/ws/refused-{i}")
            await ws.send_json({"type": "hello", "v": 1, "token": "not-a-token"})
            _, code = await ws.until_close(timeout=30)
            codes[str(code)] = codes.get(str(code), 0) + 1
            await ws.close()

    wal = node.data_dir / "roomsync.db-wal"
    before = wal.stat().st_size if wal.exists() else 0
    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    out.figures["refused_hellos"] = codes
    out.figures["refused_hellos_per_s"] = round(n / (time.monotonic() - t0))
    out.check(set(codes) == {"4003"}, f"refused hellos closed with {codes}")
    grown = (wal.stat().st_size if wal.exists() else 0) - before
    out.figures["refused_hellos_wal_growth_bytes"] = grown
    out.check(grown < 1 << 20, f"refused hellos grew the WAL by {grown} bytes")
    db = sqlite3.connect(f"file:{node.data_dir / 'roomsync.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT count(*) FROM rooms WHERE room LIKE 'refused-%'").fetchone()
    finally:
        db.close()
    out.figures["refused_hellos_room_rows"] = rows[0]
    out.check(rows[0] == 0, f"refused hellos left {rows[0]} room rows")
    out.bad_inputs += n


async def full_room(node: Node, out: Outcome) -> None:
    """``max_peers`` peers in one room, then one more raw peer and one SDK client."""
    peers: list[RawWebSocket] = []
    try:

        async def join(i: int) -> RawWebSocket:
            ws = await RawWebSocket.open(node.host, node.port, "/ws/full", timeout=60)
            await ws.send_json({"type": "hello", "v": 1, "actor": f"p{i}", "catchup": False})
            assert (await ws.read_message(timeout=60)).json()["type"] == "welcome"
            return ws

        peers = list(await asyncio.gather(*(join(i) for i in range(MAX_PEERS))))
        extra = await RawWebSocket.open(node.host, node.port, "/ws/full")
        await extra.send_json({"type": "hello", "v": 1, "actor": "late"})
        frames, code = await extra.until_close(timeout=30)
        await extra.close()
        told: dict[str, Any] = frames[0].json() if frames else {}
        out.figures["peer_1001_close"] = code
        out.figures["peer_1001_told"] = {
            k: told.get(k) for k in ("code", "retry_after_ms", "message")
        }
        out.check(
            code == 1011 and told.get("code") == "overload" and "retry_after_ms" in told,
            f"the peer past max_peers got {code} {told}",
        )
        # The SDK keeps retrying, no sooner than retry_after_ms; a seat frees up: it gets in.
        task = asyncio.create_task(
            connect(
                node.url, "full", actor="sdk", backoff=Backoff(0.05, 2, 1.0), connect_timeout_s=30
            )
        )
        await asyncio.sleep(1.5)
        for ws in peers[:5]:
            await ws.close()
        client = await asyncio.wait_for(task, 30)
        waits = client.stats.waits
        out.figures["sdk_retries_before_seat"] = client.stats.attempts - 1
        hinted = [w for w in waits if w.retry_after_ms]
        out.figures["sdk_waits_s_vs_hint_ms"] = [
            (round(w.delay, 2), w.retry_after_ms) for w in waits
        ]
        out.check(bool(hinted), "the SDK saw no retry hint from the full room")
        out.check(
            all(w.delay * 1000 >= (w.retry_after_ms or 0) for w in hinted),
            "the SDK retried sooner than retry_after_ms",
        )
        await client.close()
    finally:
        for ws in peers:
            await ws.close()


async def run(ctx: Context, out: Outcome) -> None:
    silent_n = ctx.scaled(out, "connections that never send hello", 2000, 10_000, 10_000)
    refused_n = ctx.scaled(out, "refused hellos to new rooms", 3000, 3000, 3000)
    node = Node(
        ctx.workdir / "data",
        dev=False,
        env={
            "ROOMSYNC_SERVER_MAX_CONNECTIONS": str(max(silent_n // 2, MAX_PEERS + 100)),
            "ROOMSYNC_POLICY_ANONYMOUS_CAPS": "read,write,presence",
            "ROOMSYNC_POLICY_STREAM_BUDGET_BYTES": str(256 * 1024),
            "ROOMSYNC_POLICY_RATE_GRACE_MS": "500",
        },
    )
    with node.running():
        async with aiohttp.ClientSession() as http, Probes(out, node.url, node).running() as p:
            await pings_never_read(node, out)
            await subscribe_flood(node, out, http)
            await request_flood(node, out, http)
            await refused_hellos(node, refused_n, out)
            await silent_connections(node, silent_n, out, http)
            await full_room(node, out)
            closes = await counts_by(http, node.url, "roomsync_closes_total", "code")
            out.figures["server_closes"] = closes
        out.crashes += len(node.log_events("session.internal_error"))
        out.check(p.failed == 0, f"{p.failed} /healthz probes failed")
        with contextlib.suppress(Exception):
            out.check(node.kill(15) == 0, "SIGTERM did not exit 0")
    out.faults += 6
    out.load.update({"silent": silent_n, "refused_hellos": refused_n, "room_peers": MAX_PEERS})
