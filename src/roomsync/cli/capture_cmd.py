"""``roomsync capture diff URL --room R --peer P1 --peer P2``: where two peers' streams
diverge (runbook workflow 2, step 2; issue 12).

Fetches the room's capture with ``room capture`` (operator token with ``room:capture``,
from ``--operator-token`` or ``$ROOMSYNC_OPERATOR_TOKEN``) and aligns the two peers'
records with :func:`roomsync.ops.capture_diff.diff`. A ``--peer`` is a peer id (from the
capture, ``welcome`` or ``session.*`` logs) or an actor (then its newest session).
Prints the summary of each side and the first divergence, then the others; ``--json``
prints :meth:`~roomsync.ops.capture_diff.CaptureDiff.to_json`. Exit codes like
``diff(1)``: 0 the streams agree, 1 they diverge; 2 bad usage, a reject's exit code
(``roomsync control``'s table), 11 no answer from the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import aiohttp

from ..control.client import ControlClient, ControlRejected
from ..ops.capture_diff import diff, render
from .control_cmd import EXIT_UNREACHABLE, report_rejected


def register(sub: Any) -> None:
    p = sub.add_parser("capture", help="work with room captures (room capture)")
    csub = p.add_subparsers(dest="capture_command", required=True, metavar="ACTION")
    d = csub.add_parser(
        "diff", help="align two peers' captured streams and show where they diverge"
    )
    d.add_argument("url", help="the node's base URL, e.g. http://127.0.0.1:8787")
    d.add_argument("--room", required=True)
    d.add_argument(
        "--peer",
        action="append",
        required=True,
        metavar="PEER",
        help="a peer id or actor; give it twice (healthy one, failing one)",
    )
    d.add_argument(
        "--operator-token", help="token with room:capture (default: $ROOMSYNC_OPERATOR_TOKEN)"
    )
    d.add_argument(
        "--limit", type=int, default=1000, help="records to fetch (1..1000, default 1000)"
    )
    d.add_argument("--json", action="store_true", help="print JSON instead of text")
    d.set_defaults(run=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    if len(args.peer) != 2:
        print("roomsync capture diff: give --peer exactly twice", file=sys.stderr)
        return 2
    if not 1 <= args.limit <= 1000:
        print("roomsync capture diff: --limit must be 1..1000", file=sys.stderr)
        return 2
    token = args.operator_token or os.environ.get("ROOMSYNC_OPERATOR_TOKEN", "")

    async def fetch() -> Any:
        async with ControlClient(args.url, token) as client:
            return await client.call("room", "capture", room=args.room, limit=args.limit)

    try:
        result = asyncio.run(fetch())
    except ControlRejected as exc:
        return report_rejected(exc)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        print(f"roomsync capture diff: no answer from {args.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    envelopes = result.get("envelopes", []) if isinstance(result, dict) else []
    found = diff(envelopes, args.peer[0], args.peer[1], room=args.room)
    if args.json:
        print(json.dumps(found.to_json(), indent=2))
    else:
        print(render(found))
    return 1 if found.diverged else 0
