"""roomsync.testing.clock: the fake clock, and the time-driven objects it drives.

The core tests of presence expiry, rate-limit grace and the hybrid logical clock are
written here against :class:`FakeClock`: time passes by ``advance``, exactly, with no
sleep. The server takes the same clock (``now_ms``) for everything it reads the time for.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from roomsync.core.hlc import HybridClock
from roomsync.core.presence import PresenceTable
from roomsync.core.ratelimit import RateLimiter, Verdict
from roomsync.testing.clock import DEFAULT_START_MS, FakeClock

# -- the clock itself ----------------------------------------------------------------------


def test_starts_at_a_realistic_wall_time_and_stands_still() -> None:
    clock = FakeClock()
    assert clock.now_ms() == DEFAULT_START_MS == 1_700_000_000_000
    assert clock.now_ms() == clock.now_ms()
    assert FakeClock(5).now_ms() == 5


def test_advance_moves_forward_exactly() -> None:
    clock = FakeClock(1000)
    assert clock.advance(250) == 1250
    assert clock.advance(0) == 1250
    assert clock.now_ms() == 1250
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    assert clock.now_ms() == 1250


def test_jump_to_may_go_backwards() -> None:
    clock = FakeClock(1000)
    assert clock.jump_to(400) == 400
    assert clock.now_ms() == 400
    with pytest.raises(ValueError):
        clock.jump_to(-1)
    with pytest.raises(ValueError):
        FakeClock(-1)
    assert repr(clock) == "FakeClock(now_ms=400)"


def test_bound_now_ms_is_a_live_callable() -> None:
    clock = FakeClock(0)
    now_ms = clock.now_ms
    clock.advance(7)
    assert now_ms() == 7


# -- the core objects driven by it ---------------------------------------------------------


def test_presence_expires_exactly_one_ttl_after_the_last_update() -> None:
    clock = FakeClock()
    table = PresenceTable(ttl_ms=300, max_bytes=100, max_members=10)
    table.update("p1", "ann", "here", 6, clock.now_ms())
    clock.advance(300)
    assert table.expire(clock.now_ms()) == []  # at the TTL: still there
    clock.advance(1)
    assert table.expire(clock.now_ms()) == ["p1"]
    assert table.take_dirty() == ([], ["p1"])


def test_heartbeats_keep_presence_alive_until_they_stop() -> None:
    clock = FakeClock()
    table = PresenceTable(ttl_ms=300, max_bytes=100, max_members=10)
    table.update("p1", "ann", "here", 6, clock.now_ms())
    table.update("p2", "bob", "here", 6, clock.now_ms())
    for _ in range(8):  # 800 ms, well past the TTL, with a heartbeat every 100 ms
        clock.advance(100)
        table.touch("p1", clock.now_ms())
        table.expire(clock.now_ms())
    assert [e["peer"] for e in table.snapshot()] == ["p1"]  # p2 sent nothing: expired
    clock.advance(301)
    assert table.expire(clock.now_ms()) == ["p1"]


def test_leave_grace_hides_a_flapping_link() -> None:
    clock = FakeClock()
    table = PresenceTable(ttl_ms=10_000, max_bytes=100, max_members=10, leave_grace_ms=50)
    table.update("p1", "ann", "here", 6, clock.now_ms())
    table.disconnect("p1", clock.now_ms())
    clock.advance(49)
    assert table.expire(clock.now_ms()) == []
    clock.advance(1)
    assert table.expire(clock.now_ms()) == ["p1"]


def test_a_flood_is_closed_exactly_one_grace_after_its_first_refusal() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        messages_per_s=100,
        burst_messages=10,
        bytes_per_s=1e9,
        burst_bytes=1 << 30,
        grace_ms=500,
        now_ms=clock.now_ms(),
    )
    assert [limiter.check(1, clock.now_ms()) for _ in range(10)] == [Verdict.ALLOW] * 10
    assert limiter.check(1, clock.now_ms()) is Verdict.REFUSE
    first_refusal = clock.now_ms()
    verdicts: list[Verdict] = []
    while Verdict.CLOSE not in verdicts:
        clock.advance(5)  # 20 messages per 5 ms: ten times the refill rate
        for _ in range(20):
            verdicts.append(limiter.check(1, clock.now_ms()))
            if verdicts[-1] is Verdict.CLOSE:
                break
    assert clock.now_ms() - first_refusal == 500
    assert Verdict.ALLOW in verdicts  # tokens trickle back, but the flood goes on


def test_backing_off_for_the_grace_forgives_a_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        messages_per_s=10,
        burst_messages=2,
        bytes_per_s=1e9,
        burst_bytes=1 << 30,
        grace_ms=500,
        now_ms=clock.now_ms(),
    )
    limiter.check(1, clock.now_ms())
    limiter.check(1, clock.now_ms())
    assert limiter.check(1, clock.now_ms()) is Verdict.REFUSE
    clock.advance(500)
    assert limiter.check(1, clock.now_ms()) is Verdict.ALLOW
    assert limiter.check(1, clock.now_ms()) is Verdict.ALLOW
    assert limiter.check(1, clock.now_ms()) is Verdict.REFUSE  # a new period: no close


def test_hybrid_clock_stays_monotonic_when_the_wall_clock_steps_back() -> None:
    wall = FakeClock()
    hlc = HybridClock()
    first = hlc.tick(wall.now_ms())
    assert first == (wall.now_ms(), 0)
    wall.jump_to(wall.now_ms() - 60_000)  # NTP steps the clock a minute back
    stamps = [hlc.tick(wall.now_ms()) for _ in range(3)]
    assert stamps == [(first[0], 1), (first[0], 2), (first[0], 3)]
    wall.advance(60_001)
    assert hlc.tick(wall.now_ms()) == (first[0] + 1, 0)


# -- the server reads it too ---------------------------------------------------------------


async def test_the_server_reads_the_fake_clock(tmp_path: Path) -> None:
    from roomsync.testing.server import running_server

    clock = FakeClock()
    async with running_server(tmp_path, now_ms=clock.now_ms) as srv:
        assert srv.server.started_ms == DEFAULT_START_MS
        clock.advance(90_000)
        async with aiohttp.ClientSession() as http, http.get(srv.url + "/healthz") as resp:
            health = await resp.json()
        assert health["uptime_ms"] == 90_000
