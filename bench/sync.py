"""Write, fan-out and reconcile benchmarks of ``roomsync serve``.

    python -m bench.sync [--quick] [--only apply,fanout,steady,mst] [--profile PREFIX]

1. apply: W writers (hello ``caps: ["write"]``, so no broadcasts reach them) each send P
   packs of C changes with a few packs in flight; time from the first send until every
   ack arrived. A change is acked only after the SQLite commit that carries it, so
   changes/s = changes persisted per second. Run with 100-change and 1-change packs.
   Checked: every seq non-null, and a new peer's ``welcome.head`` equals the total.
2. fan-out: 1 writer, S subscribers in one room; U updates (one 64-byte change per pack,
   at most 100 un-acked). delivered/s = (changes received by all subscribers) / (first send
   -> last receive). Latency per delivery = receive time - send time (one process, one
   clock). Checked: every subscriber got every update exactly once.
3. steady: the same room shape at a fixed write rate (500/s) for ~10 s: latency
   percentiles and the server's CPU time (utime+stime, /proc/PID/stat) per delivery.
4. mst: (a) in-process: two MerkleSearchTrees of N entries differing in 10 paths,
   reconciled with :func:`roomsync.core.reconcile.reconcile`; rounds, nodes, bytes vs the
   postcard size of the full state. (b) over the wire: a room loaded with N entries (packs
   of 1,000), the bytes of a full catch-up, then a client holding the state with 10 local
   differences connects with ``catchup: false`` and runs mst-root / mst-get rounds /
   request{paths} / pack (its own winners) and checks that both roots are equal after.

Server pinned to core 0, generator to core 1 (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from roomsync.core import mst as mst_mod
from roomsync.core.codec import b64decode, pack_data, unpack_data
from roomsync.core.entries import Change
from roomsync.core.merge import wins
from roomsync.core.postcard import encode_pack
from roomsync.core.reconcile import FetchNodes, ReconcileResult, reconcile

from .common import (
    BenchServer,
    CpuMeter,
    RawWS,
    bench_server,
    fmt_int,
    log,
    percentile,
    py_spy,
    run_main,
    verdict,
)

TARGET_DELIVERED_PER_S = 200_000.0
TARGET_STEADY_P99_MS = 5.0
TARGET_CPU_PER_DELIVERY_US = 10.0
TARGET_MST_RATIO = 0.02

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Sizes:
    apply_writers: int = 10
    apply_packs: int = 100  # of 100 changes, per writer
    apply_window: int = 4  # packs in flight per writer
    apply1_packs: int = 2000  # of 1 change, per writer
    apply1_window: int = 32
    subscribers: int = 50
    updates: int = 2000
    inflight: int = 100
    steady_rate: float = 500.0
    steady_s: float = 10.0
    mst_entries: int = 100_000
    mst_diffs: int = 10


FULL = Sizes()
QUICK = Sizes(
    apply_packs=10, apply1_packs=200, subscribers=10, updates=500, steady_s=2.0, mst_entries=20_000
)


def wire_len(payload_len: int, client: bool) -> int:
    """Bytes of a WebSocket frame carrying ``payload_len`` bytes (header + mask key)."""
    head = 2 if payload_len < 126 else 4 if payload_len < 1 << 16 else 10
    return head + (4 if client else 0) + payload_len


def value_of(i: int, size: int = 64) -> bytes:
    text = b'{"n":%d,"text":"' % i
    return text + b"x" * max(0, size - len(text) - 2) + b'"}'


# -- a minimal client ---------------------------------------------------------------------------


class Peer:
    """One aiohttp WebSocket with byte accounting; the reader is the caller's."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.sent = 0
        self.received = 0

    @classmethod
    async def connect(
        cls, session: aiohttp.ClientSession, url: str, hello: dict[str, Any], timeout: float = 30.0
    ) -> tuple[Peer, dict[str, Any], list[dict[str, Any]]]:
        """Connect and hello; return (peer, welcome, catch-up packs until ``done``).

        No catch-up is waited for when the hello says ``catchup: false`` or the peer
        cannot read (no ``read`` cap).
        """
        ws = await session.ws_connect(
            url,
            autoping=True,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=timeout, ws_close=10.0),
        )
        peer = cls(ws)
        await peer.send({"type": "hello", "v": 1, **hello})
        welcome = await peer.recv(timeout)
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"expected welcome, got {welcome}")
        packs: list[dict[str, Any]] = []
        if hello.get("catchup") is not False and "read" in welcome["caps"]:
            while True:
                msg = await peer.recv(timeout)
                if msg.get("type") != "pack":
                    raise RuntimeError(f"expected catch-up pack, got {str(msg)[:300]}")
                packs.append(msg)
                if msg.get("done"):
                    break
        return peer, welcome, packs

    async def send(self, obj: dict[str, Any]) -> None:
        text = _encode(obj).decode()
        self.sent += wire_len(len(text), client=True)
        await self.ws.send_str(text)

    async def recv_text(self, timeout: float = 30.0) -> str:
        msg = await self.ws.receive(timeout)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"connection ended: {msg.type} {msg.data!r} {msg.extra!r}")
        self.received += wire_len(len(msg.data), client=False)
        return str(msg.data)

    async def recv(self, timeout: float = 30.0) -> dict[str, Any]:
        obj: dict[str, Any] = _decode(await self.recv_text(timeout))
        if obj.get("type") == "error":
            raise RuntimeError(f"server error: {obj}")
        return obj

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), 10.0)
        except (TimeoutError, aiohttp.ClientError):
            pass


