"""``python -m roomsync.testing.reliability [--long] [--only NAME ...] [--json FILE]``:
run the reliability suite against real servers and print the scorecard (exit 1 when a
scenario failed)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .runner import run_scenarios, scenarios


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m roomsync.testing.reliability")
    p.add_argument("--long", action="store_true", help="the long profile (full counts)")
    p.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="NAME",
        help="run only these scenarios: " + ", ".join(s.name for s in scenarios()),
    )
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the scorecard")
    args = p.parse_args(argv)
    try:
        card = asyncio.run(run_scenarios("long" if args.long else "quick", args.only))
    except ValueError as exc:
        p.error(str(exc))
    print(card.render())
    if args.json is not None:
        card.write_json(args.json)
    return 0 if card.ok else 1


if __name__ == "__main__":
    sys.exit(main())
