"""Control-plane benchmarks of ``roomsync serve`` (issue 11): archives, queries, ``room get``.

    python -m bench.control [--entries N] [--pack N] [--queries N] [--rps-seconds S]
                            [--clients N] [--server-env ROOMSYNC_X=V]

One server (``roomsync serve --dev``, SQLite store, pinned to core 0; see
bench/README.md), one room:

1. load: N entries (default 100,000; values ``{"n": i, "tag": "a"|"b"}``) written by one
   peer in packs of P (default 1,000, 4 in flight) over the real protocol. The server's
   VmRSS before and after is the estimate of the room's *live size*: what holding the
   room costs the process (entries, MST, the store's caches).
2. ``archive create`` of that room with the writer still connected: wall time of the
   control request, the server's RSS before it and its peak during it, and the growth
   (peak - before) against the live size. The peak is VmHWM after resetting it through
   ``/proc/PID/clear_refs`` (``5``) just before the request, cross-checked by VmRSS
   sampled every 5 ms by a thread.
3. ``archive restore`` of that archive, after 1% of the entries were overwritten: the
   server first archives the current state (``previous``), then replaces the live state
   and closes the room's peers with 4001. Time and peak RSS growth, as in 2.
4. ``query run``, when the server has the query family: two specs with one filter each
   (``/n lt 500`` and ``/tag eq "b"``), page size 100, each run Q times (default 20):
   latency per request. Then the same specs through the reference evaluator
   :func:`roomsync.core.query.evaluate` in this process over the same N entries (the
   Python evaluation the store's push-down must equal), and whether the rows agree.
5. ``room get`` of the loaded room: requests/s for S seconds (default 3) from one client
   sending one request at a time, then from C clients (default 8) at once.

Targets (issue 11): archive create or restore of 100k entries under 1 s; a filtered query
under 100 ms; peak RSS growth during the archive under 2x the room's live size.

Control requests go to ``POST /v1/control/...`` with an operator token (``*``) signed by
a key the server is given; the control-plane rate limit is lifted and logs are at
``warning`` (no per-request log line), like the per-peer limits of the other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from roomsync.auth.tokens import TokenService
from roomsync.core.codec import pack_data
from roomsync.core.entries import Change

from .common import BenchServer, CpuMeter, bench_server, fmt_int, log, percentile, run_main
from .common import verdict as verdict_of
from .sync import Peer, ack_reader

TARGET_ARCHIVE_S = 1.0
TARGET_RESTORE_S = 1.0
TARGET_QUERY_MS = 100.0
TARGET_RSS_RATIO = 2.0

ROOM = "bench-control"
KEY_ID = "bench-control"
KEY_SECRET = "bench-control-secret-0123456789abcdef0123456789"
SERVER_ENV = {
    "ROOMSYNC_AUTH_KEYS": f"{KEY_ID}:{KEY_SECRET}",
    "ROOMSYNC_SERVER_CONTROL_RATE_PER_S": "1000000000",
    "ROOMSYNC_SERVER_CONTROL_BURST": "1000000000",
}
#: The two one-filter specs of step 4: (name, spec).
QUERIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("n-lt-500", {"filters": [{"pointer": "/n", "op": "lt", "value": 500}], "limit": 100}),
    ("tag-eq-b", {"filters": [{"pointer": "/tag", "op": "eq", "value": "b"}], "limit": 100}),
)

_decode = msgspec.json.Decoder().decode


def value_of(i: int) -> bytes:
    return b'{"n":%d,"tag":"%s"}' % (i, b"b" if i % 2 else b"a")


def path_of(i: int) -> str:
    return f"/e/{i:07d}"


def mib(kb: float) -> str:
    return f"{kb / 1024:.1f} MiB"


# -- the server's memory ------------------------------------------------------------------------


def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


class PeakRss:
    """The server's RSS before a block and its peak during it.

    Before: VmRSS. Peak: the larger of VmHWM (reset to the current RSS through
    ``/proc/PID/clear_refs`` just before the block, when the kernel lets us) and the
    highest VmRSS a thread read every 5 ms during the block.
    """

    def __init__(self, pid: int, every_s: float = 0.005) -> None:
        self.pid = pid
        self.every_s = every_s
        self.before_kb = 0
        self.sampled_kb = 0
        self.hwm_kb: int | None = None
        self.after_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._reset = False

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.sampled_kb = max(self.sampled_kb, proc_status_kb(self.pid, "VmRSS"))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakRss:
        self.before_kb = self.sampled_kb = proc_status_kb(self.pid, "VmRSS")
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self._reset = True
        except OSError:
            self._reset = False
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.after_kb = proc_status_kb(self.pid, "VmRSS")
        if self._reset:
            self.hwm_kb = proc_status_kb(self.pid, "VmHWM")

    @property
    def peak_kb(self) -> int:
        return max(self.sampled_kb, self.hwm_kb or 0)

    @property
    def growth_kb(self) -> int:
        return self.peak_kb - self.before_kb

    def line(self) -> str:
        hwm = f"VmHWM {mib(self.hwm_kb)}" if self.hwm_kb is not None else "VmHWM not reset"
        return (
            f"server RSS before {mib(self.before_kb)}, peak {mib(self.peak_kb)} "
            f"({hwm}, 5 ms samples max {mib(self.sampled_kb)}), after {mib(self.after_kb)}; "
            f"growth {mib(self.growth_kb)}"
        )


# -- control requests ---------------------------------------------------------------------------


class Control:
    """``POST /v1/control/{family}/{command}`` with an operator token."""

    def __init__(self, srv: BenchServer, session: aiohttp.ClientSession) -> None:
        self.base = f"http://127.0.0.1:{srv.port}"
        token = TokenService({KEY_ID: KEY_SECRET}).mint(
            room="*", caps=("*",), ttl_s=3600, now_s=int(time.time()), actor="bench"
        )
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.session = session

    async def call(self, command: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        family, name = command.split()
        async with self.session.post(
            f"{self.base}/v1/control/{family}/{name}",
            data=json.dumps(payload),
            headers=self.headers,
        ) as resp:
            raw = await resp.read()
            try:
                body: dict[str, Any] = _decode(raw)
            except msgspec.DecodeError:
                body = {"ok": False, "raw": raw[:300].decode(errors="replace")}
            return resp.status, body

    async def ok(self, command: str, payload: dict[str, Any]) -> dict[str, Any]:
        status, body = await self.call(command, payload)
        if status != 200:
            raise RuntimeError(f"{command} {payload}: {status} {body}")
        result: dict[str, Any] = body["result"]
        return result

    async def paths(self) -> set[str]:
        async with self.session.get(f"{self.base}/v1/openapi.json") as resp:
            doc = await resp.json()
        return set(doc["paths"])


# -- the steps ----------------------------------------------------------------------------------


async def load(
    srv: BenchServer, session: aiohttp.ClientSession, n: int, per: int
) -> tuple[Peer, asyncio.Task[None], float]:
    """Write ``n`` entries in packs of ``per``; return the writer (still connected), its
    ack reader and the seconds it took."""
    writer, _, _ = await Peer.connect(
        session, srv.ws_url(ROOM), {"actor": "loader", "caps": ["write"]}
    )
    now_ms = int(time.time() * 1000)
    errors: list[str] = []
    texts = [
        msgspec.json.encode(
            {
                "type": "pack",
                "data": pack_data(
                    [
                        Change(path_of(i), now_ms, 0, "loader", value_of(i))
                        for i in range(start, min(n, start + per))
                    ]
                ),
            }
        ).decode()
        for start in range(0, n, per)
    ]
    window = asyncio.Semaphore(4)
    acked = [0]
    done = asyncio.Event()

    def on_ack(seqs: list[Any]) -> None:
        acked[0] += 1
        if any(s is None for s in seqs):
            errors.append("a change was refused while loading")
        window.release()
        if acked[0] == len(texts):
            done.set()

    reader = asyncio.create_task(ack_reader(writer, on_ack, errors))
    t0 = time.perf_counter()
    for text in texts:
        await window.acquire()
        await writer.ws.send_str(text)
    await asyncio.wait_for(done.wait(), 120.0)
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"loading failed: {errors[:3]}")
    return writer, reader, elapsed


async def overwrite(writer: Peer, n: int, count: int) -> None:
    """Overwrite ``count`` of the entries (every ``n // count``-th) in one pack."""
    now_ms = int(time.time() * 1000) + 1
    step = max(1, n // count)
    changes = [Change(path_of(i), now_ms, 0, "loader", b'{"n":-1}') for i in range(0, n, step)]
    await writer.send({"type": "pack", "data": pack_data(changes[:count])})


async def timed(
    ctl: Control, command: str, payload: dict[str, Any]
) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    result = await ctl.ok(command, payload)
    return time.perf_counter() - t0, result


async def queries(ctl: Control, n: int, repeat: int) -> tuple[bool, float | None]:
    """Step 4: each spec ``repeat`` times on the server, then through the reference
    evaluator here. Returns (rows agree, worst median ms) or (True, None) when skipped."""
    if "/v1/control/query/run" not in await ctl.paths():
        print(
            "[query] this server has no query family (/v1/control/query/run is not in its "
            "OpenAPI document): skipped"
        )
        return True, None
    try:
        from roomsync.core import query as reference
    except ImportError:
        reference = None  # type: ignore[assignment]
    entries = [Change(path_of(i), 0, 0, "loader", value_of(i), seq=i + 1) for i in range(n)]
    agree = True
    worst: float | None = None
    for name, spec in QUERIES:
        await ctl.ok("query define", {"name": name, "spec": spec})
        run = {"room": ROOM, "name": name, "limit": spec["limit"]}
        times: list[float] = []
        result: dict[str, Any] = {}
        for _ in range(repeat):
            took, result = await timed(ctl, "query run", run)
            times.append(took * 1000)
        times.sort()
        med = statistics.median(times)
        worst = med if worst is None else max(worst, med)
        rows = result["rows"]
        print(
            f"[query] {name} {json.dumps(spec['filters'][0])}: {len(rows)} rows, cursor "
            f"{'set' if result.get('cursor') else 'none'}; {repeat} runs: median {med:.1f} ms, "
            f"p95 {percentile(times, 95):.1f} ms, min {times[0]:.1f} ms, max {times[-1]:.1f} ms"
        )
        if reference is None:
            print("[query]   reference evaluator roomsync.core.query not importable: no comparison")
            continue
        parsed = reference.parse_spec(spec)
        ref_times: list[float] = []
        ref_rows: list[dict[str, object]] = []
        for _ in range(3):
            t0 = time.perf_counter()
            ref_rows, _ = reference.evaluate(parsed, entries, limit=spec["limit"])
            ref_times.append((time.perf_counter() - t0) * 1000)
        same = json.dumps(ref_rows, sort_keys=True) == json.dumps(rows, sort_keys=True)
        agree &= same
        print(
            f"[query]   reference evaluator in this process over the same {fmt_int(n)} "
            f"entries: median of 3 {statistics.median(ref_times):.1f} ms; rows "
            f"{'equal' if same else 'DIFFER'} to the server's"
        )
    return agree, worst


async def room_get_rate(
    ctl: Control, seconds: float, clients: int, most: int | None = None
) -> dict[str, float]:
    """``room get`` for ``seconds`` (or ``most`` requests) from ``clients`` clients, each
    one request at a time."""
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline and (most is None or len(latencies) < most):
            t0 = time.perf_counter()
            status, _ = await ctl.call("room get", {"room": ROOM})
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors[0] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "rate": len(latencies) / elapsed,
        "n": len(latencies),
        "p50": 1000 * percentile(latencies, 50),
        "p99": 1000 * percentile(latencies, 99),
        "errors": errors[0],
        "elapsed": elapsed,
    }


async def room_get_run(
    ctl: Control, seconds: float, clients: int, pid: int, most: int | None = None
) -> None:
    loaded = ROOM in (await ctl.ok("topology get", {}))["nodes"][0]["rooms"]
    meter = CpuMeter(pid).start()
    res = await room_get_rate(ctl, seconds, clients, most)
    meter.stop()
    state = "loaded" if loaded else "not loaded: each request loads it from the store"
    print(
        f"[room get] room {state}; {clients} client(s): {res['rate']:,.1f} requests/s "
        f"({fmt_int(res['n'])} in {res['elapsed']:.1f} s), p50 {res['p50']:.2f} ms, "
        f"p99 {res['p99']:.2f} ms, errors {res['errors']}"
    )
    print(f"[room get] {meter.line()}")


async def run(args: argparse.Namespace) -> int:
    n, per = args.entries, args.pack
    print(f"generator: {args.pin}, loop {args.loop}, one process, aiohttp client")
    print(
        f"sizes: entries={fmt_int(n)} pack={per} queries={args.queries} "
        f"rps_seconds={args.rps_seconds} clients={args.clients}"
    )
    targets: list[tuple[str, str, bool | None]] = []
    env = {**SERVER_ENV, **args.server_env}
    with bench_server(extra_env=env) as srv:
        print(srv.describe())
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            ctl = Control(srv, session)
            await ctl.ok("room create", {"room": ROOM})
            await ctl.ok("room get", {"room": ROOM})  # warm: the route, the token cache
            rss0 = proc_status_kb(srv.pid, "VmRSS")

            # 1. load
            print()
            log("load ...")
            writer, reader, load_s = await load(srv, session, n, per)
            await asyncio.sleep(0.2)  # let the writer thread's last commit settle
            rss_loaded = proc_status_kb(srv.pid, "VmRSS")
            live_kb = max(1, rss_loaded - rss0)
            view = await ctl.ok("room get", {"room": ROOM})
            print(
                f"[load] {fmt_int(n)} entries in packs of {per}: {load_s:.2f} s = "
                f"{fmt_int(n / load_s)} changes/s; room count {fmt_int(view['count'])}, head "
                f"{fmt_int(view['head'])}; server RSS {mib(rss0)} -> {mib(rss_loaded)}: "
                f"live size estimate {mib(live_kb)}"
            )

            # 2. archive create
            print()
            log("archive create ...")
            meter = CpuMeter(srv.pid).start()
            with PeakRss(srv.pid) as mem:
                archive_s, archive = await timed(ctl, "archive create", {"room": ROOM})
            meter.stop()
            ratio = mem.growth_kb / live_kb
            print(
                f"[archive] create: {archive_s * 1000:.0f} ms for {fmt_int(archive['count'])} "
                f"entries, snapshot {fmt_int(archive['size'])} B, ref {archive['ref'][:19]}..."
            )
            print(f"[archive] {mem.line()} = {ratio:.2f}x the live size")
            print(f"[archive] {meter.line()}")
            targets.append(
                (
                    f"archive create of {fmt_int(n)} entries < {TARGET_ARCHIVE_S:.0f} s",
                    f"{archive_s:.2f} s",
                    archive_s < TARGET_ARCHIVE_S,
                )
            )
            targets.append(
                (
                    f"peak RSS growth during archive < {TARGET_RSS_RATIO:.0f}x live size",
                    f"{ratio:.2f}x ({mib(mem.growth_kb)} vs {mib(live_kb)})",
                    ratio < TARGET_RSS_RATIO,
                )
            )

            # 3. archive restore
            print()
            log("archive restore ...")
            changed = max(1, n // 100)
            await overwrite(writer, n, changed)
            await asyncio.sleep(0.3)  # its ack goes to the reader; let it commit
            meter = CpuMeter(srv.pid).start()
            with PeakRss(srv.pid) as mem:
                restore_s, restored = await timed(
                    ctl, "archive restore", {"room": ROOM, "ref": archive["ref"]}
                )
            meter.stop()
            ok_root = restored["root"] == archive["root"]
            print(
                f"[restore] {restore_s * 1000:.0f} ms (after {fmt_int(changed)} entries were "
                f"overwritten; includes archiving them as previous "
                f"{str(restored.get('previous'))[:19]}...); root "
                f"{'equals' if ok_root else 'DIFFERS FROM'} the archive's; head "
                f"{fmt_int(restored['head'])}"
            )
            ratio_r = mem.growth_kb / live_kb
            print(f"[restore] {mem.line()} = {ratio_r:.2f}x the live size")
            print(f"[restore] {meter.line()}")
            targets.append(
                (
                    f"archive restore of {fmt_int(n)} entries < {TARGET_RESTORE_S:.0f} s",
                    f"{restore_s:.2f} s",
                    restore_s < TARGET_RESTORE_S and ok_root,
                )
            )
            reader.cancel()
            await writer.close()  # closed by the server with 4001 already

            # 5a. room get of a room that is not loaded: right after the restore, which
            # takes the room out of memory (the next peer or command loads it).
            print()
            log("room get (room not loaded) ...")
            await room_get_run(ctl, args.rps_seconds, 1, srv.pid, most=20)

            # 4. query run
            print()
            log("query run ...")
            query_target = f"filtered query over {fmt_int(n)} entries < {TARGET_QUERY_MS:.0f} ms"
            try:
                agree, worst = await queries(ctl, n, args.queries)
            except RuntimeError as exc:  # a refused define or run: say so, go on
                print(f"[query] FAILED: {exc}")
                targets.append((query_target, "failed (see [query])", False))
            else:
                targets.append(
                    (
                        query_target,
                        "not run (no query family)"
                        if worst is None
                        else f"{worst:.1f} ms (worst median)" + ("" if agree else ", rows differ"),
                        None if worst is None else worst < TARGET_QUERY_MS and agree,
                    )
                )

            # 5b. room get of the loaded room (a peer connected)
            print()
            log("room get (room loaded) ...")
            peer, _, _ = await Peer.connect(
                session, srv.ws_url(ROOM), {"actor": "reader", "catchup": False}
            )
            for clients in (1, args.clients):
                await room_get_run(ctl, args.rps_seconds, clients, srv.pid)
            await peer.close()
            if not srv.alive():
                print("server died:\n" + srv.log_tail())
                return 2

    print()
    print("targets (issue 11):")
    ok = True
    for what, figure, good in targets:
        mark = "NOT RUN" if good is None else verdict_of(good)
        ok &= good is not False
        print(f"  {what:58} {figure:34} {mark}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.control",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--entries", type=int, default=100_000, help="entries in the room")
    p.add_argument("--pack", type=int, default=1000, help="changes per pack while loading")
    p.add_argument("--queries", type=int, default=20, help="runs of each query spec")
    p.add_argument("--rps-seconds", type=float, default=3.0, help="seconds per room get run")
    p.add_argument("--clients", type=int, default=8, help="concurrent room get clients")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="ROOMSYNC_X=V",
        help="extra environment for the server (repeatable); printed with the server line",
    )
    args = p.parse_args(argv)
    args.entries = max(1, min(args.entries, 2_000_000))
    args.pack = max(1, min(args.pack, 10_000))
    args.queries = max(1, min(args.queries, 1000))
    args.rps_seconds = max(0.5, min(args.rps_seconds, 30.0))
    args.clients = max(1, min(args.clients, 64))
    args.server_env = dict(kv.split("=", 1) for kv in args.server_env)
    return run_main("roomsync control-plane benchmark", run, args, limit_s=240.0)


if __name__ == "__main__":
    raise SystemExit(main())
