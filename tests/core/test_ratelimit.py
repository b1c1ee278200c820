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


def test_reconfigure_keeps_the_level_capped_at_the_new_burst() -> None:
    from roomsync.config import Policy

    r = limiter()  # 10 msg/s, burst 2; 1000 B/s, burst 100
    assert r.check(40, 0) is Verdict.ALLOW
    lowered = Policy(
        rate_messages_per_s=1.0,
        rate_burst_messages=1,
        rate_bytes_per_s=10.0,
        rate_burst_bytes=50,
        rate_grace_ms=100,
    )
    r.reconfigure(lowered, now_ms=0)
    assert (r.messages.tokens, r.messages.burst, r.grace_ms) == (1.0, 1.0, 100)
    assert (r.bytes.tokens, r.bytes.burst) == (50.0, 50.0)  # 60 saved, capped at 50
    assert r.check(1, 0) is Verdict.ALLOW
    assert r.check(1, 500) is Verdict.REFUSE  # refills at the new rate: 1/s
    assert r.check(1, 1000) is Verdict.ALLOW
    raised = Policy(rate_messages_per_s=1000.0, rate_burst_messages=100)
    r.reconfigure(raised, now_ms=1000)
    assert r.messages.tokens == 0.0  # a raised burst is not a gift: it fills at the rate
    assert r.check(1, 1001) is Verdict.ALLOW


def test_reconfigure_refills_at_the_old_rate_until_the_change() -> None:
    from roomsync.config import Policy

    b = TokenBucket(10, 5, now_ms=0)
    assert all(b.take(1, 0) for _ in range(5))
    b.reconfigure(1000, 5, 200)  # 200 ms at 10/s earned 2 tokens before the change
    assert b.tokens == 2.0 and b.last_ms == 200
    r = limiter(grace=500)
    r.check(1, 0)
    r.check(1, 0)
    assert r.check(1, 0) is Verdict.REFUSE
    slow = Policy(rate_messages_per_s=0.001, rate_burst_messages=1, rate_grace_ms=50)
    r.reconfigure(slow, now_ms=10)
    assert r.check(1, 30) is Verdict.REFUSE
    assert r.check(1, 50) is Verdict.CLOSE  # the limited period goes on, by the new grace
