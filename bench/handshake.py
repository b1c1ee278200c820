"""Handshake rate and idle-connection memory of ``roomsync serve``.

    python -m bench.handshake [--quick] [--client aiohttp|raw] [--handshakes N]
                              [--inflight N] [--idle 1000,5000] [--profile PREFIX]

Phase 1, handshakes/s: N clients (default 2,000, 50 in flight) each do connect (HTTP
upgrade) + ``hello`` + ``welcome`` + the empty catch-up ``pack`` with ``done`` + close
(close frame, wait for the server's close frame). Rate = N / wall time of the phase.

Phase 2, idle memory: a fresh server, warmed with a few handshakes; its VmRSS is read,
then 1,000 welcomed connections are opened and left idle, VmRSS read again, then more up
to 5,000. Figures: (RSS after - RSS before) / connections, in KB. Connections are spread
over rooms of at most 500 peers (the default ``max_peers`` is 1,000 per room).

The server runs pinned to core 0, this generator to core 1. Two clients are available:
``aiohttp`` (the aiohttp WebSocket client, minimal work per message) and ``raw`` (an
asyncio Protocol writing precomputed upgrade/hello/close bytes: the cheapest possible
client, to show the generator is not the bottleneck). Both print the generator's CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from .common import (
    CpuMeter,
    bench_server,
    fmt_int,
    log,
    masked_frame,
    percentile,
    py_spy,
    raise_nofile,
    run_main,
    verdict,
)

TARGET_HANDSHAKES_PER_S = 2000.0
TARGET_IDLE_KB = 20.0
PEERS_PER_ROOM = 500


def hello_text(actor: str) -> str:
    return f'{{"type":"hello","v":1,"actor":"{actor}"}}'


# -- client: aiohttp --------------------------------------------------------------------------


class AiohttpClient:
    """aiohttp's WebSocket client; only looks at the start of frames."""

    name = "aiohttp"

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AiohttpClient:
        conn = aiohttp.TCPConnector(limit=0, force_close=True)
        self.session = aiohttp.ClientSession(connector=conn)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def open(self, url: str, actor: str, timeout: float) -> Any:
        """Connect, hello, wait for welcome and the ``done`` chunk; return the socket."""
        assert self.session is not None
        ws = await self.session.ws_connect(
            url,
            autoping=False,
            autoclose=False,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=timeout, ws_close=timeout),
        )
        await ws.send_str(hello_text(actor))
        msg = await ws.receive(timeout)
        if msg.type is not aiohttp.WSMsgType.TEXT or '"type":"welcome"' not in msg.data[:40]:
            raise RuntimeError(f"expected welcome, got {msg.type} {str(msg.data)[:200]}")
        while True:
            msg = await ws.receive(timeout)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"expected catch-up pack, got {msg.type} {msg.data!r}")
            if '"done":true' in msg.data:
                return ws

    async def close(self, ws: Any) -> None:
        await ws.close()


# -- client: raw asyncio protocol -------------------------------------------------------------


_CLOSE_FRAME = masked_frame((1000).to_bytes(2, "big"), 0x8)


class _RawWS(asyncio.Protocol):
    """One WebSocket client connection driven by hand: upgrade, hello, welcome, done."""

    def __init__(self, request: bytes, hello: bytes, ready: asyncio.Future[None]) -> None:
        self.request = request
        self.hello = hello
        self.ready = ready
        self.closed: asyncio.Future[None] = ready.get_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.welcomed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(why))
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._fail(f"upgrade refused: {bytes(buf[:200])!r}")
                return
            del buf[: end + 4]
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(self.hello)
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            n = buf[1] & 0x7F
            start = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                start = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                start = 10
            if len(buf) < start + n:
                return
            payload = bytes(buf[start : start + n])
            del buf[: start + n]
            self._frame(opcode, payload)

    def _frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x8:  # close from the server (reply to ours, or its own)
            if self.transport is not None:
                self.transport.close()
            return
        if opcode == 0x9:  # ping: answer with pong (zero mask)
            assert self.transport is not None
            self.transport.write(masked_frame(payload, 0xA))
            return
        if opcode != 0x1 or self.ready.done():
            return
        if not self.welcomed:
            if b'"type":"welcome"' not in payload[:40]:
                self._fail(f"expected welcome, got {payload[:200]!r}")
                return
            self.welcomed = True
        elif b'"done":true' in payload:
            self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)


