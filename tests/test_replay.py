"""``roomsync.replay.replay``: the op log replayed into canonical hashes (SPEC §1, §7)."""

from __future__ import annotations

import pytest

from roomsync.core.entries import Change
from roomsync.core.mst import build_root
from roomsync.replay import Checkpoint, ReplayReport, replay
from roomsync.storage.memory import MemoryStore


async def _store(changes: list[Change], *, compact_through: int = 0) -> MemoryStore:
    store = MemoryStore()
    await store.open()
    await store.load_room("m", now_ms=0)
    await store.append("m", changes, expected_head=0)
    if compact_through:
        await store.compact("m", compact_through)
    return store


def _changes(n: int) -> list[Change]:
    return [
        Change(f"/k{i % 3}", i + 1, 0, "a", None if i % 4 == 3 else b"%d" % i, i + 1)
        for i in range(n)
    ]


def _root(changes: list[Change]) -> str:
    return build_root({c.path: c for c in changes}.values())


async def test_replay_reproduces_the_live_root() -> None:
    changes = _changes(12)
    report = await replay(await _store(changes, compact_through=4), "m", every=3)
    assert isinstance(report, ReplayReport)
    assert (report.compacted_through, report.head, report.replayed_to) == (4, 12, 12)
    assert report.checkpoints == tuple(Checkpoint(seq, _root(changes[:seq])) for seq in (7, 10))
    assert report.replayed_root == report.live_root == _root(changes)
    assert report.match is True
    assert report.live_count == sum(
        c.value is not None for c in {c.path: c for c in changes}.values()
    )


async def test_default_checkpoints_are_about_ten() -> None:
    report = await replay(await _store(_changes(40)), "m")
    assert [cp.seq for cp in report.checkpoints] == list(range(4, 41, 4))


async def test_partial_replay_has_no_verdict() -> None:
    changes = _changes(10)
    report = await replay(await _store(changes), "m", to_seq=6)
    assert report.replayed_to == 6 and report.match is None
    assert report.replayed_root == _root(changes[:6])
    assert report.live_root == _root(changes)


async def test_to_json_is_the_cli_document() -> None:
    report = await replay(await _store(_changes(3)), "m", every=2)
    assert report.to_json() == {
        "room": "m",
        "compacted_through": 0,
        "head": 3,
        "replayed_to": 3,
        "checkpoints": [{"seq": 2, "root": _root(_changes(2))}],
        "replayed_root": _root(_changes(3)),
        "live_root": _root(_changes(3)),
        "live_count": 3,
        "match": True,
    }


async def test_unknown_room_and_bad_interval() -> None:
    store = await _store(_changes(2))
    with pytest.raises(LookupError, match="does not exist"):
        await replay(store, "nope")
    with pytest.raises(ValueError, match="every must be at least 1"):
        await replay(store, "m", every=0)
