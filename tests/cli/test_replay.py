"""``roomsync replay`` recomputes the canonical hash from the op log (SPEC §7)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from roomsync.core.entries import Change
from roomsync.core.mst import build_root
from roomsync.storage.sqlite import SqliteStore


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roomsync.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def make_room(tmp_path: Path) -> list[Change]:
    store = SqliteStore(tmp_path / "roomsync.db")
    await store.open()
    await store.load_room("r", now_ms=0)
    changes = [
        Change(f"/k{i % 7}", i + 1, 0, "a", None if i % 5 == 4 else b"%d" % i, i + 1)
        for i in range(40)
    ]
    await store.append("r", changes, expected_head=0)
    await store.compact("r", 15)
    await store.close()
    return changes


def test_replay_matches_live_root(tmp_path: Path) -> None:
    changes = asyncio.run(make_room(tmp_path))
    state: dict[str, Change] = {}
    for c in changes:
        state[c.path] = c
    out = run("replay", "--data-dir", str(tmp_path), "--room", "r", "--every", "10")
    assert out.returncode == 0, out.stderr
    assert "MATCH" in out.stdout
    assert build_root(state.values()) in out.stdout
    report = json.loads(run("replay", "--data-dir", str(tmp_path), "--room", "r", "--json").stdout)
    assert report["compacted_through"] == 15 and report["head"] == 40
    assert report["replayed_root"] == report["live_root"] == build_root(state.values())
    assert [cp["seq"] for cp in report["checkpoints"]] == [
        17,
        19,
        21,
        23,
        25,
        27,
        29,
        31,
        33,
        35,
        37,
        39,
    ]


def test_replay_to_seq_is_partial(tmp_path: Path) -> None:
    changes = asyncio.run(make_room(tmp_path))
    report = json.loads(
        run("replay", "--data-dir", str(tmp_path), "--room", "r", "--json", "--to-seq", "30").stdout
    )
    state: dict[str, Change] = {}
    for c in changes[:30]:
        state[c.path] = c
    assert report["replayed_to"] == 30 and report["match"] is None
    assert report["replayed_root"] == build_root(state.values())


def test_replay_detects_a_diverged_live_state(tmp_path: Path) -> None:
    asyncio.run(make_room(tmp_path))
    # Another process edits the live state behind the op log's back.
    with contextlib.closing(sqlite3.connect(tmp_path / "roomsync.db")) as conn, conn:
        edited = conn.execute(
            "UPDATE entries SET value = x'00' WHERE room = 'r' AND value IS NOT NULL"
        ).rowcount
    assert edited > 0
    out = run("replay", "--data-dir", str(tmp_path), "--room", "r")
    assert out.returncode == 1 and "MISMATCH" in out.stdout


def test_replay_unknown_room(tmp_path: Path) -> None:
    asyncio.run(make_room(tmp_path))
    out = run("replay", "--data-dir", str(tmp_path), "--room", "nope")
    assert out.returncode == 1 and "does not exist" in out.stderr


def test_replay_prints_lines(tmp_path: Path) -> None:
    """The human output, line by line (what operators paste into evidence)."""
    changes = asyncio.run(make_room(tmp_path))
    state: dict[str, Change] = {c.path: c for c in changes}
    root = build_root(state.values())
    out = run("replay", "--data-dir", str(tmp_path), "--room", "r", "--every", "20")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "room r: base through seq 15, head 40"
    assert lines[1] == f"  seq {35:>10}  {build_root({c.path: c for c in changes[:35]}.values())}"
    assert lines[2:] == [
        f"replayed to seq 40: {root}",
        f"live root ({sum(c.value is not None for c in state.values())} entries): {root}",
        "MATCH: replay reproduces the live canonical hash",
    ]