class RawClient:
    """The cheapest WebSocket client we can write: precomputed bytes, one Protocol each."""

    name = "raw"

    def __init__(self) -> None:
        self.port = 0
        key = base64.b64encode(os.urandom(16)).decode()
        self.key = key

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def open(self, url: str, actor: str, timeout: float) -> Any:
        hostport, _, path = url.removeprefix("ws://").partition("/")
        host, _, port = hostport.partition(":")
        request = (
            f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        hello = masked_frame(hello_text(actor).encode(), 0x1)
        _, proto = await loop.create_connection(
            lambda: _RawWS(request, hello, ready), host, int(port)
        )
        await asyncio.wait_for(ready, timeout)
        return proto

    async def close(self, proto: _RawWS) -> None:
        if proto.transport is None or proto.transport.is_closing():
            return
        proto.transport.write(_CLOSE_FRAME)
        try:
            await asyncio.wait_for(asyncio.shield(proto.closed), 10.0)
        except TimeoutError:
            proto.transport.abort()


CLIENTS: dict[str, Callable[[], Any]] = {"aiohttp": AiohttpClient, "raw": RawClient}


# -- phases -----------------------------------------------------------------------------------


async def handshake_phase(
    url_of: Callable[[int], str],
    client: Any,
    n: int,
    inflight: int,
    timeout: float,
    deadline_s: float,
) -> tuple[float, list[float], int]:
    """``n`` full handshakes, ``inflight`` at a time: (elapsed s, latencies s, failures)."""
    lat: list[float] = []
    failures = 0
    next_i = 0
    deadline = time.monotonic() + deadline_s

    async def worker() -> None:
        nonlocal next_i, failures
        while next_i < n and time.monotonic() < deadline:
            i = next_i
            next_i += 1
            t = time.perf_counter()
            try:
                ws = await client.open(url_of(i), f"h{i}", timeout)
                await client.close(ws)
            except Exception as exc:  # counted and reported, never retried
                failures += 1
                if failures <= 3:
                    log(f"handshake {i} failed: {exc!r}")
                continue
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return time.perf_counter() - t0, lat, failures


async def open_idle(
    url_of: Callable[[int], str],
    client: Any,
    start: int,
    count: int,
    inflight: int,
    timeout: float,
    deadline_s: float,
) -> tuple[list[Any], int]:
    """Open ``count`` welcomed connections (numbered from ``start``) and keep them."""
    out: list[Any] = []
    failures = 0
    next_i = start
    end = start + count
    deadline = time.monotonic() + deadline_s

    async def worker() -> None:
        nonlocal next_i, failures
        while next_i < end and time.monotonic() < deadline:
            i = next_i
            next_i += 1
            try:
                out.append(await client.open(url_of(i), f"idle{i}", timeout))
            except Exception as exc:
                failures += 1
                if failures <= 3:
                    log(f"idle connection {i} failed: {exc!r}")

    await asyncio.gather(*(worker() for _ in range(inflight)))
    return out, failures


async def close_all(client: Any, conns: list[Any], inflight: int) -> None:
    sem = asyncio.Semaphore(inflight)

    async def one(c: Any) -> None:
        async with sem:
            try:
                await asyncio.wait_for(client.close(c), 10.0)
            except Exception:
                pass

    await asyncio.wait_for(asyncio.gather(*(one(c) for c in conns)), 120.0)


async def settle_rss(pid_rss: Callable[[], int], seconds: float = 1.5) -> int:
    """RSS after the server had a moment to finish its work (max of a few readings)."""
    await asyncio.sleep(seconds)
    return max(pid_rss() for _ in range(3))


async def run(args: argparse.Namespace) -> int:
    clients = [c.strip() for c in args.client.split(",") if c.strip()]
    for c in clients:
        if c not in CLIENTS:
            raise SystemExit(f"unknown client {c!r}; choose from {sorted(CLIENTS)}")
    idle_steps = sorted({int(x) for x in args.idle.split(",") if x.strip()})
    nofile = raise_nofile(max(idle_steps or [0]) + 2000)
    ok = True
    print(
        f"generator: {args.pin}, loop {args.loop}, one process, clients {', '.join(clients)}, "
        f"RLIMIT_NOFILE {nofile} (server: raised to 20000 before exec)"
    )

    # -- phase 1 --------------------------------------------------------------------------
    with bench_server(extra_env=args.server_env) as srv:
        print(srv.describe())
        url = srv.ws_url("hs")
        for n_client, name in enumerate(clients):
            async with CLIENTS[name]() as client:
                await handshake_phase(lambda i: url, client, min(200, args.handshakes), 10, 10, 30)
                log(
                    f"handshakes ({name} client): {args.handshakes} with {args.inflight} "
                    "in flight ..."
                )
                with py_spy(srv.pid, args.profile if n_client == 0 else None, "handshake"):
                    meter = CpuMeter(srv.pid).start()
                    elapsed, lat, failures = await handshake_phase(
                        lambda i: url, client, args.handshakes, args.inflight, 10.0, 60.0
                    )
                    meter.stop()
            lat.sort()
            rate = len(lat) / elapsed
            cpu_per = meter.server_s / max(len(lat), 1)
            ok_hs = rate >= TARGET_HANDSHAKES_PER_S and failures == 0
            if n_client == 0:
                ok &= ok_hs
            tag = f"[handshake/{name}]"
            print()
            print(
                f"{tag} {len(lat)} handshakes ok, {failures} failed, {args.inflight} in flight, "
                f"{elapsed:.2f} s"
            )
            print(
                f"{tag} rate: {fmt_int(rate)} handshakes/s   target >= "
                f"{fmt_int(TARGET_HANDSHAKES_PER_S)}/s on one core: {verdict(ok_hs)}"
            )
            print(
                f"{tag} server cpu per handshake: {1e6 * cpu_per:.0f} us  => at 100% of one "
                f"core the server would do {fmt_int(1 / cpu_per if cpu_per else 0)}/s"
            )
            print(
                f"{tag} latency per handshake (connect..close): p50 "
                f"{1000 * percentile(lat, 50):.1f} ms  p95 {1000 * percentile(lat, 95):.1f} ms"
                f"  p99 {1000 * percentile(lat, 99):.1f} ms (queueing: {args.inflight} in "
                "flight)"
            )
            print(f"{tag} {meter.line()}")
            if meter.gen_s > 0.85 * meter.elapsed:
                print(
                    f"{tag} WARNING: the generator used >85% of its core: this rate may be "
                    "client-bound"
                )
            elif meter.server_s < 0.85 * meter.elapsed:
                print(
                    f"{tag} NOTE: neither side saturated its core: the machine was busy "
                    "(shared cores) or the loopback/kernel time is not attributed to either; "
                    "the cpu-per-handshake figure is the stable one"
                )
            if not srv.alive():
                print("server died:\n" + srv.log_tail())
                return 2

    # -- phase 2 --------------------------------------------------------------------------
    if not idle_steps:
        return 0 if ok else 1
    print()
    with bench_server(extra_env=args.server_env) as srv:
        print(srv.describe())

        def url_of(i: int) -> str:
            return srv.ws_url(f"idle-{i // PEERS_PER_ROOM}")

        async with CLIENTS[clients[0]]() as client:
            # Warm up: load code paths, the rooms and the store once.
            rooms = (max(idle_steps) + PEERS_PER_ROOM - 1) // PEERS_PER_ROOM
            await handshake_phase(
                lambda i: srv.ws_url(f"idle-{i % rooms}"), client, max(200, rooms * 2), 10, 10, 30
            )
            before = await settle_rss(srv.rss_kb)
            print(
                f"[idle] server RSS before: {before / 1024:.1f} MB (after warm-up: "
                f"{rooms} rooms loaded, 200 handshakes done; {clients[0]} client)"
            )
            conns: list[Any] = []
            try:
                for target in idle_steps:
                    meter = CpuMeter(srv.pid).start()
                    more, failures = await open_idle(
                        url_of, client, len(conns), target - len(conns), args.inflight, 10.0, 120.0
                    )
                    meter.stop()
                    conns += more
                    opened_s = meter.elapsed
                    after = await settle_rss(srv.rss_kb)
                    per = (after - before) / max(len(conns), 1)
                    ok_idle = per <= TARGET_IDLE_KB and failures == 0 and len(conns) == target
                    ok &= ok_idle
                    print(
                        f"[idle] {len(conns)} idle welcomed connections ({failures} failed, "
                        f"opened in {opened_s:.1f} s): server RSS {after / 1024:.1f} MB, "
                        f"+{(after - before) / 1024:.1f} MB = {per:.1f} KB per connection   "
                        f"target <= {TARGET_IDLE_KB:.0f} KB: {verdict(ok_idle)}"
                    )
                    print(
                        f"[idle]   opening these {len(more)}: "
                        f"{1e6 * meter.server_s / max(len(more), 1):.0f} us server cpu each, "
                        f"{len(more) / max(opened_s, 1e-9):,.0f}/s; {meter.line()}"
                    )
                    if not srv.alive():
                        print("server died:\n" + srv.log_tail())
                        return 2
            finally:
                log(f"closing {len(conns)} idle connections ...")
                await close_all(client, conns, args.inflight)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.handshake",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (500 handshakes, 1,000 idle) for development",
    )
    p.add_argument(
        "--client",
        default="raw,aiohttp",
        help="client(s) for the handshake phase, comma-separated, from "
        f"{sorted(CLIENTS)}; the first one also opens the idle connections "
        "(default raw,aiohttp)",
    )
    p.add_argument("--handshakes", type=int, default=None, help="default 2000 (quick: 500)")
    p.add_argument("--inflight", type=int, default=50)
    p.add_argument(
        "--idle",
        default=None,
        help="idle connection counts to measure, comma-separated "
        "(default 1000,5000; quick: 1000; empty: skip)",
    )
    p.add_argument(
        "--profile",
        metavar="PREFIX",
        default=None,
        help="py-spy record the server during the handshake phase into "
        "PREFIX-handshake.txt (slows the run: do not quote its figures)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="ROOMSYNC_X=V",
        help="extra environment for the server (repeatable), e.g. "
        "ROOMSYNC_POLICY_BROADCAST_WINDOW_MS=0; printed with the server line",
    )
    args = p.parse_args(argv)
    args.server_env = dict(kv.split("=", 1) for kv in args.server_env)
    if args.handshakes is None:
        args.handshakes = 500 if args.quick else 2000
    if args.idle is None:
        args.idle = "1000" if args.quick else "1000,5000"
    args.handshakes = max(1, min(args.handshakes, 100_000))
    args.inflight = max(1, min(args.inflight, 1000))
    return run_main("roomsync handshake benchmark", run, args)


if __name__ == "__main__":
    sys.exit(main())
