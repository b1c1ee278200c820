"""``python -m bench.peers``: roomsync against its peers, side by side.

    python -m bench.peers run [--systems S ...] [--scenarios X ...] [--quick] [--out PATH]
    python -m bench.peers report RUN.json [--out PATH]
    python -m bench.peers list

Systems: roomsync, raw-picows, y-websocket, hocuspocus, pycrdt-websocket (the default
set), roomsync-memory (roomsync with ``--storage memory``, like the in-memory peers) and
raw-aiohttp (the relay on aiohttp, roomsync's WebSocket library before picows).
Scenarios: fanout (a), steady (a'), rooms (b), idle (c), late (d) (default: all).
A full run writes bench/RESULTS.md; ``--quick`` (small sizes, for development) prints the
table only, unless ``--out`` is given. Install the peers first: bench/peers/install.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from .drivers import get_driver
from .report import results_md, table
from .scenarios import ALIASES, FULL, QUICK, SCENARIOS, TITLES, Context, Sizes
from .servers import REPO, SYSTEMS, Server

GENERATOR_CORE = 1
DEFAULT_OUT = REPO / "bench" / "RESULTS.md"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def one_line(text: str, limit: int = 400) -> str:
    """An error for a table note: its lines joined, the end kept (tracebacks end there)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    joined = " | ".join(lines)
    return joined if len(joined) <= limit else lines[0][:120] + " | ... " + joined[-(limit - 130):]


def _split(values: list[str] | None, known: list[str], aliases: dict[str, str]) -> list[str]:
    if not values:
        return list(known)
    out = []
    for v in values:
        for name in filter(None, v.split(",")):
            name = aliases.get(name, name)
            if name not in known:
                raise SystemExit(f"unknown {name!r}; choose from {', '.join(known)}")
            out.append(name)
    return out


def setup_process() -> str:
    """Pin the generator to its core and raise the open-files limit (servers inherit it)."""
    notes = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    notes.append(f"ulimit -n {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
    cpus = os.sched_getaffinity(0)
    if GENERATOR_CORE in cpus and len(cpus) > 1:
        os.sched_setaffinity(0, {GENERATOR_CORE})
        notes.append(f"generator on core {GENERATOR_CORE}")
    else:
        notes.append("generator NOT pinned (needs 2 cores)")
    return ", ".join(notes)


async def run_one(system: str, scenario: str, sizes: Sizes) -> tuple[dict[str, Any], str]:
    spec = SYSTEMS[system]
    why = spec.check()
    if why:
        return {"error": why}, ""
    server = Server(spec)
    try:
        await asyncio.to_thread(server.start)
    except Exception as exc:
        return {"error": one_line(f"start failed: {exc}")}, server.command_line
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=sizes.timeout),
    )
    ctx = Context(driver=get_driver(system, spec.driver), server=server, session=session,
                  sizes=sizes, clients=[])
    ok = False
    try:
        result = await asyncio.wait_for(SCENARIOS[scenario](ctx), sizes.scenario_timeout)
        ok = True
    except Exception as exc:
        result = {"error": one_line(f"{type(exc).__name__}: {exc}")}
        if not server.alive():
            result["error"] += f" (server died; log {server.log_path})"
    finally:
        try:
            await asyncio.wait_for(
                asyncio.gather(*(c.close() for c in ctx.clients), return_exceptions=True), 60)
        except TimeoutError:
            log(f"  {system}: closing clients timed out")
        await session.close()
        cmd = server.command_line
        alive = server.alive()
        await asyncio.to_thread(server.stop)
    if ok and not alive:
        result["warning"] = "server exited during the scenario"
    if not ok:
        result["log"] = str(server.log_path)
    else:
        import shutil

        shutil.rmtree(server.workdir, ignore_errors=True)
    return result, cmd


