"""Unit tests of roomsync.core.reconnect: close code -> client action, and the backoff."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomsync.core.codes import CloseCode
from roomsync.core.reconnect import (
    ABNORMAL_CLOSURE,
    ACTION_ON_CLOSE,
    TERMINAL_CLOSE_CODES,
    Backoff,
    CloseAction,
    Decision,
    ReconnectPolicy,
    StopReason,
    close_action,
    retry_delay,
)

RETRY, RESYNC, REFRESH, STOP = (
    CloseAction.RETRY,
    CloseAction.RESYNC,
    CloseAction.REFRESH_TOKEN,
    CloseAction.STOP,
)

#: SPEC §2 "Close codes", client action column, plus 1006 for a dropped connection.
SPEC_TABLE = {
    1000: RETRY,
    1002: STOP,
    1006: RETRY,
    1009: RETRY,
    1011: RETRY,
    1012: RETRY,
    4001: RESYNC,
    4002: REFRESH,
    4003: STOP,
    4004: STOP,
    4008: RETRY,
}


class Draws:
    """A random source that hands out given floats and counts the draws."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.drawn = 0

    def random(self) -> float:
        self.drawn += 1
        return self.values.pop(0) if self.values else 0.5


# -- the table -----------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "action"), sorted(SPEC_TABLE.items()))
def test_every_spec_close_code_has_its_action(code: int, action: CloseAction) -> None:
    assert ACTION_ON_CLOSE[code] is action
    assert close_action(code) is action


def test_the_table_is_exactly_the_spec_codes() -> None:
    assert dict(ACTION_ON_CLOSE) == SPEC_TABLE
    assert {int(c) for c in CloseCode} | {ABNORMAL_CLOSURE} == set(ACTION_ON_CLOSE)
    assert TERMINAL_CLOSE_CODES == {1002, 4003, 4004}
    with pytest.raises(TypeError):
        ACTION_ON_CLOSE[1000] = STOP  # type: ignore[index]


@pytest.mark.parametrize("code", [1001, 1005, 1013, 3000, 4000, 4999])
def test_unlisted_codes_retry(code: int) -> None:
    assert close_action(code) is RETRY


# -- backoff -------------------------------------------------------------------------------


