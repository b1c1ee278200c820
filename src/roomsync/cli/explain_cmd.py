"""``roomsync explain CODE``: what a code means, its likely causes and the next action.

``CODE`` is a close code (``4001``), an error code (``resync-required``), a reject class
(``precondition-failed``), a control-plane reject code (``archive-ref-unknown``) or an
auth reason (``token-expired``). Every answer comes from
:data:`roomsync.core.explain.TABLE`, the table the SDK's errors read and
``docs/codes.md`` is generated from; a code of several kinds (``forbidden``) prints each.

``--json`` prints ``{"query", "explanations": [...]}`` (fields of
:meth:`~roomsync.core.explain.Explanation.to_json`); ``--list`` every code, grouped by
kind; ``--markdown`` the page ``docs/codes.md``. Colour only when stdout is a terminal
(and ``NO_COLOR`` is unset). Exit 0; 2 for an unknown code, with the closest known codes
on stderr (and in ``suggestions`` with ``--json``), or for bad usage. Offline: it imports
no server code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

from ..core.explain import (
    RUNBOOK_DOC,
    TABLE,
    Explanation,
    Kind,
    explain,
    markdown,
    related,
    suggest,
)

_BOLD, _DIM, _CYAN, _YELLOW, _RESET = "\033[1m", "\033[2m", "\033[36m", "\033[33m", "\033[0m"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="what a close code, error code, reject class or reject code means and what to do",
    )
    p.add_argument("code", nargs="?", help="e.g. 4001, resync-required, archive-ref-unknown")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--list", action="store_true", help="list every known code by kind")
    p.add_argument(
        "--kind", choices=[str(k) for k in Kind], default=None, help="only this kind of code"
    )
    p.add_argument("--markdown", action="store_true", help="print docs/codes.md (the whole table)")
    p.set_defaults(run=run)


def _use_color(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


def _paint(text: str, style: str, color: bool) -> str:
    return f"{style}{text}{_RESET}" if color else text


def render(e: Explanation, *, color: bool = False) -> str:
    """One explanation as text for a terminal: code, kind, meaning, causes as bullets,
    next action, what comes with it and the runbook section to read."""
    lines = [
        f"{_paint(e.code, _BOLD, color)}  {_paint(e.kind.label, _CYAN, color)}",
        f"  {e.meaning}",
    ]
    if e.causes:
        lines.append("  likely causes:")
        lines += [f"    - {cause}" for cause in e.causes]
    lines.append(f"  {_paint('next action:', _YELLOW + _BOLD, color)} {e.next_action}")
    if e.client_action is not None:
        lines.append(f"  the SDK by itself: {e.client_action}")
    if e.close is not None:
        lines.append(f"  closes with: {e.close}")
    if e.reject_class is not None and e.kind is not Kind.REJECT_CLASS:
        lines.append(f"  reject class: {e.reject_class} (HTTP {e.http_status})")
    elif e.kind is Kind.REJECT_CLASS:
        lines.append(f"  HTTP status: {e.http_status}")
    if e.runbook is not None:
        lines.append(_paint(f'  runbook: {RUNBOOK_DOC}, "{e.runbook}"', _DIM, color))
    if see := related(e):
        lines.append(f"  see also: {', '.join(see)}")
    return "\n".join(lines)


def render_list(kind: Kind | None = None, *, color: bool = False) -> str:
    """Every known code with its meaning, grouped by kind."""
    blocks = []
    for k in Kind:
        if kind is not None and k is not kind:
            continue
        rows = [e for e in TABLE if e.kind is k]
        width = max(len(e.code) for e in rows)
        lines = [_paint(f"{k.label}s ({k})", _BOLD, color)]
        lines += [f"  {e.code.ljust(width)}  {e.meaning}" for e in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def run(args: argparse.Namespace) -> int:
    kind = Kind(args.kind) if args.kind is not None else None
    out = sys.stdout
    if args.markdown:
        out.write(markdown())
        return 0
    if args.list:
        if args.json:
            grouped = {
                str(k): [e.to_json() for e in TABLE if e.kind is k]
                for k in Kind
                if kind is None or k is kind
            }
            print(json.dumps(grouped, indent=2))
        else:
            print(render_list(kind, color=_use_color(out)))
        return 0
    if not args.code:
        print("roomsync explain: give a CODE (or --list)", file=sys.stderr)
        return 2
    found = explain(args.code, kind)
    if not found:
        close = suggest(args.code)
        hint = f"; closest: {', '.join(close)}" if close else ""
        print(
            f"roomsync explain: unknown code {args.code!r}{hint} "
            "(`roomsync explain --list` shows every code)",
            file=sys.stderr,
        )
        if args.json:
            print(json.dumps({"query": args.code, "explanations": [], "suggestions": close}))
        return 2
    if args.json:
        body = {"query": args.code, "explanations": [e.to_json() for e in found]}
        print(json.dumps(body, indent=2))
    else:
        color = _use_color(out)
        print("\n\n".join(render(e, color=color) for e in found))
    return 0
