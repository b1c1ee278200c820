"""``roomsync canary URL``: handshake, sync, blob flow and one control-plane command per
family as pass/fail checks with timings, for automation (runbook "Preventive practices").

The same probe as ``roomsync doctor`` (:mod:`roomsync.ops.probe`), folded into the checks
of :data:`roomsync.ops.checks.CANARY_CHECKS` (a check fails when one of its steps failed,
and names it). One run by default; ``--interval S`` repeats every S seconds, forever
unless ``--count N`` bounds it. ``--prometheus-textfile PATH`` writes, after each run,
``roomsync_canary_*`` gauges for node-exporter's textfile collector, atomically (a temp
file renamed over ``PATH``, by ``prometheus_client.write_to_textfile``). ``--json``
prints one JSON object per run (JSON lines). Exit 0 when every run passed, 1 otherwise,
2 for bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from ..ops.checks import Check, Report, Status, canary_checks
from ..ops.probe import ProbeOptions, run_probe
from .doctor_cmd import GREEN, RED, YELLOW, add_probe_flags, options_from, paint, use_color

_LABELS = {Status.PASS: ("ok", GREEN), Status.FAIL: ("FAIL", RED), Status.SKIP: ("skip", YELLOW)}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "canary",
        help="handshake, sync, blob flow and one control command per family: pass/fail checks",
    )
    add_probe_flags(p)
    p.add_argument(
        "--interval", type=float, default=None, metavar="S", help="repeat every S seconds"
    )
    p.add_argument(
        "--count",
        type=int,
        default=None,
        metavar="N",
        help="number of runs (default 1, or forever with --interval)",
    )
    p.add_argument(
        "--prometheus-textfile",
        default=None,
        metavar="PATH",
        help="write roomsync_canary_* gauges to PATH (node-exporter textfile collector)",
    )
    p.set_defaults(run=run)


def textfile_registry(
    report: Report, results: tuple[Check, ...], *, last_success: float | None = None
) -> CollectorRegistry:
    """The gauges of one run (skipped checks have no ``check_ok`` sample)."""
    registry = CollectorRegistry()
    ok = Gauge(
        "roomsync_canary_check_ok",
        "1 when the canary check passed, 0 when it failed (skipped checks are absent).",
        ["check"],
        registry=registry,
    )
    seconds = Gauge(
        "roomsync_canary_check_seconds",
        "Time the canary check's steps took, in seconds.",
        ["check"],
        registry=registry,
    )
    for check in results:
        if check.status is Status.SKIP:
            continue
        ok.labels(check.name).set(1 if check.status is Status.PASS else 0)
        seconds.labels(check.name).set(check.seconds)
    Gauge("roomsync_canary_ok", "1 when no canary check failed.", registry=registry).set(
        1 if report.ok else 0
    )
    Gauge("roomsync_canary_run_seconds", "Duration of the last canary run.", registry=registry).set(
        report.duration_ms / 1000
    )
    Gauge(
        "roomsync_canary_last_run_timestamp_seconds",
        "When the last canary run started (Unix time).",
        registry=registry,
    ).set(report.started_at)
    if last_success is not None:
        Gauge(
            "roomsync_canary_last_success_timestamp_seconds",
            "When the last passing canary run of this process started (Unix time).",
            registry=registry,
        ).set(last_success)
    return registry


def render(report: Report, results: tuple[Check, ...], *, color: bool = False) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.started_at))
    verdict = "ok" if report.ok else "FAIL"
    lines = [f"{stamp} canary {report.url} (room {report.room}): {verdict}"]
    for check in results:
        label, style = _LABELS[check.status]
        line = f"  {paint(label.ljust(4), style, color)}  {check.name:<17} {check.seconds:.3f} s"
        if check.failures:
            first = check.failures[0]
            line += f"  {first.step.id}: {first.verdict.cause or first.verdict.summary}"
        lines.append(line)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        print("roomsync canary: --count must be at least 1", file=sys.stderr)
        return 2
    if args.interval is not None and args.interval < 0:
        print("roomsync canary: --interval must not be negative", file=sys.stderr)
        return 2
    count = args.count if args.count is not None else (None if args.interval is not None else 1)
    try:
        # The same two blobs every run: a canary every minute must not pile up blobs.
        opts = dataclasses.replace(options_from(args), fixed_blobs=True)
        return asyncio.run(_loop(args, opts, count))
    except ValueError as exc:
        print(f"roomsync canary: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _loop(args: argparse.Namespace, opts: ProbeOptions, count: int | None) -> int:
    all_ok = True
    last_success: float | None = None
    n = 0
    while count is None or n < count:
        if n:
            await asyncio.sleep(args.interval or 0)
        n += 1
        report = await run_probe(opts)
        results = canary_checks(report)
        all_ok = all_ok and report.ok
        if report.ok:
            last_success = report.started_at
        if args.prometheus_textfile:
            write_to_textfile(
                args.prometheus_textfile,
                textfile_registry(report, results, last_success=last_success),
            )
        if args.json:
            body = {
                "url": report.url,
                "room": report.room,
                "ok": report.ok,
                "started_at": report.started_at,
                "seconds": round(report.duration_ms / 1000, 4),
                "checks": [c.to_json() for c in results],
            }
            print(json.dumps(body), flush=True)
        else:
            print(render(report, results, color=use_color(sys.stdout)), flush=True)
    return 0 if all_ok else 1
