"""``roomsync evidence URL --operator-token O --out bundle.tar.gz``: the runbook's
evidence bundle from a live node (SPEC §7, issue 12).

Collects with :func:`roomsync.ops.evidence.collect` (read-only control commands and
``GET`` routes; see that module for every file and its source), checks every file for
tokens, signing keys and blob payloads, and writes the ``.tar.gz`` only when the check
is clean. ``--config``/``--data-dir`` add the local config (redacted), the op-log replay
of a local SQLite store and the key secrets the check looks for. The operator token needs
``topology:get``, ``topology:events``, ``room:get``, ``room:capture``, ``archive:list``,
``archive:verify`` and ``policy:get`` (``topology:*,room:get,room:capture,archive:list,
archive:verify,policy:get``); what it may not run is listed in ``SUMMARY.md`` and left
out.

Prints the bundle's path on stdout and what stands out on stderr. Exit 0 written, 1 no
answer from the node, 2 bad usage, 3 refused by the redaction self-check (each finding
on stderr as ``file:line: kind``; nothing written).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

from ..ops.evidence import (
    EvidenceOptions,
    collect,
    parse_duration,
    secrets_of,
    write_bundle,
)
from .common import add_config_flags, settings_from

EXIT_UNREACHABLE = 1
EXIT_LEAK = 3


def register(sub: Any) -> None:
    p = sub.add_parser("evidence", help="collect the runbook's evidence bundle from a node")
    p.add_argument("url", help="the node's base URL, e.g. http://127.0.0.1:8787")
    p.add_argument("--operator-token", help="operator token (default: $ROOMSYNC_OPERATOR_TOKEN)")
    p.add_argument("--since", default="15m", help="the window, e.g. 15m, 90s, 2h (default 15m)")
    p.add_argument(
        "--room",
        action="append",
        default=[],
        metavar="ROOM",
        help="a room to capture (repeat); default: the busiest loaded rooms",
    )
    p.add_argument(
        "--busiest", type=int, default=3, help="rooms taken when none is named (default 3)"
    )
    p.add_argument(
        "--capture-limit", type=int, default=200, help="envelopes per room (1..1000, default 200)"
    )
    p.add_argument(
        "--metrics-gap",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between the two metrics snapshots (default 5)",
    )
    p.add_argument("--log-file", type=Path, help="a server log file to cut to the window")
    p.add_argument("--out", type=Path, required=True, help="the bundle to write (.tar.gz)")
    add_config_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        window = parse_duration(args.since)
    except ValueError as exc:
        print(f"roomsync evidence: --since: {exc}", file=sys.stderr)
        return 2
    if not 1 <= args.capture_limit <= 1000 or args.busiest < 0 or args.metrics_gap < 0:
        print(
            "roomsync evidence: --capture-limit 1..1000, --busiest and --metrics-gap >= 0",
            file=sys.stderr,
        )
        return 2
    if args.log_file is not None and not args.log_file.is_file():
        print(f"roomsync evidence: --log-file {args.log_file}: no such file", file=sys.stderr)
        return 2
    local = args.config is not None or args.data_dir is not None
    options = EvidenceOptions(
        url=args.url,
        operator_token=args.operator_token or os.environ.get("ROOMSYNC_OPERATOR_TOKEN", ""),
        window_ms=window,
        rooms=tuple(args.room),
        busiest=args.busiest,
        capture_limit=args.capture_limit,
        metrics_gap_s=args.metrics_gap,
        log_file=args.log_file,
        settings=settings_from(args) if local else None,
        config_file=args.config,
    )
    try:
        files = asyncio.run(collect(options))
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        print(f"roomsync evidence: no answer from {args.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    leaks = write_bundle(files, args.out, secrets_of(options))
    if leaks:
        first = leaks[0]
        more = f" (and {len(leaks) - 1} more)" if len(leaks) > 1 else ""
        print(
            f"roomsync evidence: refusing to write {args.out}: {first.kind} in {first.file} "
            f"line {first.line}{more}; nothing written",
            file=sys.stderr,
        )
        for leak in leaks:
            print(f"  {leak}", file=sys.stderr)
        return EXIT_LEAK
    summary = files["SUMMARY.md"].decode()
    standout = summary.split("## What stands out", 1)[1].split("\n## ", 1)[0].strip()
    print(str(args.out))
    print(standout, file=sys.stderr)
    return 0
