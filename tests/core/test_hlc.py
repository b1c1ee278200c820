from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from roomsync.core.hlc import HybridClock
from roomsync.core.postcard import U32_MAX


def test_tick_follows_wall_clock_and_counts_within_a_millisecond() -> None:
    c = HybridClock()
    assert c.tick(100) == (100, 0)
    assert c.tick(100) == (100, 1)
    assert c.tick(50) == (100, 2)  # wall clock went backwards: still increasing
    assert c.tick(200) == (200, 0)


def test_observe_orders_later_writes_after_remote_ones() -> None:
    c = HybridClock()
    c.observe(5000, 7)
    assert c.tick(10) == (5000, 8)


def test_counter_exhaustion_borrows_a_millisecond() -> None:
    c = HybridClock(100, U32_MAX)
    assert c.tick(100) == (101, 0)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10**6), st.integers(0, 100)), max_size=50))
def test_ticks_strictly_increase(ops: list[tuple[bool, int, int]]) -> None:
    c = HybridClock()
    last = (-1, -1)
    for is_tick, t, counter in ops:
        if is_tick:
            stamp = c.tick(t)
            assert stamp > last
            last = stamp
        else:
            c.observe(t, counter)
            last = max(last, (t, counter))
