"""Unit tests of roomsync.core.keepalive: when the client pings, when it drops a link."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from roomsync.core.keepalive import (
    MIN_HEARTBEAT_MS,
    MIN_KEEPALIVE_MS,
    SILENT_HEARTBEATS,
    Keepalive,
    KeepaliveAction,
)

NOTHING, PING, DROP = KeepaliveAction.NOTHING, KeepaliveAction.PING, KeepaliveAction.DROP


def test_from_welcome_reads_the_presence_ttl() -> None:
    assert Keepalive.from_welcome(1000, {"presence_ttl_ms": 900}) == Keepalive(1000, 900)
    assert Keepalive.from_welcome(1000, {}) == Keepalive(1000, 0)


def test_a_tiny_heartbeat_is_raised_to_the_minimum() -> None:
    k = Keepalive(1)
    assert k.heartbeat_ms == MIN_HEARTBEAT_MS
    assert k.silence_limit_ms == SILENT_HEARTBEATS * MIN_HEARTBEAT_MS


def test_idle_interval() -> None:
    assert Keepalive(1000).idle_ms(presence_held=True) == 1000  # no TTL announced
    k = Keepalive(1000, presence_ttl_ms=900)
    assert k.idle_ms(presence_held=False) == 1000
    assert k.idle_ms(presence_held=True) == 300  # a third of the TTL
    assert Keepalive(1000, presence_ttl_ms=6000).idle_ms(presence_held=True) == 1000
    assert Keepalive(1000, presence_ttl_ms=30).idle_ms(presence_held=True) == MIN_KEEPALIVE_MS


def test_check() -> None:
    k = Keepalive(1000)
    assert k.check(500, last_recv_ms=0, last_sent_ms=0, presence_held=False) is NOTHING
    assert k.check(1000, last_recv_ms=0, last_sent_ms=0, presence_held=False) is PING
    # Frames are queued: they refresh the link, no ping behind them.
    assert (
        k.check(1000, last_recv_ms=0, last_sent_ms=0, presence_held=False, sending=True) is NOTHING
    )
    # Silent for exactly three heartbeats is still alive; a moment more is dead.
    assert k.check(3000, last_recv_ms=0, last_sent_ms=2900, presence_held=False) is NOTHING
    assert k.check(3001, last_recv_ms=0, last_sent_ms=2900, presence_held=False) is DROP
    assert k.check(3001, last_recv_ms=0, last_sent_ms=0, presence_held=False, sending=True) is DROP


def test_check_pings_sooner_while_a_presence_is_held() -> None:
    k = Keepalive(1000, presence_ttl_ms=600)
    assert k.check(200, last_recv_ms=0, last_sent_ms=0, presence_held=True) is PING
    assert k.check(200, last_recv_ms=0, last_sent_ms=0, presence_held=False) is NOTHING


def test_next_deadline() -> None:
    k = Keepalive(1000)
    # The ping deadline comes first...
    assert k.next_deadline_ms(0, last_recv_ms=0, last_sent_ms=0, presence_held=False) == 1000
    # ...unless the server has been quiet for long.
    assert k.next_deadline_ms(2500, last_recv_ms=0, last_sent_ms=2400, presence_held=False) == 3000
    # A due ping waiting behind queued frames: wake up a little later, not at once.
    assert (
        k.next_deadline_ms(5000, last_recv_ms=4900, last_sent_ms=0, presence_held=False)
        == 5000 + MIN_KEEPALIVE_MS
    )


@given(
    heartbeat=st.integers(1, 60_000),
    ttl=st.integers(0, 120_000),
    held=st.booleans(),
    recv_ago=st.integers(0, 200_000),
    sent_ago=st.integers(0, 200_000),
)
def test_nothing_is_due_before_the_deadline_and_something_right_after(
    heartbeat: int, ttl: int, held: bool, recv_ago: int, sent_ago: int
) -> None:
    k = Keepalive(heartbeat, ttl)
    now = 1_000_000
    times = {"last_recv_ms": now - recv_ago, "last_sent_ms": now - sent_ago, "presence_held": held}
    deadline = k.next_deadline_ms(now, **times)
    assert deadline >= now + MIN_KEEPALIVE_MS
    due = min(times["last_sent_ms"] + k.idle_ms(held), times["last_recv_ms"] + k.silence_limit_ms)
    if due > now:
        assert deadline == max(due, now + MIN_KEEPALIVE_MS)
        for t in (now, (now + due) / 2, due - 0.001):
            if t >= now and t < due:
                assert k.check(t, **times) is NOTHING
    assert k.check(max(deadline, due) + 1, **times) is not NOTHING
