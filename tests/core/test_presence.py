from __future__ import annotations

import pytest

from roomsync.core.errors import TooLarge
from roomsync.core.presence import PresenceTable


def table(**kw: int) -> PresenceTable:
    return PresenceTable(
        ttl_ms=kw.get("ttl", 1000),
        max_bytes=kw.get("max_bytes", 100),
        max_members=kw.get("members", 3),
        leave_grace_ms=kw.get("grace", 0),
    )


def test_batches_only_latest_state_per_peer() -> None:
    t = table()
    t.update("p1", "a", {"x": 1}, 10, 0)
    t.update("p1", "a", {"x": 2}, 10, 1)
    t.update("p2", "b", "hi", 4, 1)
    changed, left = t.take_dirty()
    assert changed == [
        {"peer": "p1", "actor": "a", "state": {"x": 2}},
        {"peer": "p2", "actor": "b", "state": "hi"},
    ]
    assert left == [] and not t.has_pending()


def test_ttl_expiry_and_touch() -> None:
    t = table(ttl=100)
    t.update("p1", "a", 1, 1, 0)
    t.update("p2", "b", 1, 1, 0)
    t.touch("p1", 90)
    assert t.expire(150) == ["p2"]
    assert t.take_dirty()[1] == ["p2"]
    assert t.expire(191) == ["p1"]


def test_disconnect_with_and_without_grace() -> None:
    t = table()
    t.update("p1", "a", 1, 1, 0)
    t.disconnect("p1", 5)
    assert t.take_dirty() == ([], ["p1"])
    g = table(grace=50)
    g.update("p1", "a", 1, 1, 0)
    g.disconnect("p1", 10)
    assert g.snapshot() == [] and g.expire(40) == []
    assert g.expire(60) == ["p1"]


def test_limits() -> None:
    t = table(max_bytes=5, members=1)
    with pytest.raises(TooLarge, match="presence_max_bytes"):
        t.update("p1", "a", "xxxxxx", 6, 0)
    t.update("p1", "a", 1, 1, 0)
    with pytest.raises(TooLarge, match="presence_max_members"):
        t.update("p2", "b", 1, 1, 0)


def test_next_deadline_is_the_earliest_expiry_or_leave() -> None:
    from roomsync.core.presence import PresenceTable

    t = PresenceTable(ttl_ms=1000, max_bytes=1000, max_members=10, leave_grace_ms=200)
    assert t.next_deadline() is None
    t.update("a", "ann", {"x": 1}, 8, now_ms=100)
    t.update("b", "bob", {"x": 1}, 8, now_ms=500)
    assert t.next_deadline() == 1101  # expire() removes a when now - seen > ttl
    assert t.expire(1100) == [] and t.expire(1101) == ["a"]
    t.touch("b", 1200)
    t.disconnect("b", 1300)
    assert t.next_deadline() == 1500  # the leave grace comes before b's TTL
    assert t.expire(1499) == [] and t.expire(1500) == ["b"]
    assert t.next_deadline() is None