def _short(m: dict[str, Any]) -> str:
    keys = ("error", "skipped", "deliveries_per_s", "lat_p50_ms", "lat_p99_ms",
            "server_cpu_us_per_delivery", "complete_subs", "server_cpu_pct", "rss_connected_mb",
            "rss_per_conn_kb", "connected", "full_ms", "full_bytes_in", "diff_ms", "diff_bytes_in")
    parts = []
    for k in keys:
        if k in m:
            v = m[k]
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


async def run(args: argparse.Namespace) -> int:
    systems = _split(args.systems, list(SYSTEMS), {}) if args.systems else [
        name for name, spec in SYSTEMS.items() if spec.default]
    scenarios = _split(args.scenarios, list(SCENARIOS), ALIASES)
    sizes = QUICK if args.quick else FULL
    command = "python -m bench.peers " + " ".join(shlex.quote(a) for a in args.argv)
    log(f"bench.peers: {setup_process()}; systems {systems}; scenarios {scenarios}"
        + (" (quick)" if args.quick else ""))
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    t0 = time.monotonic()
    results: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in systems}
    commands: dict[str, str] = {}
    for system in systems:
        for scenario in scenarios:
            log(f"- {system} / {TITLES[scenario]} ...")
            ts = time.monotonic()
            res, cmd = await run_one(system, scenario, sizes)
            results[system][scenario] = res
            if cmd:
                commands.setdefault(system, cmd)
            log(f"  {time.monotonic() - ts:.1f}s  {_short(res)}")
    duration = time.monotonic() - t0
    load = "load average (1/5/15 min) at start {:.1f}/{:.1f}/{:.1f}, at end {:.1f}/{:.1f}/{:.1f}"\
        .format(*load_before, *os.getloadavg())
    record = {
        "command": command, "started": started, "duration_s": duration, "load": load,
        "quick": args.quick, "systems": systems, "scenarios": scenarios,
        "sizes": sizes.as_dict(), "versions": {s: SYSTEMS[s].version() for s in systems},
        "commands": commands, "results": results,
    }
    print(table(results, systems, scenarios))
    out = args.out or (None if args.quick else str(DEFAULT_OUT))
    if out:
        Path(out).write_text(results_md(record))
        log(f"wrote {out}")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1, default=str))
        log(f"wrote {args.json}")
    failed = [(s, sc) for s in systems for sc in scenarios if "error" in results[s][sc]]
    return 1 if failed and len(failed) == len(systems) * len(scenarios) else 0


def render(args: argparse.Namespace) -> int:
    record = json.loads(Path(args.source).read_text())
    out = args.out or str(DEFAULT_OUT)
    cmd = "python -m bench.peers " + " ".join(shlex.quote(a) for a in args.argv)
    Path(out).write_text(results_md(record, rendered_from=cmd))
    print(table(record["results"], record["systems"], record["scenarios"]))
    log(f"wrote {out}")
    return 0


def list_systems() -> int:
    for name, spec in SYSTEMS.items():
        why = spec.check()
        print(f"{name:18} {'MISSING: ' + why if why else spec.version()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run scenarios against systems, print the table")
    r.add_argument("--systems", nargs="+", metavar="S", help=", ".join(SYSTEMS))
    r.add_argument("--scenarios", nargs="+", metavar="X",
                   help=", ".join(SCENARIOS) + " (or a, a', b, c, d)")
    r.add_argument("--quick", action="store_true", help="small sizes, for development")
    r.add_argument("--out", help=f"write the results page here (default {DEFAULT_OUT} "
                   "for a full run, nothing for --quick)")
    r.add_argument("--json", help="also write raw results as JSON here")
    rep = sub.add_parser("report", help="render the results page again from a run's --json")
    rep.add_argument("source", help="JSON written by run --json")
    rep.add_argument("--out", help=f"default {DEFAULT_OUT}")
    sub.add_parser("list", help="systems, install state and versions")
    args = ap.parse_args(argv)
    args.argv = argv
    if args.cmd == "list":
        return list_systems()
    if args.cmd == "report":
        return render(args)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(args))
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
