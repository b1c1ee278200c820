"""A clock that moves only when a test says so (STYLE lesson 7, after trio's MockClock).

The core never reads the time: every time-driven object takes ``now_ms`` as an argument
(:class:`~roomsync.core.presence.PresenceTable`, :class:`~roomsync.core.ratelimit.RateLimiter`,
:class:`~roomsync.core.hlc.HybridClock`), and the server takes a ``now_ms`` callable
(``RoomsyncServer(settings, now_ms=...)``, ``running_server(..., now_ms=...)``). Give them
a :class:`FakeClock` and a test of "expires after the TTL" or "closed after the grace"
runs instantly and exactly::

    clock = FakeClock()
    table.update("p1", "ann", {"x": 1}, 8, clock.now_ms())
    clock.advance(ttl_ms + 1)
    assert table.expire(clock.now_ms()) == ["p1"]

It is a wall clock in milliseconds (what ``now_ms`` means everywhere in roomsync), so it
starts at a realistic epoch time, not at 0. It does not drive timers: a shell that sleeps
until a deadline still sleeps in real time, only the times it reads are fake.
"""

from __future__ import annotations

__all__ = ["DEFAULT_START_MS", "FakeClock"]

#: 2023-11-14T22:13:20Z: a realistic wall time, so timestamps look like real ones.
DEFAULT_START_MS = 1_700_000_000_000


class FakeClock:
    """Wall milliseconds that change only through :meth:`advance` and :meth:`jump_to`."""

    __slots__ = ("_now_ms",)

    def __init__(self, start_ms: int = DEFAULT_START_MS) -> None:
        if start_ms < 0:
            raise ValueError(f"start_ms must be >= 0, got {start_ms}")
        self._now_ms = start_ms

    def now_ms(self) -> int:
        """The current fake time; pass the bound method wherever a ``now_ms`` callable goes."""
        return self._now_ms

    def advance(self, ms: int) -> int:
        """Let ``ms`` milliseconds pass (``ms >= 0``); return the new time."""
        if ms < 0:
            raise ValueError(f"time only moves forward: advance({ms}); use jump_to()")
        self._now_ms += ms
        return self._now_ms

    def jump_to(self, now_ms: int) -> int:
        """Set the time, backwards included: a wall clock stepped by NTP, for the code that
        must survive it (the hybrid logical clock). Return the new time."""
        if now_ms < 0:
            raise ValueError(f"now_ms must be >= 0, got {now_ms}")
        self._now_ms = now_ms
        return self._now_ms

    def __repr__(self) -> str:
        return f"FakeClock(now_ms={self._now_ms})"