def test_backoff_caps_double_up_to_the_maximum() -> None:
    b = Backoff(base=0.1, factor=2, max=1.0)
    assert [b.cap(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert b.cap(10_000) == 1.0  # no float overflow
    assert Backoff(base=0).cap(3) == 0.0


def test_jittered_spans_the_upper_half_of_the_cap() -> None:
    b = Backoff(base=1.0, factor=2, max=100)
    assert b.jittered(2, 0.0) == 2.0
    assert b.jittered(2, 0.5) == 3.0
    assert b.jittered(2, 0.999999) == pytest.approx(4.0)
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            b.jittered(0, bad)


def test_delay_draws_from_the_rng() -> None:
    b = Backoff(base=1.0, factor=2, max=100)
    assert b.delay(1, Draws(0.25)) == 1.0 + 0.25
    rng = random.Random(5)
    expected = b.jittered(3, random.Random(5).random())
    assert b.delay(3, rng) == expected


@pytest.mark.parametrize(
    "kwargs", [{"base": -1}, {"max": -1}, {"factor": 0.5}], ids=["base", "max", "factor"]
)
def test_backoff_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Backoff needs"):
        Backoff(**kwargs)


def test_retry_delay() -> None:
    b = Backoff(base=1.0, factor=2, max=100)
    assert retry_delay(b, 1, 0.5) == 1.5
    assert retry_delay(b, 1, 0.5, immediate=True) == 0.0
    assert retry_delay(b, 1, 0.5, retry_after_ms=4000) == 4.0  # the hint raises it
    assert retry_delay(b, 1, 0.5, retry_after_ms=100) == 1.5  # and never lowers it
    assert retry_delay(b, 0, 0.0, immediate=True, retry_after_ms=250) == 0.25


@given(
    attempt=st.integers(0, 200),
    u=st.floats(0, 1, exclude_max=True),
    hint=st.none() | st.integers(0, 100_000),
    base=st.floats(0, 5),
    factor=st.floats(1, 4),
    top=st.floats(0, 60),
)
def test_retry_delay_law(
    attempt: int, u: float, hint: int | None, base: float, factor: float, top: float
) -> None:
    """In [cap/2, cap], raised to the hint when there is one; never negative."""
    b = Backoff(base=base, factor=factor, max=top)
    delay = retry_delay(b, attempt, u, retry_after_ms=hint)
    cap = b.cap(attempt)
    floor = 0.0 if hint is None else hint / 1000
    assert delay >= 0
    assert delay >= floor
    assert delay == floor or cap / 2 <= delay <= cap


# -- the policy ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(TERMINAL_CLOSE_CODES))
def test_terminal_codes_stop(code: int) -> None:
    policy = ReconnectPolicy(can_refresh_token=True)
    rng = Draws()
    decision = policy.after_close(code, welcomed=True, rng=rng)
    assert decision == Decision(STOP, StopReason.TERMINAL)
    assert rng.drawn == 0 and policy.failures == 0 and not decision.resync


@pytest.mark.parametrize("code", [1000, 1006, 1009, 1011, 1012, 4008, 1001])
def test_retryable_codes_back_off(code: int) -> None:
    policy = ReconnectPolicy(Backoff(base=1.0, factor=2, max=100))
    rng = Draws(0.0, 0.5, 0.0)
    first = policy.after_close(code, welcomed=True, rng=rng)
    assert first == Decision(RETRY, None, 0.5, 1)
    second = policy.after_close(code, welcomed=False, rng=rng)
    assert second == Decision(RETRY, None, 1.5, 2)
    third = policy.after_close(code, welcomed=False, rng=rng)
    assert third.delay_s == 2.0 and third.attempt == 3 and rng.drawn == 3


def test_a_welcome_starts_the_backoff_over() -> None:
    policy = ReconnectPolicy(Backoff(base=1.0, factor=2, max=100))
    for _ in range(4):
        policy.after_close(1006, welcomed=False, rng=Draws(0.0))
    assert policy.failures == 4
    decision = policy.after_close(1012, welcomed=True, rng=Draws(0.0))
    assert (decision.delay_s, decision.attempt) == (0.5, 1)


def test_4001_reconnects_at_once_then_backs_off() -> None:
    policy = ReconnectPolicy(Backoff(base=1.0, factor=2, max=100))
    rng = Draws(0.0)
    first = policy.after_close(4001, welcomed=True, rng=rng)
    assert first == Decision(RESYNC, None, 0.0, 1) and first.resync
    assert rng.drawn == 0  # nothing drawn for an immediate reconnect
    again = policy.after_close(4001, welcomed=False, rng=rng)
    assert again == Decision(RESYNC, None, 1.0, 2) and rng.drawn == 1


def test_4002_refreshes_the_token_at_once_or_stops_without_a_provider() -> None:
    refresh = ReconnectPolicy(can_refresh_token=True)
    decision = refresh.after_close(4002, welcomed=True, rng=Draws())
    assert decision == Decision(REFRESH, None, 0.0, 1) and not decision.resync
    stuck = ReconnectPolicy(can_refresh_token=False)
    assert stuck.after_close(4002, welcomed=True, rng=Draws()) == Decision(
        REFRESH, StopReason.NO_TOKEN_PROVIDER
    )


def test_reconnect_off_stops_after_any_close() -> None:
    policy = ReconnectPolicy(reconnect=False, can_refresh_token=True)
    for code in (1006, 1011, 4001, 4002):
        decision = policy.after_close(code, welcomed=False, rng=Draws())
        assert decision.stop is StopReason.RECONNECT_OFF and decision.delay_s == 0
        assert not decision.resync
    # The close code's own verdict comes first.
    assert policy.after_close(4003, welcomed=False, rng=Draws()).stop is StopReason.TERMINAL


def test_only_an_overload_error_hint_bounds_the_delay() -> None:
    policy = ReconnectPolicy(Backoff(base=0.01, factor=2, max=0.05))
    overload = policy.after_close(
        1011, welcomed=False, rng=Draws(0.0), error_code="overload", retry_after_ms=800
    )
    assert (overload.delay_s, overload.retry_after_ms) == (0.8, 800)
    other = policy.after_close(
        1011, welcomed=False, rng=Draws(0.0), error_code="internal", retry_after_ms=800
    )
    assert other.retry_after_ms is None and other.delay_s < 0.8
    resync = policy.after_close(
        4001, welcomed=True, rng=Draws(), error_code="overload", retry_after_ms=300
    )
    assert resync.delay_s == 0.3  # even an immediate reconnect waits for the hint


@given(
    closes=st.lists(
        st.tuples(st.sampled_from([*sorted(SPEC_TABLE), 1001, 4999]), st.booleans()),
        max_size=30,
    ),
    seed=st.integers(0, 2**32),
)
def test_policy_law(closes: list[tuple[int, bool]], seed: int) -> None:
    """Stops exactly on the terminal codes; else waits within the backoff, counting up."""
    backoff = Backoff(base=0.1, factor=2, max=2.0)
    policy = ReconnectPolicy(backoff, can_refresh_token=True)
    rng = random.Random(seed)
    for code, welcomed in closes:
        before = 0 if welcomed else policy.failures
        decision = policy.after_close(code, welcomed=welcomed, rng=rng)
        assert decision.action is close_action(code)
        if code in TERMINAL_CLOSE_CODES:
            assert decision.stop is StopReason.TERMINAL
            continue
        assert decision.stop is None and decision.attempt == before + 1 == policy.failures
        assert 0 <= decision.delay_s <= backoff.cap(before)