async def ack_reader(peer: Peer, on_ack: Callable[[list[Any]], None], errors: list[str]) -> None:
    """Read a writer's frames until it closes: acks go to ``on_ack``."""
    ws = peer.ws
    while True:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return
        obj = _decode(msg.data)
        t = obj.get("type")
        if t == "ack":
            if obj.get("refused"):
                errors.append(f"refused: {obj['refused'][:3]}")
            on_ack(obj["seqs"])
        elif t == "error":
            errors.append(str(obj))


# -- 1. apply throughput -----------------------------------------------------------------------


async def apply_run(
    srv: BenchServer,
    session: aiohttp.ClientSession,
    room: str,
    writers: int,
    packs: int,
    per_pack: int,
    window: int,
    tag: str,
    profile: str | None = None,
) -> dict[str, Any]:
    """W writers x P packs of C changes; returns the figures and prints them."""
    url = srv.ws_url(room)
    now_ms = int(time.time() * 1000)
    frames: list[list[str]] = []
    for w in range(writers):
        mine = []
        for p in range(packs):
            changes = [
                Change(f"/w{w}/p{p}/c{c}", now_ms, p * per_pack + c, f"writer{w}", value_of(c))
                for c in range(per_pack)
            ]
            mine.append(_encode({"type": "pack", "data": pack_data(changes)}).decode())
        frames.append(mine)
    peers = [
        (await Peer.connect(session, url, {"actor": f"writer{w}", "caps": ["write"]}))[0]
        for w in range(writers)
    ]
    errors: list[str] = []
    acked = [0] * writers
    nulls = [0]
    all_done = asyncio.Event()
    sems = [asyncio.Semaphore(window) for _ in range(writers)]

    def on_ack_for(w: int) -> Callable[[list[Any]], None]:
        def on_ack(seqs: list[Any]) -> None:
            acked[w] += 1
            nulls[0] += sum(1 for s in seqs if s is None)
            sems[w].release()
            if sum(acked) == writers * packs:
                all_done.set()

        return on_ack

    readers = [
        asyncio.create_task(ack_reader(p, on_ack_for(w), errors)) for w, p in enumerate(peers)
    ]

    async def write(w: int) -> None:
        ws = peers[w].ws
        for text in frames[w]:
            await sems[w].acquire()
            await ws.send_str(text)

    with py_spy(srv.pid, profile, f"apply{per_pack}"):
        meter = CpuMeter(srv.pid).start()
        await asyncio.gather(*(write(w) for w in range(writers)))
        try:
            await asyncio.wait_for(all_done.wait(), 120.0)
        except TimeoutError:
            errors.append(f"timeout: {sum(acked)} of {writers * packs} acks")
        meter.stop()
    total = writers * packs * per_pack
    rate = total / meter.elapsed
    for p in peers:
        await p.close()
    for r in readers:
        r.cancel()
    # The store has them: a new peer's welcome carries the head.
    check, welcome, _ = await Peer.connect(session, url, {"actor": "check", "caps": ["write"]})
    await check.close()
    ok = not errors and nulls[0] == 0 and welcome["head"] == total
    print(
        f"[{tag}] {writers} writers x {packs} packs x {per_pack} changes = {fmt_int(total)} "
        f"changes, <= {window} packs in flight per writer: {meter.elapsed:.2f} s"
    )
    print(
        f"[{tag}] {fmt_int(rate)} changes/s applied and committed (sqlite), "
        f"{fmt_int(writers * packs / meter.elapsed)} packs/s; server cpu "
        f"{1e6 * meter.server_s / total:.1f} us/change"
    )
    print(
        f"[{tag}] check: null seqs {nulls[0]}, welcome.head {welcome['head']} == {total}: "
        f"{'ok' if ok else 'FAILED'} {'; '.join(errors[:3])}"
    )
    print(f"[{tag}] {meter.line()}")
    return {"rate": rate, "ok": ok}


