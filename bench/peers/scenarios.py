"""The benchmark scenarios, written once against the driver interface (drivers/base.py).

(a)  fanout  1 writer, S subscribers, N updates of ``value_size`` bytes, at most ``window``
             in flight (an update is in flight until every subscriber has it):
             deliveries/s, latency p50/p95/p99, and every subscriber's kept frames decoded
             with the real codec to check it holds every update.
(a') steady  the same room at a fixed send rate: latency (from the *scheduled* send time,
             so a lagging system is not excused by coordinated omission) and server CPU
             per delivery (/proc/<pid>/stat before/after).
(b)  rooms   R rooms x P peers, each room writing one update every ``rooms_interval`` s
             (peers in turn, rooms staggered): server CPU and RSS.
(c)  idle    C connections (``idle_per_room`` per room), handshake and initial sync done,
             then idle: RSS per connection, and idle CPU.
(d)  late    a new peer brought up to date on a room of E entries, then after a 1%
             divergence: time and bytes (driver-specific: ``Driver.late_joiner``).

Every client joins a cold room alone before the others join it (pycrdt-websocket 0.16.5
hangs when several clients join a cold room at once); all systems get the same treatment.
Every wait is bounded by a deadline; every request loop by a count.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from .drivers import Client, Driver
from .drivers.base import DeliveryCallback
from .servers import Server

WARMUP_BASE = 900_000_000  # seqs of untimed warm-up updates


@dataclass(frozen=True)
class Sizes:
    value_size: int = 64
    fanout_updates: int = 2000
    fanout_subs: int = 50
    window: int = 100
    warmup: int = 200  # untimed updates before (a) and (a')
    steady_rate: float = 500.0
    steady_updates: int = 2000
    rooms: int = 500
    peers_per_room: int = 4
    rooms_interval: float = 2.0
    rooms_duration: float = 10.0
    idle_conns: int = 5000
    idle_per_room: int = 50
    idle_settle: float = 2.0
    late_entries: int = 100_000
    late_divergence: float = 0.01
    late_batch: int = 1000
    connect_concurrency: int = 64
    timeout: float = 60.0  # any single wait (connect, drain, sync)
    scenario_timeout: float = 300.0  # one scenario on one system, all included

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Sizes()
QUICK = Sizes(
    fanout_updates=400, fanout_subs=10, steady_updates=500, rooms=40, rooms_duration=3.0,
    rooms_interval=1.0, idle_conns=400, idle_settle=1.0, late_entries=10_000, timeout=30.0,
    scenario_timeout=90.0,
)


@dataclass
class Context:
    driver: Driver
    server: Server
    session: aiohttp.ClientSession
    sizes: Sizes
    clients: list[Client]  # everything opened, closed by the runner

    def new_client(self, room: str, ident: str, *, on_delivery: DeliveryCallback | None = None,
                   keep: bool = False) -> Client:
        c = self.driver.client(self.session, self.server.base_url, room, ident=ident,
                               on_delivery=on_delivery, keep=keep)
        self.clients.append(c)
        return c


# -- helpers --------------------------------------------------------------------------------


def percentiles(values: Sequence[float], ps: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    if not values:
        return {f"p{p:g}": math.nan for p in ps}
    s = sorted(values)
    return {f"p{p:g}": s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))] for p in ps}


def gen_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def connect_room(ctx: Context, clients: Sequence[Client], sem: asyncio.Semaphore) -> None:
    """First client alone (cold room), then the others concurrently."""
    timeout = ctx.sizes.timeout

    async def one(c: Client) -> None:
        async with sem:
            await c.connect(timeout)

    await one(clients[0])
    await asyncio.gather(*(one(c) for c in clients[1:]))


async def wait_event(ev: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(ev.wait(), timeout)
    except TimeoutError:
        return False
    return True


# -- (a) and (a') ---------------------------------------------------------------------------


async def fanout(ctx: Context, *, steady: bool = False) -> dict[str, Any]:
    sz = ctx.sizes
    n = sz.steady_updates if steady else sz.fanout_updates
    n_subs = sz.fanout_subs
    room = "steady" if steady else "fanout"
    send_t = [0.0] * n
    recv = [[0.0] * n for _ in range(n_subs)]
    counts = [0] * n
    done = asyncio.Event()
    window = asyncio.Semaphore(sz.window)
    state = {"complete": 0, "last": 0.0, "warm": 0}

    def make_cb(row: list[float]) -> DeliveryCallback:
        def cb(seq: int, t: float) -> None:
            if seq >= WARMUP_BASE:
                state["warm"] += 1
                return
            if seq >= n or row[seq]:
                return
            row[seq] = t
            counts[seq] += 1
            if counts[seq] == n_subs:
                state["complete"] += 1
                state["last"] = max(state["last"], t)
                window.release()
                if state["complete"] == n:
                    done.set()
        return cb

    writer = ctx.new_client(room, "w")
    await writer.connect(sz.timeout)
    subs = [ctx.new_client(room, f"s{j}", on_delivery=make_cb(recv[j]), keep=True)
            for j in range(n_subs)]
    await connect_room(ctx, subs, asyncio.Semaphore(sz.connect_concurrency))
    # warm-up (JIT, allocators, buffers): untimed updates, waited for at every subscriber.
    # Built first: a writer's Yjs updates depend on its earlier ones (client clock).
    warm = ctx.driver.make_updates(room, "w", range(WARMUP_BASE, WARMUP_BASE + sz.warmup),
                                   sz.value_size)
    msgs = ctx.driver.make_updates(room, "w", range(n), sz.value_size)
    assert len(msgs) == n
    for msg in warm:
        await writer.send(msg)
        await asyncio.sleep(0.001)
    await subs[0].wait_until(lambda: state["warm"] >= sz.warmup * n_subs, sz.timeout, "warm-up")
    await asyncio.sleep(0.3)

    cpu0, g0 = ctx.server.cpu_seconds(), gen_cpu()
    t0 = time.perf_counter()
    deadline = t0 + sz.timeout + n / 50
    sent = 0
    if steady:
        interval = 1.0 / sz.steady_rate
        for i, msg in enumerate(msgs):
            target = t0 + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif time.perf_counter() > deadline:
                break
            send_t[i] = target
            await writer.send(msg)
            sent += 1
    else:
        for i, msg in enumerate(msgs):
            try:
                await asyncio.wait_for(window.acquire(), max(0.0, deadline - time.perf_counter()))
            except TimeoutError:
                break
            send_t[i] = time.perf_counter()
            await writer.send(msg)
            sent += 1
    t_sent = time.perf_counter()
    finished = await wait_event(done, max(1.0, min(sz.timeout, deadline - t_sent)))
    t_end = state["last"] if finished else time.perf_counter()
    cpu1, g1 = ctx.server.cpu_seconds(), gen_cpu()

    deliveries = sum(counts)
    lat = [row[i] - send_t[i] for row in recv for i in range(sent) if row[i]]
    p = percentiles(lat)
    missing = [ctx.driver.verify(s, range(n), sz.value_size) for s in subs]
    wall = t_end - t0
    out: dict[str, Any] = {
        "updates": n, "subscribers": n_subs, "sent": sent,
        "deliveries": deliveries, "expected": n * n_subs,
        "complete_subs": sum(1 for m in missing if m == 0),
        "missing_total": sum(missing),
        "wall_s": wall,
        "deliveries_per_s": deliveries / wall if wall > 0 else math.nan,
        "lat_p50_ms": p["p50"] * 1e3, "lat_p95_ms": p["p95"] * 1e3, "lat_p99_ms": p["p99"] * 1e3,
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_us_per_delivery": (cpu1 - cpu0) / deliveries * 1e6 if deliveries else math.nan,
        "server_cpu_pct": (cpu1 - cpu0) / wall * 100 if wall > 0 else math.nan,
        "gen_cpu_pct": (g1 - g0) / wall * 100 if wall > 0 else math.nan,
        "finished": finished,
    }
    if steady:
        out["send_rate"] = sent / (t_sent - t0) if t_sent > t0 else math.nan
        out["target_rate"] = sz.steady_rate
    return out


async def steady(ctx: Context) -> dict[str, Any]:
    return await fanout(ctx, steady=True)


# -- (b) ------------------------------------------------------------------------------------


async def rooms(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    n_rooms, n_peers = sz.rooms, sz.peers_per_room
    ticks = max(1, int(sz.rooms_duration / sz.rooms_interval))
    # update seq = k * n_rooms + r, written at (k + r / n_rooms) * interval by peer k % P
    schedule = sorted(
        ((k + r / n_rooms) * sz.rooms_interval, k * n_rooms + r, r, k % n_peers)
        for k in range(ticks) for r in range(n_rooms)
    )
    total = len(schedule)
    send_t = [0.0] * total
    counts = [0] * total
    lat: list[float] = []
    done = asyncio.Event()
    state = {"complete": 0}
    want = n_peers - 1

    def make_cb(r: int, p: int) -> DeliveryCallback:
        seen: set[int] = set()

        def cb(seq: int, t: float) -> None:
            # own writes echoed back (pycrdt-websocket does) and other rooms' seqs: ignore
            if seq >= total or seq % n_rooms != r or (seq // n_rooms) % n_peers == p:
                return
            if seq in seen:
                return
            seen.add(seq)
            if send_t[seq]:
                lat.append(t - send_t[seq])
            counts[seq] += 1
            if counts[seq] == want:
                state["complete"] += 1
                if state["complete"] == total:
                    done.set()
        return cb

    room_clients = [
        [ctx.new_client(f"room{r}", f"r{r}p{p}", on_delivery=make_cb(r, p))
         for p in range(n_peers)]
        for r in range(n_rooms)
    ]
    msgs: dict[int, Any] = {}
    for r in range(n_rooms):
        for p in range(n_peers):
            seqs = [k * n_rooms + r for k in range(ticks) if k % n_peers == p]
            if seqs:
                msgs.update(zip(seqs, ctx.driver.make_updates(f"room{r}", f"r{r}p{p}", seqs,
                                                              sz.value_size), strict=True))

    rss0 = ctx.server.rss_bytes()
    sem = asyncio.Semaphore(sz.connect_concurrency)
    room_sem = asyncio.Semaphore(max(1, sz.connect_concurrency // n_peers))

    async def open_room(cs: list[Client]) -> None:
        async with room_sem:
            await connect_room(ctx, cs, sem)

    t_c = time.perf_counter()
    await asyncio.gather(*(open_room(cs) for cs in room_clients))
    connect_s = time.perf_counter() - t_c
    await asyncio.sleep(1.0)
    rss_connected = ctx.server.rss_bytes()

    cpu0, g0 = ctx.server.cpu_seconds(), gen_cpu()
    t0 = time.perf_counter()
    for at, seq, r, p in schedule:
        delay = t0 + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        send_t[seq] = time.perf_counter()
        await room_clients[r][p].send(msgs[seq])
    finished = await wait_event(done, sz.timeout)
    t1 = time.perf_counter()
    cpu1, g1 = ctx.server.cpu_seconds(), gen_cpu()
    rss_end = ctx.server.rss_bytes()
    p = percentiles(lat, (50, 99))
    wall = t1 - t0
    return {
        "rooms": n_rooms, "peers_per_room": n_peers, "connections": n_rooms * n_peers,
        "updates": total, "deliveries": sum(counts), "expected": total * want,
        "delivered_pct": sum(counts) / (total * want) * 100,
        "connect_s": connect_s,
        "rss_idle_mb": rss0 / 2**20, "rss_connected_mb": rss_connected / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "rss_per_room_kb": (rss_connected - rss0) / n_rooms / 1024,
        "server_cpu_pct": (cpu1 - cpu0) / wall * 100,
        "server_cpu_us_per_delivery": (cpu1 - cpu0) / max(1, sum(counts)) * 1e6,
        "gen_cpu_pct": (g1 - g0) / wall * 100,
        "lat_p50_ms": p["p50"] * 1e3, "lat_p99_ms": p["p99"] * 1e3,
        "wall_s": wall, "finished": finished,
    }


# -- (c) ------------------------------------------------------------------------------------


async def idle(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    n = sz.idle_conns
    per_room = sz.idle_per_room
    n_rooms = math.ceil(n / per_room)

    warm = [ctx.new_client("warmup", f"warm{i}") for i in range(4)]
    await connect_room(ctx, warm, asyncio.Semaphore(4))
    await asyncio.gather(*(c.close() for c in warm))
    await asyncio.sleep(1.0)
    rss0 = ctx.server.rss_bytes()

    groups = [[ctx.new_client(f"idle{r}", f"i{r}c{i}")
               for i in range(min(per_room, n - r * per_room))] for r in range(n_rooms)]
    sem = asyncio.Semaphore(sz.connect_concurrency)
    room_sem = asyncio.Semaphore(8)

    async def open_room(cs: list[Client]) -> None:
        async with room_sem:
            await connect_room(ctx, cs, sem)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(open_room(cs) for cs in groups), return_exceptions=True)
    connect_s = time.perf_counter() - t0
    errors = [r for r in results if isinstance(r, BaseException)]
    await asyncio.sleep(sz.idle_settle)
    connected = sum(1 for cs in groups for c in cs if not c.closed)
    rss1 = ctx.server.rss_bytes()
    cpu0 = ctx.server.cpu_seconds()
    t1 = time.perf_counter()
    await asyncio.sleep(3.0)
    idle_cpu = (ctx.server.cpu_seconds() - cpu0) / (time.perf_counter() - t1) * 100
    out: dict[str, Any] = {
        "target": n, "connected": connected, "rooms": n_rooms,
        "rss_before_mb": rss0 / 2**20, "rss_after_mb": rss1 / 2**20,
        "rss_per_conn_kb": (rss1 - rss0) / max(1, connected) / 1024,
        "connect_s": connect_s, "connects_per_s": connected / connect_s if connect_s else 0,
        "idle_cpu_pct": idle_cpu,
    }
    if errors:
        out["connect_errors"] = f"{len(errors)} rooms failed, first: {errors[0]!r}"[:300]
    return out


# -- (d) ------------------------------------------------------------------------------------


async def late(ctx: Context) -> dict[str, Any]:
    sz = ctx.sizes
    if not ctx.driver.late_joiner_supported:
        return {"skipped": "no room state (transport ceiling)"}
    cpu0 = ctx.server.cpu_seconds()
    out = await ctx.driver.late_joiner(
        ctx.session, ctx.server.base_url, room="late", entries=sz.late_entries,
        divergence=sz.late_divergence, value_size=sz.value_size, batch=sz.late_batch,
        timeout=sz.timeout,
    )
    out["server_cpu_s"] = ctx.server.cpu_seconds() - cpu0
    return out


SCENARIOS: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "fanout": fanout,
    "steady": steady,
    "rooms": rooms,
    "idle": idle,
    "late": late,
}
ALIASES = {"a": "fanout", "a'": "steady", "a2": "steady", "b": "rooms", "c": "idle", "d": "late"}
TITLES = {
    "fanout": "(a) fan-out",
    "steady": "(a') steady rate",
    "rooms": "(b) many rooms",
    "idle": "(c) idle connections",
    "late": "(d) late joiner",
}
