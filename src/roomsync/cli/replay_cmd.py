"""``roomsync replay``: recompute canonical hashes from the op log (SPEC §7 evidence).

Replays the compacted base plus the op log with the LWW rule, printing the canonical MST
root at checkpoints, and compares the final root with the live state's root. Exit 0 when
they match (or when ``--to-seq`` stops early), 1 when they differ, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from ..core.entries import Change
from ..core.merge import merge_into
from ..core.mst import build_root
from ..server.app import build_store
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
    return asyncio.run(_replay(settings, args))


async def replay_room(
    store: Any, room: str, *, to_seq: int | None = None, every: int = 0
) -> dict[str, Any]:
    """Replay ``room`` from ``store``; returns the report ``roomsync replay`` prints."""
    record = await store.get_room(room)
    if record is None:
        raise LookupError(f"room {room!r} does not exist in this store")
    base = await store.base_snapshot(room)
    state: dict[str, Change] = {}
    merge_into(state, base)
    head = record.head
    stop = head if to_seq is None else min(to_seq, head)
    step = every or max(1, (stop - record.compacted_through) // 10)
    checkpoints: list[dict[str, Any]] = []
    cursor = record.compacted_through
    next_mark = cursor + step
    while cursor < stop:
        rows = await store.changes_since(room, cursor, limit=10_000)
        if not rows:
            break
        for change in rows:
            if change.seq is None or change.seq > stop:
                cursor = stop
                break
            if change.seq != cursor + 1:
                raise ValueError(f"op log gap: seq {cursor + 1} missing before {change.seq}")
            merge_into(state, [change])
            cursor = change.seq
            if cursor >= next_mark:
                checkpoints.append({"seq": cursor, "root": build_root(state.values())})
                next_mark = cursor + step
    replayed_root = build_root(state.values())
    loaded = await store.load_room(room, now_ms=0)
    live_root = build_root(loaded.entries)
    report: dict[str, Any] = {
        "room": room,
        "compacted_through": record.compacted_through,
        "head": head,
        "replayed_to": cursor,
        "checkpoints": checkpoints,
        "replayed_root": replayed_root,
        "live_root": live_root,
        "live_count": sum(1 for c in loaded.entries if c.value is not None),
    }
    report["match"] = replayed_root == live_root if cursor == head else None
    return report


async def _replay(settings: Any, args: argparse.Namespace) -> int:
    store = build_store(settings)
    await store.open()
    try:
        report = await replay_room(store, args.room, to_seq=args.to_seq, every=args.every)
    except (LookupError, ValueError) as exc:
        die(str(exc))
    finally:
        await store.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"room {report['room']}: base through seq {report['compacted_through']}, "
            f"head {report['head']}"
        )
        for cp in report["checkpoints"]:
            print(f"  seq {cp['seq']:>10}  {cp['root']}")
        print(f"replayed to seq {report['replayed_to']}: {report['replayed_root']}")
        print(f"live root ({report['live_count']} entries): {report['live_root']}")
        if report["match"] is True:
            print("MATCH: replay reproduces the live canonical hash")
        elif report["match"] is False:
            print("MISMATCH: replay differs from the live canonical hash")
        else:
            print("partial replay (--to-seq): no comparison with the live root")
    return 1 if report["match"] is False else 0
