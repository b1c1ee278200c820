"""Several nodes under faults (SPEC §8, issue 16): ``kill -9`` of one node of three,
PostgreSQL and Redis unreachable, and a node partitioned in a network namespace.

Every scenario runs ``roomsync serve`` child processes on the machine's PostgreSQL (a
database of the run's own, dropped after) and Redis (a key prefix of the run's own), with
fast heartbeats (``bus.heartbeat_ms`` 200, a node is dead after 1.5 s) and a short store
timeout (``storage.postgres_timeout_ms`` 2 s, so a node cut off from the database stops
acknowledging within seconds). What must hold, whatever the fault: nothing acknowledged
is lost (read back from PostgreSQL), every room's op log is gap-free, ``roomsync replay``
matches, peers are told (refusals with a retry hint, 1011) rather than left waiting, the
node recovers with no manual step, and every peer converges.

A service is made unreachable through :class:`~roomsync.testing.proxy.TcpProxy` (``cut``:
connections reset; ``silence``: a black hole), never by stopping the machine's shared
PostgreSQL or Redis. ``tc netem`` (loss, delay) needs the ``sch_netem`` kernel module,
which this machine's kernel does not have: the partition is the veth link of the node's
namespace set down, and its PostgreSQL and Redis traffic black-holed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from ...auth.tokens import TokenService
from ...client import Backoff, connect
from ...core.codec import unpack_data
from ...storage.postgres import PostgresStore
from ..postgres import find_server_async, postgres_database_async
from ..proxy import TcpProxy
from ..redis import ENV_SERVER as REDIS_ENV
from ..redis import delete_prefix, unique_prefix
from ..server import TEST_KEYS
from .backends import ready_within, readyz
from .durability import ROOMS, Writer, replay_cli, stop_writers, verify_log
from .harness import Context, Node, counts_by
from .scorecard import Outcome

FAST = Backoff(base=0.05, factor=2, max=0.5)


def redis_server() -> str:
    """The Redis of the run: ``$ROOMSYNC_TEST_REDIS`` or the machine's."""
    return os.environ.get(REDIS_ENV, "") or "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Backends:
    dsn: str
    redis: str
    prefix: str

    def node_env(self, workdir: Any, *, store_timeout_ms: int = 30_000) -> dict[str, str]:
        """The nodes' settings; ``store_timeout_ms`` short only where PostgreSQL is made
        unreachable (elsewhere a commit slowed by a loaded machine must not fail)."""
        return {
            "ROOMSYNC_BUS_PREFIX": self.prefix,
            "ROOMSYNC_BUS_HEARTBEAT_MS": "200",
            "ROOMSYNC_BUS_NODE_DEAD_MS": "1500",
            "ROOMSYNC_BLOBS_DIR": str(workdir / "blobs"),
            "ROOMSYNC_BLOBS_SHARED": "true",
            "ROOMSYNC_SERVER_HEARTBEAT_MS": "1000",
            "ROOMSYNC_STORAGE_POSTGRES_TIMEOUT_MS": str(store_timeout_ms),
            "ROOMSYNC_SERVER_ROOM_IDLE_UNLOAD_MS": "60000",
        }

    def store_env(self) -> dict[str, str]:
        return {"ROOMSYNC_STORAGE_BACKEND": "postgres", "ROOMSYNC_STORAGE_POSTGRES_DSN": self.dsn}


@contextlib.asynccontextmanager
async def shared_backends() -> AsyncIterator[Backends]:
    server, why = await find_server_async()
    if server is None:
        raise RuntimeError(f"PostgreSQL is not reachable: {why}")
    url, prefix = redis_server(), unique_prefix()
    async with postgres_database_async(server) as dsn:
        try:
            yield Backends(dsn, url, prefix)
        finally:
            await delete_prefix(url, prefix)


def via(url: str, proxy: TcpProxy) -> str:
    """``url`` (a DSN or Redis URL) pointed at ``proxy`` instead of its host and port."""
    parts = urlsplit(url)
    user, at, _ = parts.netloc.rpartition("@")
    netloc = f"{user}{at}{proxy.listen}:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (5432 if "postgres" in url else 6379)


