"""Overload of one node (a ``roomsync serve`` child, so its RSS is its own): a reconnect
storm, a burst 10x over the rate limit, slow consumers that stop reading, and rooms
opened and abandoned, while honest SDK clients keep writing.

The node must stay responsive (``/healthz`` p99 reported), close only with documented
codes, keep its RSS bounded (peak reported) and let the honest clients converge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp

from ...client import Backoff, RoomClient, connect
from ...core.codec import pack_data
from ...core.entries import Change
from ..rawws import OP_CLOSE, OP_TEXT, RawWebSocket, client_frame
from .harness import DOCUMENTED_CLOSES, Context, Node, Probes, counts_by, raise_fd_limit
from .scorecard import Outcome

#: The stream budget of the node under test: small, so slow consumers pass it quickly.
STREAM_BUDGET = 1 << 20
RATE_BURST = 400
RATE_PER_S = 200
#: The heartbeat of the node under test: its liveness check (three heartbeats of silence)
#: must not close the slow consumers before their queues pass the stream budget, however
#: slow the machine (a peer that stops reading also stops sending pongs).
SLOW_HEARTBEAT_MS = 60_000


async def hello_raw(
    node: Node, room: str, actor: str, **fields: object
) -> tuple[RawWebSocket, dict]:  # type: ignore[type-arg]
    ws = await RawWebSocket.open(node.host, node.port, f"/ws/{room}", timeout=60)
    await ws.send_json({"type": "hello", "v": 1, "actor": actor, **fields})
    try:
        frame = await ws.read_message(timeout=60)
    except BaseException:
        await ws.close()
        raise
    if frame.opcode == OP_CLOSE:  # closed without an error envelope first
        return ws, {"type": "close", "code": frame.close_code}
    return ws, frame.json()


async def storm(node: Node, n: int, out: Outcome) -> None:
    """``n`` clients connect and say hello at once, to 20 rooms."""
    t0 = time.monotonic()

    async def one(i: int) -> str:
        try:
            ws, first = await hello_raw(node, f"storm-{i % 20}", f"s{i}", catchup=False)
        except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            return "connect-failed"
        await ws.close()
        return str(first.get("type") if first.get("type") == "welcome" else first.get("code"))

    results = await asyncio.gather(*(one(i) for i in range(n)))
    tally: dict[str, int] = {}
    for r in results:
        tally[r] = tally.get(r, 0) + 1
    out.figures["storm"] = tally
    out.figures["storm_s"] = round(time.monotonic() - t0, 2)
    out.check(
        set(tally) <= {"welcome", "overload"},
        f"storm: answers other than welcome/overload: {tally}",
    )
    out.faults += 1


async def burst(node: Node, out: Outcome) -> None:
    """One peer sends 10x its burst at once (refused ``rate-limited``, the session goes
    on); then it keeps sending 10x its rate for longer than ``rate_grace_ms`` (4008)."""
    ping = client_frame(json.dumps({"type": "ping"}).encode())
    ws, _ = await hello_raw(node, "burst", "b", catchup=False)
    ws.send_raw(ping * (10 * RATE_BURST))
    answered = limited = 0
    while answered < 10 * RATE_BURST:
        msg = (await ws.read_message(timeout=30)).json()
        answered += 1
        limited += msg.get("code") == "rate-limited"
    out.figures["burst_refused"] = limited
    out.check(limited >= 8 * RATE_BURST, f"burst: only {limited} messages refused")
    await asyncio.sleep(1.0)
    ws.send_raw(ping)
    alive = (await ws.read_message(timeout=10)).json().get("type") == "pong"
    out.check(alive, "burst: the session did not survive a one-off burst")
    code: int | None = None
    for _ in range(100):  # 10x the rate (200/s) for up to 10 s: closed once past the grace
        try:
            ws.send_raw(ping * (RATE_PER_S // 10) * 10)
            await ws.writer.drain()
        except (ConnectionError, OSError):
            break
        await asyncio.sleep(0.1)
        if ws.reader.at_eof():
            break
    _, code = await ws.until_close(timeout=30)
    await ws.close()
    if code is None:  # the CLOSE frame was lost to the reset of our own writes: ask the node
        async with aiohttp.ClientSession() as http:
            closes = await counts_by(http, node.url, "roomsync_closes_total", "code")
        code = 4008 if closes.get("4008") else None
    out.figures["sustained_flood_close"] = code
    out.check(code == 4008, f"sustained flood 10x over the rate closed with {code}")
    out.faults += 1


async def slow_consumers(
    node: Node, n: int, writer: RoomClient, http: aiohttp.ClientSession, out: Outcome
) -> None:
    """``n`` peers that stop reading while ``writer`` writes 4 KiB entries to their room,
    64 at a time, until the node has closed every one of them (at most 16 MiB)."""
    before = (await counts_by(http, node.url, "roomsync_closes_total", "code")).get("4001", 0)
    peers = [(await hello_raw_noread(node, "slow", f"slow{i}")) for i in range(n)]
    closed = 0
    for i in range(4096):
        writer.set(f"/slow/{i}", b"x" * 4096)
        if i % 64 == 63:
            await writer.flush(timeout=60)
            closes = await counts_by(http, node.url, "roomsync_closes_total", "code")
            closed = closes.get("4001", 0) - before
            if closed >= n:
                break
    await writer.flush(timeout=60)
    codes: dict[str, int] = {}
    for ws in peers:
        _, code = await ws.until_close(timeout=30)
        codes[str(code)] = codes.get(str(code), 0) + 1
        await ws.close()
    out.figures["slow_consumer_closes"] = codes
    # Every one passes the stream budget (4001) long before the liveness check could find
    # it silent: the node under test announces a heartbeat of SLOW_HEARTBEAT_MS.
    out.check(codes == {"4001": n}, f"slow consumers closed with {codes}")
    out.faults += 1


async def hello_raw_noread(node: Node, room: str, actor: str) -> RawWebSocket:
    ws = await RawWebSocket.open(node.host, node.port, f"/ws/{room}", rcvbuf=4096, timeout=60)
    await ws.send_json({"type": "hello", "v": 1, "actor": actor, "catchup": False})
    return ws


async def many_rooms(node: Node, n: int, out: Outcome) -> None:
    """``n`` rooms, each opened with one write and abandoned (dropped, no CLOSE)."""
    gate = asyncio.Semaphore(50)
    refused = 0
    answers: dict[str, int] = {}

    async def one(i: int) -> None:
        nonlocal refused
        async with gate:
            try:
                ws, first = await hello_raw(node, f"abandoned-{i}", "r", catchup=False)
            except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as e:
                key = f"connect failed: {type(e).__name__}"
                answers[key] = answers.get(key, 0) + 1
                refused += 1
                return
            try:
                await opened(ws, first, i)
            finally:
                await ws.close()

    async def opened(ws: RawWebSocket, first: dict, i: int) -> None:  # type: ignore[type-arg]
        nonlocal refused
        key = str(first.get("type") if first.get("type") == "welcome" else first)
        answers[key] = answers.get(key, 0) + 1
        if first.get("type") != "welcome":
            refused += 1
            return
        change = Change("/x", int(time.time() * 1000), 0, "r", b"%d" % i)
        await ws.send_json({"type": "pack", "data": pack_data([change])})
        for _ in range(1000):  # other frames (a notice, say) until the ack
            frame = await ws.read_message(timeout=30)
            if frame.opcode == OP_CLOSE:
                key = f"closed {frame.close_code} before the ack"
                answers[key] = answers.get(key, 0) + 1
                refused += 1
                return
            if frame.opcode == OP_TEXT and frame.json().get("type") == "ack":
                return

    t0 = time.monotonic()
    async with asyncio.TaskGroup() as group:  # one failure cancels the rest, none outlives
        for i in range(n):
            group.create_task(one(i))
    out.figures["rooms_opened"] = n
    out.figures["rooms_s"] = round(time.monotonic() - t0, 2)
    out.figures["rooms_answers"] = answers
    out.check(refused == 0, f"{refused} room openings refused: {answers}")


async def honest_load(clients: list[RoomClient], stop: asyncio.Event) -> int:
    n = 0
    while not stop.is_set():
        for c in clients:
            c.set(f"/honest/{c.actor}/{n % 500}", b"%d" % n)
        n += 1
        await asyncio.sleep(0.02)
    return n


async def run(ctx: Context, out: Outcome) -> None:
    storm_n = ctx.scaled(out, "reconnect storm clients", 2000, 2000, 2000)
    slow_n = ctx.scaled(out, "slow consumers", 100, 100, 100)
    rooms_n = ctx.scaled(out, "rooms opened and abandoned", 2000, 10_000, 10_000)
    raise_fd_limit(storm_n * 2 + 4096)
    node = Node(
        ctx.workdir / "data",
        env={
            "ROOMSYNC_POLICY_STREAM_BUDGET_BYTES": str(STREAM_BUDGET),
            "ROOMSYNC_POLICY_RATE_BURST_MESSAGES": str(RATE_BURST),
            "ROOMSYNC_SERVER_ROOM_IDLE_UNLOAD_MS": "1000",
            "ROOMSYNC_SERVER_HEARTBEAT_MS": str(SLOW_HEARTBEAT_MS),
        },
    )
    honest: list[RoomClient] = []
    stop = asyncio.Event()
    with node.running():
        async with (
            aiohttp.ClientSession() as http,
            Probes(out, node.url, node, interval=0.1).running() as probes,
        ):
            try:
                for k in range(3):
                    honest.append(
                        await connect(
                            node.url, "honest", actor=f"h{k}", backoff=Backoff(0.05, 2, 1.0)
                        )
                    )
                writer = await connect(node.url, "slow", actor="slow-writer")
                honest.append(writer)
                load = asyncio.create_task(honest_load(honest[:3], stop))
                await storm(node, storm_n, out)
                await burst(node, out)
                await slow_consumers(node, slow_n, writer, http, out)
                await many_rooms(node, rooms_n, out)
                stop.set()
                rounds = await load
                for c in honest[:3]:
                    await c.flush(timeout=30)
                roots = {c.root for c in honest[:3]}
                server_root = await honest[0].server_root()
                out.check(roots == {server_root}, "honest clients did not converge")
                out.check(not any(c.refused for c in honest), "honest writes were refused")
                deadline = time.monotonic() + 15
                loaded = await counts_by(http, node.url, "roomsync_rooms_loaded", "")
                while time.monotonic() < deadline:
                    loaded = await counts_by(http, node.url, "roomsync_rooms_loaded", "")
                    if sum(loaded.values()) <= 10:
                        break
                    await asyncio.sleep(0.5)
                out.figures["rooms_loaded_after"] = sum(loaded.values())
                out.check(sum(loaded.values()) <= 10, f"abandoned rooms stay loaded: {loaded}")
                closes = await counts_by(http, node.url, "roomsync_closes_total", "code")
                out.figures["server_closes"] = closes
                bad = {
                    c: n
                    for c, n in closes.items()
                    if not (c.isdigit() and int(c) in DOCUMENTED_CLOSES)
                    and c not in ("1005", "1006")
                }
                out.check(not bad, f"closes with undocumented codes: {bad}")
                out.load.update({"honest_clients": 3, "honest_rounds": rounds})
            finally:
                stop.set()
                for c in honest:
                    with contextlib.suppress(Exception):
                        await c.close()
        out.crashes += len(node.log_events("session.internal_error"))
        out.check(probes.failed == 0, f"{probes.failed} /healthz probes failed")
        code = node.kill(15)
        out.check(code == 0, f"SIGTERM exit status {code}")
    out.load.update({"storm": storm_n, "slow_consumers": slow_n, "rooms": rooms_n})
    rss = out.peak_rss_bytes or 0
    out.check(rss < 1 << 30, f"peak RSS {rss >> 20} MiB")
