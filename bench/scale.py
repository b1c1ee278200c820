"""Scale-out (SPEC §8): the same fan-out on 1 node (SQLite), 1 node (PostgreSQL) and 2
nodes (PostgreSQL + Redis, writer on node A, subscribers split across A and B).

For each setup one writer sends ``--updates`` updates of 64 B, each its own pack with at
most ``--inflight`` unacknowledged (throughput: delivered changes/s), then a steady
``--rate`` updates/s for ``--seconds`` (latency send -> receive, p50/p99). With two nodes
the latency is reported for A's and B's subscribers apart: the difference is what the
bus hop (commit on A, Redis pub/sub, absorb and broadcast on B) adds.

On this machine's 2 cores the nodes, PostgreSQL, Redis and the load generator share two
CPUs (node A is pinned to core 0, node B to core 1, the generator to core 1): the
two-node figures measure correctness and the hop's latency, not the capacity two real
machines would have.

    python -m bench.scale             # ~1 min
    python -m bench.scale --quick     # small sizes, for development
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp

from bench.common import (
    CpuMeter,
    bench_server,
    command_line,
    fmt_int,
    log,
    machine_line,
    percentile,
    run_main,
)
from bench.sync import FanoutRoom, Peer, fanout_send, subscribe


@dataclass
class Result:
    setup: str
    delivered_per_s: float
    p50_a: float
    p99_a: float
    p50_b: float | None
    p99_b: float | None
    cpu_us: float
    ok: bool


def _ms(values: list[float], q: float) -> float:
    return 1000 * percentile(sorted(values), q) if values else float("nan")


async def one_phase(
    writer: Peer,
    rooms: list[FanoutRoom],
    subs: list[int],
    n: int,
    *,
    inflight: int,
    rate: float | None,
) -> tuple[float, bool, list[str]]:
    """Send ``n`` updates; the rooms share the writer's send times. (elapsed, ok, errors)."""
    for room, count in zip(rooms, subs, strict=True):
        room.reset(n, count)
    for room in rooms[1:]:
        room.t_send = rooms[0].t_send  # one clock: the writer's sends
    errors: list[str] = []
    await fanout_send(writer, rooms[0], n, inflight=inflight, rate=rate, errors=errors)
    for room in rooms:
        if room.n_updates and room.remaining > 0:
            try:
                await asyncio.wait_for(room.done.wait(), 60.0)
            except TimeoutError:
                errors.append(f"timeout: {room.remaining} deliveries missing")
    last = max(r.last_recv for r in rooms)
    elapsed = max(last - rooms[0].first_send, 1e-9)
    ok = not errors and all(
        r.dups == 0 and r.strays == 0 and all(c == n for c in r.counts) for r in rooms
    )
    return elapsed, ok, errors + [e for r in rooms for e in r.errors]