def node_args(dsn: str, redis: str | None, name: str) -> list[str]:
    args = ["--store", dsn, "--node-id", name]
    return [*args, "--bus", redis] if redis is not None else args


@contextlib.asynccontextmanager
async def started(*nodes: Node) -> AsyncIterator[None]:
    """Start ``nodes`` (off the event loop: a proxy they connect through runs on it) and
    stop them with SIGTERM at the end of the block."""
    try:
        for n in nodes:
            await asyncio.to_thread(n.start)
        yield
    finally:
        for n in nodes:
            await asyncio.to_thread(n.kill, 15)


async def writers_on(
    nodes: Sequence[Node], per_node: int, *, prefer: Sequence[int] | None = None
) -> list[Writer]:
    """``per_node`` SDK writers homed on each node (its URL first, then the others')."""
    writers = []
    urls = [n.url for n in nodes]
    for i in prefer if prefer is not None else range(len(nodes)):
        for k in range(per_node):
            actor = f"n{i}w{k}"
            order = urls[i:] + urls[:i]
            client = await connect(
                order, ROOMS[k % len(ROOMS)], actor=actor, backoff=FAST, connect_timeout_s=30
            )
            writers.append(Writer(client, actor))
    return writers


async def converge(writers: list[Writer], out: Outcome, timeout: float = 60) -> dict[str, str]:
    """Flush every writer and wait until each room's clients share one root, the root
    their nodes serve; the roots by room."""
    for w in writers:
        try:
            await w.client.flush(timeout=timeout)
        except TimeoutError:
            out.check(False, f"{w.actor}: flush did not finish in {timeout} s")
    deadline = time.monotonic() + timeout
    roots: dict[str, str] = {}
    while True:
        by_room: dict[str, set[str]] = {}
        for w in writers:
            by_room.setdefault(w.client.room, set()).add(w.client.root)
        served = {w.client.room: await w.client.server_root() for w in writers}
        if all(len(r) == 1 and r == {served[room]} for room, r in by_room.items()):
            roots = {room: next(iter(r)) for room, r in by_room.items()}
            break
        if time.monotonic() > deadline:
            out.check(False, f"clients did not converge in {timeout} s: {by_room} vs {served}")
            break
        await asyncio.sleep(0.2)
    return roots


def internal_errors(*nodes: Node) -> int:
    """``session.internal_error`` log events of ``nodes`` so far (crashes found)."""
    return sum(len(n.log_events("session.internal_error")) for n in nodes)


async def finish(b: Backends, writers: list[Writer], roots: dict[str, str], out: Outcome) -> None:
    """With every node stopped: nothing acked lost and the op logs gap-free up to the
    heads (read from PostgreSQL), ``roomsync replay`` reproduces each converged root, and
    whatever was refused was refused with a retryable code (the SDK sends it again)."""
    out.lost += await verify_log(
        PostgresStore(b.dsn), ROOMS, writers, out, "at the end", quiet=True
    )
    for room, root in roots.items():
        report = await replay_cli(room, env=b.store_env())
        out.check(report.get("match") is True, f"replay of {room} does not match: {report}")
        replayed = str(report.get("replayed_root"))
        out.check(
            replayed == root, f"{room}: converged root {root[:12]} != replayed {replayed[:12]}"
        )
    codes = sorted({r.code for w in writers for r in w.refused})
    out.figures["refused"] = sum(len(w.refused) for w in writers)
    out.figures["refused_codes"] = codes
    out.check(set(codes) <= {"internal", "overload"}, f"refusals not retryable: {codes}")


async def progress(writers: list[Writer], out: Outcome, what: str, within: float = 30) -> None:
    """Wait until some writer had one more write acked."""
    before = sum(len(w.acked) for w in writers)
    deadline = time.monotonic() + within
    while sum(len(w.acked) for w in writers) <= before:
        if time.monotonic() > deadline:
            out.check(False, f"{what}: no write acked in {within:.0f} s")
            return
        await asyncio.sleep(0.05)