# -- 2./3. fan-out -----------------------------------------------------------------------------


@dataclass
class FanoutRoom:
    """S subscribers of one room (cheap raw clients) with delivery bookkeeping."""

    n_updates: int = 0
    t_send: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    got: list[bytearray] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    dups: int = 0
    strays: int = 0
    first_send: float = 0.0
    last_recv: float = 0.0
    remaining: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cache: dict[bytes, tuple[int, ...]] = field(default_factory=dict)
    frames: int = 0
    errors: list[str] = field(default_factory=list)

    def reset(self, n_updates: int, subscribers: int) -> None:
        self.n_updates = n_updates
        self.t_send = [0.0] * n_updates
        self.latencies = []
        self.got = [bytearray(n_updates) for _ in range(subscribers)]
        self.counts = [0] * subscribers
        self.dups = self.strays = self.frames = 0
        self.remaining = n_updates * subscribers
        self.done = asyncio.Event()
        self.cache = {}

    def indices(self, payload: bytes) -> tuple[int, ...]:
        """Update numbers in a broadcast frame. All subscribers get the same bytes for
        one broadcast, so each distinct frame is decoded once (keeps the generator cheap).
        """
        idx = self.cache.get(payload)
        if idx is None:
            obj = _decode(payload)
            t = obj.get("type")
            if t != "pack":
                if t == "error":
                    self.errors.append(str(obj))
                return ()
            idx = tuple(
                int(c.path[3:]) if c.path.startswith("/u/") else -1
                for c in unpack_data(obj["data"])
            )
            if len(self.cache) > 4096:
                self.cache.clear()
            self.cache[payload] = idx
        return idx

    def on_frame(self, s: int, payload: bytes, now: float) -> None:
        """A live frame for subscriber ``s``, read at ``now``."""
        self.frames += 1
        got = self.got[s]
        lat = self.latencies
        t_send = self.t_send
        n = self.n_updates
        k = 0
        for i in self.indices(payload):
            if i < 0 or i >= n:
                self.strays += 1
                continue
            if got[i]:
                self.dups += 1
                continue
            got[i] = 1
            lat.append(now - t_send[i])
            k += 1
        if k:
            self.counts[s] += k
            self.last_recv = now
            self.remaining -= k
            if self.remaining <= 0:
                self.done.set()


