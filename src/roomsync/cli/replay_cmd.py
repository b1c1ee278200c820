"""``roomsync replay``: recompute canonical hashes from the op log (SPEC §7 evidence).

Prints the report of :func:`roomsync.replay.replay`: the canonical MST root at
checkpoints of the replayed base plus op log, and whether the final root equals the live
state's root. Exit 0 when they match (or when ``--to-seq`` stops early), 1 when they
differ or the room cannot be replayed, 2 on usage errors. Opens the store the settings
name and nothing else: no server code is imported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from ..config import Settings
from ..replay import ReplayReport, replay
from ..storage.factory import build_store
from .common import add_config_flags, die, settings_from


def register(sub: Any) -> None:
    p = sub.add_parser("replay", help="rebuild a room from its op log and check its hash")
    add_config_flags(p)
    p.add_argument("--room", required=True)
    p.add_argument("--to-seq", type=int, default=None, help="stop after this seq")
    p.add_argument(
        "--every",
        type=int,
        default=0,
        help="print a checkpoint hash every N seqs (default: about 10 checkpoints)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    report = asyncio.run(_replay(settings, args))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print(report)
    return 1 if report.match is False else 0


async def _replay(settings: Settings, args: argparse.Namespace) -> ReplayReport:
    store = build_store(settings)
    await store.open()
    try:
        return await replay(store, args.room, to_seq=args.to_seq, every=args.every or None)
    except (LookupError, ValueError) as exc:
        die(str(exc))
    finally:
        await store.close()


def _print(report: ReplayReport) -> None:
    print(f"room {report.room}: base through seq {report.compacted_through}, head {report.head}")
    for cp in report.checkpoints:
        print(f"  seq {cp.seq:>10}  {cp.root}")
    print(f"replayed to seq {report.replayed_to}: {report.replayed_root}")
    print(f"live root ({report.live_count} entries): {report.live_root}")
    if report.match is True:
        print("MATCH: replay reproduces the live canonical hash")
    elif report.match is False:
        print("MISMATCH: replay differs from the live canonical hash")
    else:
        print("partial replay (--to-seq): no comparison with the live root")