# -- kill -9 of one node of three ---------------------------------------------------------


async def run_kill(ctx: Context, out: Outcome) -> None:
    cycles = ctx.scaled(out, "kill -9 cycles of one node of three", 3, 10, 10)
    load_s = float(ctx.pick(1.0, 2.0))
    async with shared_backends() as b:
        env = b.node_env(ctx.workdir)
        nodes = [
            Node(ctx.workdir / f"node-{i}", env=env, args=node_args(b.dsn, b.redis, f"node-{i}"))
            for i in range(3)
        ]
        writers: list[Writer] = []
        tasks: list[asyncio.Task[None]] = []
        stop = asyncio.Event()
        roots: dict[str, str] = {}
        try:
            for n in nodes:
                await asyncio.to_thread(n.start)
            writers = await writers_on(nodes, int(ctx.pick(2, 3)))
            tasks = [asyncio.create_task(w.run(stop)) for w in writers]
            for cycle in range(cycles):
                victim = nodes[cycle % len(nodes)]
                await asyncio.sleep(load_s)
                await progress(writers, out, f"cycle {cycle}")
                code = victim.kill()
                out.check(code == -9, f"cycle {cycle}: kill -9 exit status {code}")
                out.faults += 1
                await asyncio.sleep(load_s)  # the load goes on through the other nodes
                await progress(writers, out, f"cycle {cycle}, node {victim.data_dir.name} down")
                out.lost += await verify_log(
                    PostgresStore(b.dsn), ROOMS, writers, out, f"after kill {cycle + 1}"
                )
                await asyncio.to_thread(victim.start)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 90)
            roots = await converge(writers, out)
        finally:
            stop.set()
            await stop_writers(writers, tasks)
            crashed = internal_errors(*nodes)
            for n in nodes:
                await asyncio.to_thread(n.kill, 15)
            out.peak_rss_bytes = max(n.peak_rss for n in nodes) or None
        out.crashes += crashed
        await finish(b, writers, roots, out)
    out.load.update(
        {
            "nodes": 3,
            "clients": len(writers),
            "kill9_cycles": cycles,
            "acked_changes": sum(len(w.acked) for w in writers),
        }
    )


# -- PostgreSQL unreachable -----------------------------------------------------------------


async def outages(
    http: aiohttp.ClientSession,
    node: Node,
    writer: Writer,
    out: Outcome,
    proxy: TcpProxy,
    *,
    check: str,
    name: str,
    seconds: float = 3.0,
) -> None:
    """Make the backend behind ``proxy`` unreachable twice: its connections reset
    (``cut``), then black-holed (``silence``: no reset, nothing passes). Each time
    ``/readyz`` must name ``check``, and once the backend is back the node must be ready
    and acknowledging again with no manual step (recovery timed)."""

    async def silence() -> None:
        proxy.silence()

    async def resume() -> None:
        proxy.resume()

    for mode, start, end in (("reset", proxy.cut, proxy.restore), ("black_hole", silence, resume)):
        label = f"{name}_{mode}"
        acked_before = len(writer.acked)
        await start()
        t0 = time.monotonic()
        named = False
        while time.monotonic() - t0 < seconds + 10:
            status, body = await readyz(http, node.url)
            if status == 503 and not body["checks"].get(check, {}).get("ok", True):
                named = True
                if time.monotonic() - t0 >= seconds:
                    break
            await asyncio.sleep(0.1)
        out.check(named, f"{label}: /readyz never named {check}")
        out.figures[f"{label}_acked_during"] = len(writer.acked) - acked_before
        await end()
        ready = await ready_within(http, node.url, 30)
        out.check(ready is not None, f"{label}: /readyz not 200 within 30 s of the recovery")
        out.figures[f"{label}_ready_after_s"] = None if ready is None else round(ready, 2)
        await progress([writer], out, f"after {label}")
        out.faults += 1