async def run_setup(
    name: str, urls: list[str], pids: list[int], args: argparse.Namespace
) -> Result:
    """Subscribers split evenly over ``urls`` (one FanoutRoom per node), writer on the first."""
    room_name = "scale-" + "".join(ch if ch.isalnum() else "-" for ch in name.lower())
    rooms = [FanoutRoom() for _ in urls]
    counts = [args.subscribers // len(urls)] * len(urls)
    counts[0] += args.subscribers - sum(counts)
    async with aiohttp.ClientSession() as session:
        sockets = []
        for room, url, count in zip(rooms, urls, counts, strict=True):
            ws_url = f"{url}/ws/{room_name}"
            sockets += [await subscribe(room, s, ws_url) for s in range(count)]
        writer, _, _ = await Peer.connect(
            session, f"{urls[0]}/ws/{room_name}", {"actor": "writer", "caps": ["write"]}
        )
        meters = [CpuMeter(pid).start() for pid in pids]
        elapsed, ok1, errors = await one_phase(
            writer, rooms, counts, args.updates, inflight=args.inflight, rate=None
        )
        for m in meters:
            m.stop()
        delivered = args.updates * args.subscribers
        cpu_s = sum(m.server_s for m in meters)
        _, ok2, errors2 = await one_phase(
            writer,
            rooms,
            counts,
            int(args.rate * args.seconds),
            inflight=max(args.inflight, 64),
            rate=args.rate,
        )
        await writer.close()
        await asyncio.gather(*(ws.close() for ws in sockets))
    for e in (errors + errors2)[:5]:
        log(f"[{name}] {e}")
    lat = [r.latencies for r in rooms]
    return Result(
        name,
        delivered / elapsed,
        _ms(lat[0], 50),
        _ms(lat[0], 99),
        _ms(lat[1], 50) if len(lat) > 1 else None,
        _ms(lat[1], 99) if len(lat) > 1 else None,
        1e6 * cpu_s / max(delivered, 1),
        ok1 and ok2,
    )


@contextlib.contextmanager
def postgres_and_redis() -> Iterator[tuple[str, str]]:
    """A database of the run's own and a Redis key prefix; both removed afterwards."""
    from roomsync.testing.postgres import postgres_database
    from roomsync.testing.redis import delete_prefix, redis_url, unique_prefix

    url, prefix = redis_url(), unique_prefix()
    with postgres_database() as dsn:
        try:
            yield dsn, prefix
        finally:
            asyncio.run(delete_prefix(url, prefix))


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    print()
    print(
        f"fan-out: 1 writer, {args.subscribers} subscribers, {args.updates} updates "
        f"(<= {args.inflight} in flight); latency at {args.rate:.0f} updates/s for "
        f"{args.seconds:.0f} s"
    )
    print(
        "| setup | delivered/s | p50 A ms | p99 A ms | p50 B ms | p99 B ms "
        "| server CPU µs/delivery | every update once |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        b50 = "" if r.p50_b is None else f"{r.p50_b:.2f}"
        b99 = "" if r.p99_b is None else f"{r.p99_b:.2f}"
        print(
            f"| {r.setup} | {fmt_int(r.delivered_per_s)} | {r.p50_a:.2f} | {r.p99_a:.2f} "
            f"| {b50} | {b99} | {r.cpu_us:.2f} | {'ok' if r.ok else 'FAILED'} |"
        )
    two = next((r for r in results if r.p50_b is not None), None)
    if two is not None and two.p50_b is not None:
        print(
            f"\nbus hop (2 nodes, B's subscribers minus A's): p50 +{two.p50_b - two.p50_a:.2f} ms,"
            f" p99 +{(two.p99_b or 0) - two.p99_a:.2f} ms"
        )


async def run(args: argparse.Namespace) -> int:
    results: list[Result] = []
    with bench_server() as srv:
        log(srv.describe())
        results.append(
            await run_setup("1 node, SQLite", [f"ws://127.0.0.1:{srv.port}"], [srv.pid], args)
        )
    pg, bus = args.pg, args.redis
    with bench_server(args=["--store", pg]) as srv:
        results.append(
            await run_setup("1 node, PostgreSQL", [f"ws://127.0.0.1:{srv.port}"], [srv.pid], args)
        )
    env = {"ROOMSYNC_BUS_PREFIX": args.prefix, "ROOMSYNC_BLOBS_SHARED": "true"}
    with (
        bench_server(
            core=0, args=["--store", pg, "--bus", bus, "--node-id", "a"], extra_env=env
        ) as a,
        bench_server(
            core=1, args=["--store", pg, "--bus", bus, "--node-id", "b"], extra_env=env
        ) as b,
    ):
        await asyncio.sleep(1.5)  # both heartbeats in the registry
        results.append(
            await run_setup(
                "2 nodes, PostgreSQL + Redis",
                [f"ws://127.0.0.1:{a.port}", f"ws://127.0.0.1:{b.port}"],
                [a.pid, b.pid],
                args,
            )
        )
    print_table(results, args)
    return 0 if all(r.ok for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for development")
    p.add_argument("--subscribers", type=int, default=100)
    p.add_argument("--updates", type=int, default=3000)
    p.add_argument("--inflight", type=int, default=16)
    p.add_argument("--rate", type=float, default=200.0, help="steady updates/s for latency")
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args(argv)
    if args.quick:
        args.subscribers, args.updates, args.seconds = 20, 500, 2.0
    from roomsync.testing.redis import redis_url

    args.redis = redis_url()
    print(machine_line())
    print(f"command: {command_line()}")
    with postgres_and_redis() as (dsn, prefix):
        args.pg, args.prefix = dsn, prefix
        return run_main("roomsync scale-out: 1 node vs 2 nodes", run, args, limit_s=600)


if __name__ == "__main__":
    sys.exit(main())
