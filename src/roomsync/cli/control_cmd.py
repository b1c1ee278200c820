"""``roomsync control FAMILY COMMAND``: run a control command (SPEC §6).

The payload is ``--json '{...}'`` or ``key=value`` pairs (values parsed as JSON when they
are, e.g. ``limit=10``, ``locked=true``; strings otherwise). The token comes from
``--token`` or ``ROOMSYNC_OPERATOR_TOKEN``. Prints the result as JSON on stdout, or the
reject and its next action on stderr; the exit code says which (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import aiohttp

from ..control import REGISTRY
from ..control.client import ControlClient, ControlRejected
from ..core.codes import RejectClass

#: Exit code per outcome: 0 ok, 2 bad usage (argparse), 11 no answer from the server.
EXIT_CODES: dict[RejectClass, int] = {
    RejectClass.UNAUTHENTICATED: 3,
    RejectClass.FORBIDDEN: 4,
    RejectClass.INVALID_PAYLOAD: 5,
    RejectClass.NOT_FOUND: 6,
    RejectClass.PRECONDITION_FAILED: 7,
    RejectClass.CONFLICT: 8,
    RejectClass.RATE_LIMITED: 9,
    RejectClass.UNAVAILABLE: 10,
}
EXIT_UNREACHABLE = 11


def report_rejected(exc: ControlRejected) -> int:
    """Print a control reject and its next action on stderr; its exit code."""
    where = f" (field {exc.field})" if exc.field else ""
    needs = f" (needs {exc.required})" if exc.required else ""
    print(
        f"rejected: {exc.reject_class} {exc.reject_code}: {exc.message}{where}{needs}\n"
        f"next: {exc.next}",
        file=sys.stderr,
    )
    return EXIT_CODES[exc.reject_class]


def register(sub: Any) -> None:
    p = sub.add_parser("control", help="run a control-plane command (SPEC §6)")
    p.add_argument("--list", action="store_true", help="list every command, its cap and summary")
    p.add_argument(
        "--url",
        default=os.environ.get("ROOMSYNC_URL", "http://127.0.0.1:8787"),
        help="the node's base URL (default: $ROOMSYNC_URL, else http://127.0.0.1:8787)",
    )
    p.add_argument("--token", help="operator token (default: $ROOMSYNC_OPERATOR_TOKEN)")
    p.add_argument("--json", dest="payload_json", help="the payload as a JSON object")
    p.add_argument("family", nargs="?", help="command family, e.g. room")
    p.add_argument("name", nargs="?", metavar="command", help="command, e.g. get")
    p.add_argument("fields", nargs="*", metavar="key=value", help="payload fields")
    p.set_defaults(run=run)


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if args.payload_json:
        loaded = json.loads(args.payload_json)
        if not isinstance(loaded, dict):
            raise ValueError("--json must be a JSON object")
        payload.update(loaded)
    for item in args.fields:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        try:
            payload[key] = json.loads(text)
        except ValueError:
            payload[key] = text
    return payload


def run(args: argparse.Namespace) -> int:
    if args.list:
        for c in REGISTRY:
            print(f"{c.family} {c.name}\t{c.cap}\t{c.summary}")
        return 0
    if not args.family or not args.name:
        print("roomsync control: give FAMILY COMMAND (or --list)", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("ROOMSYNC_OPERATOR_TOKEN", "")
    try:
        payload = _payload(args)
    except ValueError as exc:
        print(f"roomsync control: {exc}", file=sys.stderr)
        return 2

    async def go() -> Any:
        async with ControlClient(args.url, token) as client:
            return await client.call(args.family, args.name, **payload)

    try:
        result = asyncio.run(go())
    except ControlRejected as exc:
        return report_rejected(exc)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        print(f"roomsync control: no answer from {args.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(result, indent=2))
    return 0