async def run_postgres(ctx: Context, out: Outcome) -> None:
    async with shared_backends() as b:
        host, port = target(b.dsn)
        async with TcpProxy(host, port) as proxy:
            node = Node(
                ctx.workdir / "node",
                env=b.node_env(ctx.workdir, store_timeout_ms=2000),
                args=node_args(via(b.dsn, proxy), None, "pg-node"),
            )
            stop = asyncio.Event()
            writers: list[Writer] = []
            tasks: list[asyncio.Task[None]] = []
            try:
                async with started(node):
                    writers = await writers_on([node], 2)
                    tasks = [asyncio.create_task(w.run(stop)) for w in writers]
                    await progress(writers, out, "warm-up")
                    async with aiohttp.ClientSession() as http:
                        await outages(
                            http, node, writers[0], out, proxy, check="store", name="postgres"
                        )
                        closes = await counts_by(http, node.url, "roomsync_closes_total", "code")
                    stop.set()
                    await asyncio.wait_for(asyncio.gather(*tasks), 90)
                    roots = await converge(writers, out)
                    crashed = internal_errors(node)
            finally:
                stop.set()
                await stop_writers(writers, tasks)
        out.crashes += crashed
        await finish(b, writers, roots, out)
    out.figures["server_closes"] = closes
    out.check(
        bool(out.figures["refused_codes"]) or closes.get("1011", 0) > 0,
        "writers were never told the store was away (no refusal, no 1011)",
    )
    out.load.update({"clients": len(writers), "acked_changes": sum(len(w.acked) for w in writers)})


# -- Redis unreachable ------------------------------------------------------------------------


