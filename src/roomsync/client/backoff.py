"""Reconnect delays: jittered exponential backoff (SPEC §2 close codes: "back off with jitter").

Randomness is injected (a :class:`random.Random`), so tests pick the delays.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """``delay(n)`` lies in ``[cap/2, cap]`` with ``cap = min(max, base * factor**n)`` seconds.

    Half of the delay is fixed and half random ("equal jitter"): clients that lost their
    connection together spread their retries, and none retries at once in a loop.
    """

    base: float = 0.1
    factor: float = 2.0
    max: float = 10.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.max < 0 or self.factor < 1:
            raise ValueError("Backoff needs base >= 0, max >= 0 and factor >= 1")

    def cap(self, attempt: int) -> float:
        """The largest delay for retry number ``attempt`` (0 for the first retry)."""
        if self.base == 0:
            return 0.0
        # Past ~60 doublings every sane cap is reached; avoid float overflow beyond.
        return min(self.max, self.base * self.factor ** min(attempt, 64))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt``."""
        cap = self.cap(attempt)
        return cap / 2 + rng.random() * cap / 2