async def subscribe(room: FanoutRoom, s: int, url: str) -> RawWS:
    """A raw subscriber: hello, wait for welcome and the catch-up's ``done``, then live."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    phase = [0]

    def on_text(payload: bytes, now: float) -> None:
        if phase[0] == 2:
            room.on_frame(s, payload, now)
            return
        obj = _decode(payload)
        if obj.get("type") == "error" and not ready.done():
            ready.set_exception(RuntimeError(f"subscriber {s}: {obj}"))
        elif phase[0] == 0 and obj.get("type") == "welcome":
            phase[0] = 1
        elif phase[0] == 1 and obj.get("type") == "pack" and obj.get("done"):
            phase[0] = 2
            if not ready.done():
                ready.set_result(None)

    ws = await RawWS.open(url, on_text)
    ws.send_text(_encode({"type": "hello", "v": 1, "actor": f"sub{s}"}))
    await asyncio.wait_for(ready, 30.0)
    return ws


async def fanout_setup(
    srv: BenchServer, session: aiohttp.ClientSession, room_name: str, subscribers: int
) -> tuple[Peer, list[RawWS], FanoutRoom]:
    url = srv.ws_url(room_name)
    room = FanoutRoom()
    sem = asyncio.Semaphore(20)

    async def join(s: int) -> RawWS:
        async with sem:
            return await subscribe(room, s, url)

    subs = list(await asyncio.gather(*(join(s) for s in range(subscribers))))
    writer, _, _ = await Peer.connect(session, url, {"actor": "writer", "caps": ["write"]})
    return writer, subs, room


async def fanout_send(
    writer: Peer, room: FanoutRoom, n: int, *, inflight: int, rate: float | None, errors: list[str]
) -> None:
    """Send ``n`` updates, each its own pack; ``rate`` None = as fast as acks allow."""
    sem = asyncio.Semaphore(inflight)
    acked = [0]
    all_acked = asyncio.Event()

    def on_ack(seqs: list[Any]) -> None:
        if any(s is None for s in seqs):
            errors.append(f"null seq in ack {seqs}")
        acked[0] += 1
        sem.release()
        if acked[0] == n:
            all_acked.set()

    reader = asyncio.create_task(ack_reader(writer, on_ack, errors))
    now_ms = int(time.time() * 1000)
    # Frames prepared in advance: the clock starts at the send, not at the encode.
    frames = [
        _encode(
            {
                "type": "pack",
                "data": pack_data([Change(f"/u/{i}", now_ms, i, "writer", value_of(i))]),
            }
        ).decode()
        for i in range(n)
    ]
    ws = writer.ws
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    room.first_send = time.perf_counter()
    for i, text in enumerate(frames):
        if rate is not None:
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await sem.acquire()
        room.t_send[i] = time.perf_counter()
        await ws.send_str(text)
    try:
        await asyncio.wait_for(all_acked.wait(), 60.0)
    except TimeoutError:
        errors.append(f"timeout: {acked[0]} of {n} acks")
    reader.cancel()


async def fanout_run(
    srv: BenchServer,
    session: aiohttp.ClientSession,
    room_name: str,
    sz: Sizes,
    *,
    rate: float | None,
    tag: str,
    profile: str | None,
) -> dict[str, Any]:
    writer, subs, room = await fanout_setup(srv, session, room_name, sz.subscribers)
    n = sz.updates if rate is None else int(sz.steady_rate * sz.steady_s)
    room.reset(n, len(subs))
    errors = room.errors
    with py_spy(srv.pid, profile, tag):
        meter = CpuMeter(srv.pid).start()
        await fanout_send(writer, room, n, inflight=sz.inflight, rate=rate, errors=errors)
        try:
            await asyncio.wait_for(room.done.wait(), 60.0)
        except TimeoutError:
            errors.append(f"timeout: {room.remaining} deliveries missing")
        meter.stop()
    await writer.close()
    await asyncio.gather(*(p.close() for p in subs))
    deliveries = sum(room.counts)
    expected = n * len(subs)
    elapsed = max(room.last_recv - room.first_send, 1e-9)
    lat = sorted(room.latencies)
    complete = deliveries == expected and all(c == n for c in room.counts)
    ok_check = complete and room.dups == 0 and room.strays == 0 and not errors
    p50, p95, p99 = (1000 * percentile(lat, q) for q in (50, 95, 99))
    mx = 1000 * lat[-1] if lat else float("nan")
    print(
        f"[{tag}] 1 writer, {len(subs)} subscribers, {n} updates of 64 B"
        + (f" at {rate:.0f}/s (open loop)" if rate else f", <= {sz.inflight} in flight")
        + f": {elapsed:.2f} s first send -> last delivery"
    )
    print(
        f"[{tag}] delivered {fmt_int(deliveries)} changes in {fmt_int(room.frames)} frames "
        f"({deliveries / max(room.frames, 1):.1f} changes/frame): "
        f"{fmt_int(deliveries / elapsed)} delivered/s"
    )
    print(
        f"[{tag}] latency send -> receive: p50 {p50:.2f} ms  p95 {p95:.2f} ms  "
        f"p99 {p99:.2f} ms  max {mx:.2f} ms"
    )
    print(
        f"[{tag}] check: every subscriber got every update once: "
        f"{'ok' if ok_check else 'FAILED'} (deliveries {deliveries}/{expected}, "
        f"duplicates {room.dups}, strays {room.strays}) {'; '.join(errors[:3])}"
    )
    cpu_per = meter.server_s / max(deliveries, 1)
    print(
        f"[{tag}] server cpu per delivery: {1e6 * cpu_per:.2f} us "
        f"({meter.server_s:.2f} s / {fmt_int(deliveries)}; clock ticks of 10 ms)"
        + (
            f" => with a whole core: ~{fmt_int(1 / cpu_per)} delivered/s"
            if rate is None and cpu_per
            else ""
        )
    )
    print(f"[{tag}] {meter.line()}")
    return {
        "rate": deliveries / elapsed,
        "p99": p99,
        "cpu_per_us": 1e6 * cpu_per,
        "ok": ok_check,
        "gen_busy": meter.gen_s / meter.elapsed,
    }


# -- 4. MST reconcile --------------------------------------------------------------------------


@dataclass
class MstData:
    remote: list[Change]  # the server's state
    local: list[Change]  # the client's state: remote with 10 differences
    modified: list[str]
    remote_only: list[str]
    local_only: list[str]

    @property
    def differing(self) -> set[str]:
        return {*self.modified, *self.remote_only, *self.local_only}


def mst_data(n: int, diffs: int, seed: int = 7) -> MstData:
    rng = random.Random(seed)
    base_ts = int(time.time() * 1000) - 3_600_000
    remote = [Change(f"/items/{i:07d}", base_ts + i, 0, "loader", value_of(i)) for i in range(n)]
    picks = rng.sample(range(n), diffs)
    n_remote_only = max(1, diffs // 5)
    n_local_only = max(1, diffs // 5)
    n_mod = diffs - n_remote_only - n_local_only
    modified = [remote[i].path for i in picks[:n_mod]]
    remote_only = [remote[i].path for i in picks[n_mod : n_mod + n_remote_only]]
    local = list(remote)
    drop = set(picks[n_mod : n_mod + n_remote_only])
    for i in picks[:n_mod]:  # the client holds an older value: the server's wins
        c = remote[i]
        local[i] = Change(c.path, c.ts - 1000, 0, "client", b'{"stale":true}')
    local = [c for i, c in enumerate(local) if i not in drop]
    local_only = [f"/items/{n + k:07d}.local" for k in range(n_local_only)]
    local += [
        Change(p, base_ts + n + k, 0, "client", value_of(-k)) for k, p in enumerate(local_only)
    ]
    return MstData(remote, local, modified, remote_only, local_only)


@dataclass
class Traffic:
    """Bytes of a reconcile, by message kind (raw, before JSON/base64 framing)."""

    rounds: int = 0
    hashes_requested: int = 0
    nodes: int = 0
    node_bytes: int = 0
    request_paths_bytes: int = 0
    answer_bytes: int = 0
    push_bytes: int = 0

    @property
    def total(self) -> int:
        return (
            32 * self.hashes_requested
            + self.node_bytes
            + 32 * self.nodes
            + self.request_paths_bytes
            + self.answer_bytes
            + self.push_bytes
        )


def _postcard_strings(paths: list[str]) -> int:
    """postcard Vec<String>: varint count, then varint length + bytes each."""

    def varint(n: int) -> int:
        size = 1
        while n >= 0x80:
            n >>= 7
            size += 1
        return size

    return varint(len(paths)) + sum(varint(len(p.encode())) + len(p.encode()) for p in paths)


def merge_into_tree(tree: mst_mod.MerkleSearchTree, changes: list[Change]) -> int:
    n = 0
    for c in changes:
        current = tree.get(c.path)
        if wins(c, current):
            tree.put(c)
            n += 1
    return n


def local_winners(
    local: mst_mod.MerkleSearchTree, push: tuple[str, ...], answer: list[Change]
) -> list[Change]:
    """What the client sends back: its entries of ``push`` that the answer did not beat."""
    theirs = {c.path: c for c in answer}
    out = []
    for p in push:
        mine = local.get(p)
        if mine is not None and wins(mine, theirs.get(p)):
            out.append(mine.with_seq(None))
    return out


def mst_local(sz: Sizes) -> tuple[MstData, dict[str, Any]]:
    t = time.perf_counter()
    data = mst_data(sz.mst_entries, sz.mst_diffs)
    remote = mst_mod.MerkleSearchTree(data.remote)
    local = mst_mod.MerkleSearchTree(data.local)
    remote_root = remote.root_hash
    local.root_hash  # noqa: B018 - hash both trees before the clock starts
    build_s = time.perf_counter() - t
    traffic = Traffic()
    t = time.perf_counter()
    flow = reconcile(local, remote_root)
    try:
        fetch: FetchNodes = next(flow)
        while True:
            traffic.hashes_requested += len(fetch.hashes)
            served = mst_mod.serve_nodes(remote, list(fetch.hashes))
            traffic.nodes += len(served)
            traffic.node_bytes += sum(len(d) for _, d in served)
            fetch = flow.send(dict(served))
    except StopIteration as stop:
        result: ReconcileResult = stop.value
    walk_s = time.perf_counter() - t
    traffic.rounds = result.rounds
    differing = list(result.differing)
    traffic.request_paths_bytes = _postcard_strings(differing)
    answer = [c for p in differing if (c := remote.get(p)) is not None]
    push = local_winners(local, result.push, answer)
    traffic.answer_bytes = len(encode_pack(answer))
    traffic.push_bytes = len(encode_pack(push))
    full = len(encode_pack(data.remote))
    merge_into_tree(local, answer)
    merge_into_tree(remote, push)
    converged = local.root_hex == remote.root_hex
    found = set(differing) == data.differing
    ratio = traffic.total / full
    ok = converged and found and ratio < TARGET_MST_RATIO
    tag = "mst/local"
    print(
        f"[{tag}] two trees of {fmt_int(sz.mst_entries)} entries differing in "
        f"{len(data.differing)} paths ({len(data.modified)} changed, "
        f"{len(data.remote_only)} only remote, {len(data.local_only)} only local); "
        f"built+hashed both in {build_s:.2f} s"
    )
    print(
        f"[{tag}] reconcile walk: {result.rounds} rounds, {traffic.hashes_requested} hashes "
        f"requested, {result.nodes_fetched} nodes fetched = {fmt_int(traffic.node_bytes)} B "
        f"of nodes, {1000 * walk_s:.1f} ms cpu"
    )
    print(
        f"[{tag}] found {len(differing)} differing paths (pull {len(result.pull)}, push "
        f"{len(result.push)}): {'exactly the 10 expected' if found else 'WRONG SET'}"
    )
    print(
        f"[{tag}] bytes (raw postcard, both directions): hashes {32 * traffic.hashes_requested}"
        f" + nodes {traffic.node_bytes + 32 * traffic.nodes} + request{{paths}} "
        f"{traffic.request_paths_bytes} + answer {traffic.answer_bytes} + push "
        f"{traffic.push_bytes} = {fmt_int(traffic.total)} B"
    )
    print(
        f"[{tag}] full state postcard: {fmt_int(full)} B -> reconcile = "
        f"{100 * ratio:.3f}% of full state   target < {100 * TARGET_MST_RATIO:.0f}%: "
        f"{verdict(ratio < TARGET_MST_RATIO)}; roots equal after merge: "
        f"{'ok' if converged else 'FAILED'}"
    )
    return data, {"ratio": ratio, "ok": ok}


async def mst_wire(
    srv: BenchServer, session: aiohttp.ClientSession, sz: Sizes, data: MstData, profile: str | None
) -> dict[str, Any]:
    tag = "mst/wire"
    url = srv.ws_url("mst")
    # -- load the room with packs of 1,000 ------------------------------------------------------
    loader, _, _ = await Peer.connect(session, url, {"actor": "loader", "caps": ["write"]})
    errors: list[str] = []
    per = 1000
    chunks = [data.remote[i : i + per] for i in range(0, len(data.remote), per)]
    texts = [_encode({"type": "pack", "data": pack_data(c)}).decode() for c in chunks]
    sem = asyncio.Semaphore(4)
    acked = [0]
    done = asyncio.Event()

    def on_ack(seqs: list[Any]) -> None:
        acked[0] += 1
        if any(s is None for s in seqs):
            errors.append("null seq while loading")
        sem.release()
        if acked[0] == len(texts):
            done.set()

    reader = asyncio.create_task(ack_reader(loader, on_ack, errors))
    meter = CpuMeter(srv.pid).start()
    for text in texts:
        await sem.acquire()
        await loader.ws.send_str(text)
    await asyncio.wait_for(done.wait(), 120.0)
    meter.stop()
    reader.cancel()
    await loader.close()
    print(
        f"[{tag}] loaded {fmt_int(len(data.remote))} entries in {len(texts)} packs of "
        f"{per}: {meter.elapsed:.2f} s = {fmt_int(len(data.remote) / meter.elapsed)} "
        f"changes/s ({fmt_int(sum(len(t) for t in texts))} B of pack frames sent) "
        f"{'; '.join(errors[:2])}"
    )

    # -- a full catch-up ------------------------------------------------------------------------
    t = time.perf_counter()
    full_bytes: int | None = None
    full_note = ""
    try:
        with py_spy(srv.pid, profile, "catchup"):
            full, welcome, packs = await Peer.connect(session, url, {"actor": "full"}, 60.0)
        full_bytes = full.received
        welcome_bytes = wire_len(len(_encode(welcome)), client=False)
        full_changes = sum(len(unpack_data(p["data"])) for p in packs)
        full_s = time.perf_counter() - t
        await full.close()
        full_note = (
            f"{fmt_int(full_changes)} changes in {len(packs)} pack frames, "
            f"{fmt_int(full_bytes - welcome_bytes)} B after the welcome, {full_s:.2f} s"
            " (the first welcome also hashes the whole tree)"
        )
        full_bytes -= welcome_bytes
    except Exception as exc:
        full_note = f"FULL CATCH-UP FAILED: {exc}"
    print(f"[{tag}] full catch-up: {full_note}")
    expected_full = sum(
        wire_len(
            len(
                _encode(
                    {
                        "type": "pack",
                        "data": pack_data(
                            [c.with_seq(1 + i + k) for k, c in enumerate(data.remote[i : i + 1000])]
                        ),
                        "head": len(data.remote),
                        **({"done": True} if i + 1000 >= len(data.remote) else {}),
                    }
                )
            ),
            client=False,
        )
        for i in range(0, len(data.remote), 1000)
    )
    if full_bytes is None:
        full_bytes = expected_full
        print(
            f"[{tag}] full catch-up size computed offline instead (same chunks of 1,000 "
            f"with seqs): {fmt_int(full_bytes)} B"
        )

    # -- reconcile from a client holding the state with 10 differences -----------------------------
    local = mst_mod.MerkleSearchTree(data.local)
    local.root_hash  # noqa: B018 - hashed before the clock starts
    peer, welcome, _ = await Peer.connect(session, url, {"actor": "client", "catchup": False})
    welcome_bytes = peer.received
    sent0, recv0 = peer.sent, peer.received
    t = time.perf_counter()
    rounds = nodes = 0
    with py_spy(srv.pid, profile, "reconcile"):
        await peer.send({"type": "mst-root"})
        root_msg = await peer.recv()
        flow = reconcile(local, bytes.fromhex(root_msg["root"]))
        try:
            fetch = next(flow)
            while True:
                await peer.send({"type": "mst-get", "hashes": [h.hex() for h in fetch.hashes]})
                reply = await peer.recv()
                if reply.get("type") != "mst-nodes":
                    raise RuntimeError(f"expected mst-nodes, got {str(reply)[:200]}")
                rounds += 1
                nodes += len(reply["nodes"])
                fetch = flow.send(
                    {bytes.fromhex(nd["hash"]): b64decode(nd["data"]) for nd in reply["nodes"]}
                )
        except StopIteration as stop:
            result: ReconcileResult = stop.value
        differing = list(result.differing)
        await peer.send({"type": "request", "paths": differing})
        answer: list[Change] = []
        while True:
            msg = await peer.recv()
            if msg.get("type") != "pack":
                continue
            answer += unpack_data(msg["data"])
            if msg.get("done"):
                break
        merge_into_tree(local, answer)
        push = local_winners(local, result.push, answer)
        if push:
            await peer.send({"type": "pack", "data": pack_data(push)})
            while (await peer.recv()).get("type") != "ack":
                pass
    wall = time.perf_counter() - t
    sent, recvd = peer.sent - sent0, peer.received - recv0
    # Not counted: checking that both sides now have the same root.
    await peer.send({"type": "mst-root"})
    while (after := await peer.recv()).get("type") != "mst-root":
        pass
    await peer.close()
    converged = after["root"] == local.root_hex
    found = set(differing) == data.differing
    total = sent + recvd
    ratio = total / full_bytes
    ok = converged and found and ratio < TARGET_MST_RATIO
    print(
        f"[{tag}] reconcile (catchup:false): mst-root + {rounds} mst-get rounds "
        f"({nodes} nodes) + request{{paths: {len(differing)}}} ({len(answer)} entries back) "
        f"+ pack of {len(push)} local winners, {1000 * wall:.0f} ms; found "
        f"{'exactly the 10 expected paths' if found else 'a WRONG set of paths'}"
    )
    print(
        f"[{tag}] wire bytes (WebSocket frames, both ways): sent {fmt_int(sent)} + received "
        f"{fmt_int(recvd)} = {fmt_int(total)} B (welcome {welcome_bytes} B not counted) vs "
        f"full catch-up {fmt_int(full_bytes)} B -> {100 * ratio:.3f}%   target < "
        f"{100 * TARGET_MST_RATIO:.0f}%: {verdict(ratio < TARGET_MST_RATIO)}"
    )
    print(
        f"[{tag}] roots equal after the exchange: {'ok' if converged else 'FAILED'} "
        f"(server {after['root'][:16]}..., client {local.root_hex[:16]}...)"
    )
    return {"ratio": ratio, "ok": ok}


# -- main --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    sz: Sizes = args.sizes
    only = set(args.only)
    ok = True
    print(f"generator: {args.pin}, loop {args.loop}, one process, aiohttp client")
    print(f"sizes: {sz}")
    mst_data_: MstData | None = None
    if "mst" in only:
        print()
        mst_data_, res = mst_local(sz)
        ok &= res["ok"]
    if not only & {"apply", "fanout", "steady", "mst"}:
        return 0 if ok else 1
    with bench_server(extra_env=args.server_env) as srv:
        print(srv.describe())
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            steps: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = []
            if "apply" in only:
                steps.append(
                    (
                        "apply",
                        lambda: apply_run(
                            srv,
                            session,
                            "apply-100",
                            sz.apply_writers,
                            sz.apply_packs,
                            100,
                            sz.apply_window,
                            "apply/100-change packs",
                            args.profile,
                        ),
                    )
                )
                steps.append(
                    (
                        "apply",
                        lambda: apply_run(
                            srv,
                            session,
                            "apply-1",
                            sz.apply_writers,
                            sz.apply1_packs,
                            1,
                            sz.apply1_window,
                            "apply/1-change packs",
                            args.profile,
                        ),
                    )
                )
            if "fanout" in only:
                steps.append(
                    (
                        "fanout",
                        lambda: fanout_run(
                            srv,
                            session,
                            "fanout",
                            sz,
                            rate=None,
                            tag="fanout",
                            profile=args.profile,
                        ),
                    )
                )
            if "steady" in only:
                steps.append(
                    (
                        "steady",
                        lambda: fanout_run(
                            srv,
                            session,
                            "steady",
                            sz,
                            rate=sz.steady_rate,
                            tag="steady",
                            profile=args.profile,
                        ),
                    )
                )
            if "mst" in only:
                assert mst_data_ is not None
                steps.append(("mst", lambda: mst_wire(srv, session, sz, mst_data_, args.profile)))
            for name, step in steps:
                print()
                log(f"{name} ...")
                res = await step()
                ok &= res["ok"]
                if name == "fanout":
                    good = res["rate"] >= TARGET_DELIVERED_PER_S
                    ok &= good
                    print(
                        f"[fanout] {fmt_int(res['rate'])} delivered/s   target >= "
                        f"{fmt_int(TARGET_DELIVERED_PER_S)}/s: {verdict(good)}"
                        + (
                            "  (generator >85% busy: may be client-bound)"
                            if res["gen_busy"] > 0.85
                            else ""
                        )
                    )
                if name == "steady":
                    good_p99 = res["p99"] <= TARGET_STEADY_P99_MS
                    good_cpu = res["cpu_per_us"] <= TARGET_CPU_PER_DELIVERY_US
                    ok &= good_p99 and good_cpu
                    print(
                        f"[steady] p99 {res['p99']:.2f} ms   target <= "
                        f"{TARGET_STEADY_P99_MS:.0f} ms: {verdict(good_p99)}"
                    )
                    print(
                        f"[steady] server cpu {res['cpu_per_us']:.2f} us per delivery   "
                        f"target <= {TARGET_CPU_PER_DELIVERY_US:.0f} us: {verdict(good_cpu)}"
                    )
                if not srv.alive():
                    print("server died:\n" + srv.log_tail())
                    return 2
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.sync",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes for development")
    p.add_argument(
        "--only",
        default="apply,fanout,steady,mst",
        help="comma-separated subset of apply,fanout,steady,mst",
    )
    p.add_argument(
        "--profile",
        metavar="PREFIX",
        default=None,
        help="py-spy record the server during fanout, steady, catch-up and "
        "reconcile into PREFIX-<phase>.txt (slows the run: do not quote "
        "its figures)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="ROOMSYNC_X=V",
        help="extra environment for the server (repeatable), e.g. "
        "ROOMSYNC_POLICY_BROADCAST_WINDOW_MS=0; printed with the server line",
    )
    p.add_argument("--steady-rate", type=float, default=None, help="writes/s (default 500)")
    p.add_argument("--steady-seconds", type=float, default=None, help="default 10 (quick: 2)")
    p.add_argument("--subscribers", type=int, default=None, help="default 50 (quick: 10)")
    args = p.parse_args(argv)
    args.server_env = dict(kv.split("=", 1) for kv in args.server_env)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    sizes = QUICK if args.quick else FULL
    if args.steady_rate is not None:
        sizes = dataclasses.replace(sizes, steady_rate=max(1.0, min(args.steady_rate, 20000.0)))
    if args.steady_seconds is not None:
        sizes = dataclasses.replace(sizes, steady_s=max(0.5, min(args.steady_seconds, 60.0)))
    if args.subscribers is not None:
        sizes = dataclasses.replace(sizes, subscribers=max(1, min(args.subscribers, 1000)))
    args.sizes = sizes
    return run_main("roomsync sync benchmark" + (" (--quick)" if args.quick else ""), run, args)


if __name__ == "__main__":
    sys.exit(main())