class Observer:
    """A raw reading peer: the seqs of every change it is sent, in arrival order. It
    sends the application heartbeat (``ping`` every ``heartbeat_s``) as a client must:
    a peer that only reads is silent, and the node closes it (1011 ``timeout``) after
    three heartbeats of silence."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, heartbeat_s: float) -> None:
        self.ws = ws
        self.seqs: list[int] = []
        self.closed: int | None = None
        #: The last ``error`` envelope the node sent it (why it was closed).
        self.error: dict[str, Any] | None = None
        self.task = asyncio.create_task(self._read())
        self.pinger = asyncio.create_task(self._ping(heartbeat_s))

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                body = msg.json()
                if body.get("type") == "pack":
                    self.seqs.extend(c.seq or 0 for c in unpack_data(body["data"]))
                elif body.get("type") == "error":
                    self.error = body
        self.closed = self.ws.close_code
        self.pinger.cancel()

    async def _ping(self, every: float) -> None:
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
            while not self.ws.closed:
                await self.ws.send_json({"type": "ping"})
                await asyncio.sleep(every)

    async def close(self) -> None:
        self.pinger.cancel()
        await self.ws.close()
        await self.task


async def observe(http: aiohttp.ClientSession, node: Node, room: str) -> Observer:
    ws = await http.ws_connect(node.ws_url(room))
    await ws.send_json({"type": "hello", "v": 1, "actor": f"observer-{secrets.token_hex(3)}"})
    heartbeat_ms = int(node.env.get("ROOMSYNC_SERVER_HEARTBEAT_MS", "15000"))
    return Observer(ws, heartbeat_ms / 2000)


async def run_redis(ctx: Context, out: Outcome) -> None:
    async with shared_backends() as b:
        host, port = target(b.redis)
        async with TcpProxy(host, port) as proxy:
            env = b.node_env(ctx.workdir)
            a = Node(ctx.workdir / "a", env=env, args=node_args(b.dsn, b.redis, "a"))
            c = Node(ctx.workdir / "b", env=env, args=node_args(b.dsn, via(b.redis, proxy), "b"))
            stop = asyncio.Event()
            writers: list[Writer] = []
            tasks: list[asyncio.Task[None]] = []
            try:
                async with started(a, c):
                    async with aiohttp.ClientSession() as http:
                        watchers = [await observe(http, c, room) for room in ROOMS]
                        await asyncio.sleep(0.5)
                        writers = await writers_on([a, c], 2)  # two on a, two on b
                        # Paced: the observers (in this process) must keep up with
                        # everything the four write, or they would be slow consumers.
                        tasks = [asyncio.create_task(w.run(stop, pause=0.02)) for w in writers]
                        await progress(writers, out, "warm-up")

                        b_writer = writers[2]
                        await outages(http, c, b_writer, out, proxy, check="bus", name="redis")
                        out.check(
                            out.figures["redis_reset_acked_during"] > 0,
                            "node b stopped acking its own peers while Redis was away",
                        )
                        stop.set()
                        await asyncio.wait_for(asyncio.gather(*tasks), 90)
                        roots = await converge(writers, out)
                        store = PostgresStore(b.dsn)
                        await store.open()
                        try:
                            heads = {
                                r: (await store.load_room(r, now_ms=0)).record.head for r in ROOMS
                            }
                        finally:
                            await store.close()
                        deadline = time.monotonic() + 30
                        while time.monotonic() < deadline and any(
                            (w.seqs[-1] if w.seqs else 0) < heads[r]
                            for w, r in zip(watchers, ROOMS, strict=True)
                        ):
                            await asyncio.sleep(0.1)
                        for w, room in zip(watchers, ROOMS, strict=True):
                            expected = list(range(1, heads[room] + 1))
                            out.check(
                                w.seqs == expected,
                                f"{room}: node b's observer did not get seqs 1..{heads[room]} "
                                f"once in order ({len(w.seqs)} seqs, closed {w.closed}: "
                                f"{w.error})",
                            )
                            await w.close()
                        events = await counts_by(
                            http, c.url, "roomsync_bus_events_total", "outcome"
                        )
                        out.figures["node_b_bus_events"] = events
                    crashed = internal_errors(a, c)
            finally:
                stop.set()
                await stop_writers(writers, tasks)
        out.crashes += crashed
        await finish(b, writers, roots, out)
    out.load.update({"nodes": 2, "clients": len(writers) + 2})


# -- a node partitioned in its network namespace ---------------------------------------------


@contextlib.contextmanager
def namespace() -> Any:
    """A network namespace with a veth pair: (name, host-side device, host IP, its IP)."""
    tag = f"{os.getpid() % 10000}{random.randrange(100)}"
    ns, host_dev, ns_dev = f"rsns{tag}", f"rsh{tag}", f"rsn{tag}"
    octet = 1 + (os.getpid() + random.randrange(200)) % 250
    host_ip, ns_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    ip("netns", "add", ns)
    try:
        ip("link", "add", host_dev, "type", "veth", "peer", "name", ns_dev)
        ip("link", "set", ns_dev, "netns", ns)
        ip("addr", "add", f"{host_ip}/30", "dev", host_dev)
        ip("link", "set", host_dev, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_dev)
        ip("netns", "exec", ns, "ip", "link", "set", ns_dev, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_dev, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", host_dev], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def link(dev: str, state: str) -> None:
    subprocess.run(["ip", "link", "set", dev, state], check=True, capture_output=True, timeout=30)


async def run_partition(ctx: Context, out: Outcome) -> None:
    out.notes.append(
        "loss and delay (tc netem) not injected: this kernel has no sch_netem; the partition "
        "is the veth link set down and black-holed PostgreSQL/Redis traffic"
    )
    async with shared_backends() as b:
        with namespace() as (ns, host_dev, host_ip, ns_ip):
            pg_host, pg_port = target(b.dsn)
            r_host, r_port = target(b.redis)
            async with (
                TcpProxy(pg_host, pg_port, listen=host_ip) as pg,
                TcpProxy(r_host, r_port, listen=host_ip) as rd,
            ):
                env = b.node_env(ctx.workdir, store_timeout_ms=2000)
                a = Node(ctx.workdir / "a", env=env, args=node_args(b.dsn, b.redis, "a"))
                p = Node(
                    ctx.workdir / "p",
                    env=env,
                    args=node_args(via(b.dsn, pg), via(b.redis, rd), "p"),
                    host=ns_ip,
                    prefix=["ip", "netns", "exec", ns],
                )
                stop = asyncio.Event()
                writers: list[Writer] = []
                tasks: list[asyncio.Task[None]] = []
                try:
                    async with started(a, p):
                        async with aiohttp.ClientSession() as http:
                            writers = await writers_on([a, p], 2)
                            on_a, on_p = writers[:2], writers[2:]
                            tasks = [asyncio.create_task(w.run(stop)) for w in writers]
                            await progress(on_p, out, "warm-up on the namespaced node")
                            # 1. Its PostgreSQL and Redis traffic black-holed: it stops
                            #    acknowledging (nothing can be made durable) and says so.
                            pg.silence()
                            rd.silence()
                            await asyncio.sleep(1.0)
                            await asyncio.sleep(3.0)  # > postgres_timeout_ms
                            status, body = await readyz(http, p.url)
                            out.check(status == 503, f"partitioned node /readyz {status}")
                            out.figures["backend_partition_readyz"] = sorted(
                                k
                                for k, v in body["checks"].items()
                                if isinstance(v, dict) and not v["ok"]
                            )
                            await progress(on_a, out, "node a during the backend partition")
                            pg.resume()
                            rd.resume()
                            ready = await ready_within(http, p.url, 30)
                            out.check(ready is not None, "partitioned node not ready after healing")
                            # Its peers were told: refusals with a retry hint, or 1011.
                            told = await counts_by(
                                http, p.url, "roomsync_changes_refused_total", "code"
                            )
                            closes = await counts_by(http, p.url, "roomsync_closes_total", "code")
                            out.figures["partitioned_node_refused"] = told
                            out.figures["partitioned_node_closes"] = closes
                            out.check(
                                told.get("internal", 0) + told.get("overload", 0) > 0
                                or closes.get("1011", 0) > 0,
                                "the partitioned node's peers were never told (no refusal, 1011)",
                            )
                            out.faults += 1
                            # 2. The whole link down: p unreachable for everyone.
                            link(host_dev, "down")
                            t0 = time.monotonic()
                            await progress(on_a, out, "node a during the full partition")
                            dead = False
                            while time.monotonic() - t0 < 10:
                                view = await topology(http, a)
                                if view.get("p") is False:
                                    dead = True
                                    break
                                await asyncio.sleep(0.2)
                            out.check(dead, "node a never saw the partitioned node dead")
                            await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - t0)))
                            link(host_dev, "up")
                            ready = await ready_within(http, p.url, 30)
                            out.check(ready is not None, "node p not ready after the link is back")
                            out.figures["ready_after_link_up_s"] = (
                                None if ready is None else round(ready, 2)
                            )
                            alive = False
                            for _ in range(100):
                                if (await topology(http, a)).get("p") is True:
                                    alive = True
                                    break
                                await asyncio.sleep(0.1)
                            out.check(alive, "node a does not see p alive again")
                            out.faults += 1
                            stop.set()
                            await asyncio.wait_for(asyncio.gather(*tasks), 90)
                            roots = await converge(writers, out)
                            out.figures["clients_on"] = sorted(
                                (w.client.session_info.node or "?")
                                if w.client.session_info
                                else "-"
                                for w in writers
                            )
                        crashed = internal_errors(a, p)
                finally:
                    stop.set()
                    await stop_writers(writers, tasks)
        out.crashes += crashed
        await finish(b, writers, roots, out)
    out.load.update(
        {"nodes": 2, "clients": len(writers), "acked_changes": sum(len(w.acked) for w in writers)}
    )


async def topology(http: aiohttp.ClientSession, node: Node) -> dict[str, bool]:
    """Node name -> alive, as ``topology get`` on ``node`` answers."""
    token = TokenService(dict(TEST_KEYS)).mint(
        room="*", caps=("topology:get",), ttl_s=60, now_s=int(time.time()), actor="ops"
    )
    async with http.post(
        f"{node.url}/v1/control/topology/get",
        json={},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        body = await resp.json()
    if not body.get("ok"):
        return {}
    return {v["node"]: v["alive"] for v in body["result"]["nodes"]}
