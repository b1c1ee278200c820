from __future__ import annotations

from roomsync.core.ratelimit import RateLimiter, TokenBucket, Verdict


def test_bucket_refills_at_rate_up_to_burst() -> None:
    b = TokenBucket(10, 5, now_ms=0)
    assert all(b.take(1, 0) for _ in range(5))
    assert not b.take(1, 0)
    assert b.take(1, 100)  # 10/s -> one token per 100 ms
    b.refill(10_000)
    assert b.tokens == 5


def limiter(grace: int = 500) -> RateLimiter:
    return RateLimiter(
        messages_per_s=10,
        burst_messages=2,
        bytes_per_s=1000,
        burst_bytes=100,
        grace_ms=grace,
        now_ms=0,
    )


def test_refuse_then_close_after_grace_of_flooding() -> None:
    r = limiter()
    assert r.check(1, 0) is Verdict.ALLOW
    assert r.check(1, 0) is Verdict.ALLOW
    assert r.check(1, 0) is Verdict.REFUSE
    # Flooding: a token trickles back now and then, but refusals keep coming.
    t = 0
    verdicts = []
    while t < 600:
        t += 10
        verdicts.append(r.check(1, t))
    assert Verdict.ALLOW in verdicts
    assert verdicts[-1] is Verdict.CLOSE


def test_backing_off_clears_the_limited_period() -> None:
    r = limiter()
    r.check(1, 0)
    r.check(1, 0)
    assert r.check(1, 0) is Verdict.REFUSE
    assert r.check(1, 600) is Verdict.ALLOW  # quiet for longer than the grace
    r.check(1, 600)
    assert r.check(1, 601) is Verdict.REFUSE  # a new period starts: no close yet


def test_bytes_bucket() -> None:
    r = limiter()
    assert r.check(100, 0) is Verdict.ALLOW
    assert r.check(50, 0) is Verdict.REFUSE
    # A frame bigger than the burst passes when the bucket is full rather than never.
    assert r.check(10_000, 1000) is Verdict.ALLOW


def test_from_policy_takes_the_policy_rates() -> None:
    from roomsync.config import Policy

    policy = Policy(rate_burst_messages=2, rate_messages_per_s=1.0, rate_grace_ms=50)
    limiter = RateLimiter.from_policy(policy, now_ms=0)
    assert (limiter.messages.burst, limiter.grace_ms) == (2.0, 50)
    assert limiter.bytes.burst == float(policy.rate_burst_bytes)
