"""Per-connection token buckets on messages/s and bytes/s (SPEC §2 close 4008, §6 policy).

Pure: driven by ``now_ms``. A message that finds either bucket empty is refused
(``rate-limited``). Refusals open a limited period that ends only after ``grace_ms``
without any refusal; a refusal that comes ``grace_ms`` or more after the period began
gets CLOSE and the shell closes with 4008. So a client that backs off after its first
refusals is fine, and one that keeps flooding (even if a few messages get through as
tokens trickle back) is closed after the grace.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol


class Verdict(Enum):
    ALLOW = "allow"
    REFUSE = "refuse"
    CLOSE = "close"


class TokenBucket:
    __slots__ = ("burst", "last_ms", "rate_per_ms", "tokens")

    def __init__(self, rate_per_s: float, burst: float, now_ms: int) -> None:
        self.rate_per_ms = rate_per_s / 1000.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last_ms = now_ms

    def refill(self, now_ms: int) -> None:
        if now_ms > self.last_ms:
            self.tokens = min(self.burst, self.tokens + (now_ms - self.last_ms) * self.rate_per_ms)
            self.last_ms = now_ms

    def take(self, amount: float, now_ms: int) -> bool:
        self.refill(now_ms)
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def reconfigure(self, rate_per_s: float, burst: float, now_ms: int) -> None:
        """New rate and capacity from ``now_ms`` on: the tokens earned so far at the old
        rate are kept, up to the new capacity (a lowered burst applies at once, a raised
        one fills at the new rate)."""
        self.refill(now_ms)
        self.rate_per_ms = rate_per_s / 1000.0
        self.burst = float(burst)
        self.tokens = min(self.tokens, self.burst)


class RatePolicy(Protocol):
    """The rate settings of a policy (``roomsync.config.Policy`` is one)."""

    rate_messages_per_s: float
    rate_burst_messages: int
    rate_bytes_per_s: float
    rate_burst_bytes: int
    rate_grace_ms: int


class RateLimiter:
    """Messages and bytes buckets plus the grace timer that turns refusals into a close."""

    __slots__ = ("bytes", "grace_ms", "last_refused_ms", "limited_since_ms", "messages")

    def __init__(
        self,
        *,
        messages_per_s: float,
        burst_messages: int,
        bytes_per_s: float,
        burst_bytes: int,
        grace_ms: int,
        now_ms: int,
    ) -> None:
        self.messages = TokenBucket(messages_per_s, burst_messages, now_ms)
        # A single frame may be larger than the burst; let it through when the bucket is full.
        self.bytes = TokenBucket(bytes_per_s, burst_bytes, now_ms)
        self.grace_ms = grace_ms
        self.limited_since_ms: int | None = None
        self.last_refused_ms: int | None = None

    @classmethod
    def from_policy(cls, policy: RatePolicy, *, now_ms: int) -> RateLimiter:
        """A session's limiter with the policy's rates, bursts and grace."""
        return cls(
            messages_per_s=policy.rate_messages_per_s,
            burst_messages=policy.rate_burst_messages,
            bytes_per_s=policy.rate_bytes_per_s,
            burst_bytes=policy.rate_burst_bytes,
            grace_ms=policy.rate_grace_ms,
            now_ms=now_ms,
        )

    def reconfigure(self, policy: RatePolicy, *, now_ms: int) -> None:
        """Apply a changed policy (``policy set``) to a live session: both buckets keep
        their current level, capped at the new bursts, and refill at the new rates; a
        limited period in progress goes on, judged by the new grace."""
        self.messages.reconfigure(policy.rate_messages_per_s, policy.rate_burst_messages, now_ms)
        self.bytes.reconfigure(policy.rate_bytes_per_s, policy.rate_burst_bytes, now_ms)
        self.grace_ms = policy.rate_grace_ms

    def check(self, nbytes: int, now_ms: int) -> Verdict:
        self.messages.refill(now_ms)
        self.bytes.refill(now_ms)
        cost = min(float(nbytes), self.bytes.burst)
        if self.messages.tokens >= 1.0 and self.bytes.tokens >= cost:
            self.messages.tokens -= 1.0
            self.bytes.tokens -= cost
            if self.last_refused_ms is not None and now_ms - self.last_refused_ms >= self.grace_ms:
                self.limited_since_ms = self.last_refused_ms = None
            return Verdict.ALLOW
        if self.limited_since_ms is None or (
            self.last_refused_ms is not None and now_ms - self.last_refused_ms >= self.grace_ms
        ):
            self.limited_since_ms = now_ms
        self.last_refused_ms = now_ms
        if now_ms - self.limited_since_ms >= self.grace_ms:
            return Verdict.CLOSE
        return Verdict.REFUSE
