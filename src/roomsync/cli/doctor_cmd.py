"""``roomsync doctor URL``: walk the runbook's triage order against a live server.

Each step of :data:`roomsync.ops.checks.STEPS` is reported pass / fail / skipped with what
was observed (HTTP status, close code, error code, reject class, latencies) and, on
failure, the likely cause, the next action and the runbook's lines for it. ``--json``
prints the report (:meth:`roomsync.ops.checks.Report.to_json`). Colour only when stdout
is a terminal and ``NO_COLOR`` is unset. Exit 0 when no step failed, 1 otherwise, 2 for
bad usage.

The probe (:mod:`roomsync.ops.probe`) writes a path under ``/.roomsync-doctor/`` and
deletes it at the end, and uploads two small blobs, which stay in the room (a peer cannot
delete a blob). Tokens come from the flags or ``ROOMSYNC_TOKEN`` /
``ROOMSYNC_OPERATOR_TOKEN``, so they need not be on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, TextIO

from ..ops.checks import Group, Report, Status, StepResult
from ..ops.probe import DEFAULT_ROOM, ProbeOptions, run_probe

BOLD, DIM, RED, GREEN, YELLOW, RESET = (
    "\033[1m",
    "\033[2m",
    "\033[31m",
    "\033[32m",
    "\033[33m",
    "\033[0m",
)
_LABELS = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.SKIP: "SKIP"}
_STYLES = {Status.PASS: GREEN, Status.FAIL: RED + BOLD, Status.SKIP: YELLOW}


def add_probe_flags(p: argparse.ArgumentParser) -> None:
    """The flags ``doctor`` and ``canary`` share."""
    p.add_argument(
        "url",
        nargs="?",
        default=os.environ.get("ROOMSYNC_URL", "http://127.0.0.1:8787"),
        help="the node's base URL: http(s):// or ws(s)://, with a proxy's path prefix if "
        "any (default: $ROOMSYNC_URL, else http://127.0.0.1:8787)",
    )
    p.add_argument("--room", default=DEFAULT_ROOM, help=f"room to probe (default {DEFAULT_ROOM})")
    p.add_argument(
        "--token", default=None, help="peer token for the room (default: $ROOMSYNC_TOKEN)"
    )
    p.add_argument(
        "--operator-token",
        default=None,
        help="operator token for the control-plane steps (default: $ROOMSYNC_OPERATOR_TOKEN)",
    )
    p.add_argument(
        "--subscribe",
        action="append",
        default=[],
        metavar="PREFIX",
        help="re-run with this subscription scope (repeatable) and say whether it filters "
        "the probe path",
    )
    p.add_argument(
        "--query", default=None, metavar="NAME", help="also run this query spec (query run)"
    )
    p.add_argument(
        "--cafile", default=None, help="CA certificate(s) (PEM) to trust for https/wss URLs"
    )
    p.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for each answer (default 5)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def options_from(args: argparse.Namespace) -> ProbeOptions:
    return ProbeOptions(
        url=args.url,
        room=args.room,
        token=args.token or os.environ.get("ROOMSYNC_TOKEN") or None,
        operator_token=args.operator_token or os.environ.get("ROOMSYNC_OPERATOR_TOKEN") or None,
        subscribe=tuple(args.subscribe),
        query=args.query,
        cafile=args.cafile,
        timeout_s=args.timeout,
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="walk the troubleshooting runbook against a live server, step by step",
    )
    add_probe_flags(p)
    p.set_defaults(run=run)


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


def paint(text: str, style: str, color: bool) -> str:
    return f"{style}{text}{RESET}" if color else text


def render_step(r: StepResult, *, color: bool = False) -> list[str]:
    v = r.verdict
    label = paint(_LABELS[v.status].ljust(4), _STYLES[v.status], color)
    lines = [f"  {label}  {r.step.id:<18} {v.summary}"]
    pad = " " * 8
    if v.status is Status.FAIL:
        if v.cause:
            lines.append(f"{pad}{paint('cause:', BOLD, color)}   {v.cause}")
        if v.next_action:
            lines.append(f"{pad}{paint('next:', YELLOW + BOLD, color)}    {v.next_action}")
        for line in v.runbook:
            lines.append(paint(f'{pad}runbook: "{line}"', DIM, color))
        if v.codes:
            lines.append(paint(f"{pad}explain: roomsync explain {' '.join(v.codes)}", DIM, color))
    return lines


def render(report: Report, *, color: bool = False) -> str:
    """The report as text for a terminal, grouped by the runbook's triage lines."""
    lines = [paint(f"roomsync doctor {report.url} (room {report.room})", BOLD, color)]
    for n, group in enumerate(Group, 1):
        mine = [r for r in report.results if r.step.group is group]
        if not mine:
            continue
        lines.append("")
        lines.append(paint(f"{n}. {group.heading}", BOLD, color))
        for r in mine:
            lines += render_step(r, color=color)
    if report.notes:
        lines.append("")
        lines += [f"note: {note}" for note in report.notes]
    counts = report.counts()
    verdict = paint("ok" if report.ok else "FAILED", GREEN if report.ok else RED + BOLD, color)
    lines.append("")
    lines.append(
        f"{verdict}: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['skipped']} skipped in {report.duration_ms:.0f} ms"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        opts = options_from(args)
        report = asyncio.run(run_probe(opts))
    except ValueError as exc:
        print(f"roomsync doctor: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(render(report, color=use_color(sys.stdout)))
    return 0 if report.ok else 1
