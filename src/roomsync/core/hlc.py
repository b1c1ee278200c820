"""Hybrid logical clock (SPEC §1): ``ts`` = wall milliseconds, ``counter`` breaks ties.

The clock never reads time itself; callers pass ``now_ms``. It guarantees that every
timestamp it issues is strictly greater than every timestamp it issued or observed
before, even when the wall clock stalls or goes backwards.
"""

from __future__ import annotations

from .postcard import U32_MAX


class HybridClock:
    __slots__ = ("counter", "ts")

    def __init__(self, ts: int = 0, counter: int = 0) -> None:
        self.ts = ts
        self.counter = counter

    def tick(self, now_ms: int) -> tuple[int, int]:
        """The timestamp for a new local write."""
        if now_ms > self.ts:
            self.ts, self.counter = now_ms, 0
        elif self.counter < U32_MAX:
            self.counter += 1
        else:  # counter exhausted within one millisecond: borrow from the future
            self.ts, self.counter = self.ts + 1, 0
        return self.ts, self.counter

    def observe(self, ts: int, counter: int) -> None:
        """Account for a remote write so later local writes order after it."""
        if (ts, counter) > (self.ts, self.counter):
            self.ts, self.counter = ts, counter
