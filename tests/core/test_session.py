"""The per-peer state machine table (SPEC §2, STYLE lesson 3)."""

from __future__ import annotations

import pytest

from roomsync.core import messages as m
from roomsync.core.errors import (
    ExpectedHello,
    Forbidden,
    MalformedEnvelope,
    ProtocolError,
    RateLimited,
)
from roomsync.core.ratelimit import RateLimiter
from roomsync.core.session import ALLOWED, Phase, Session


def make(rate: float = 1000, burst: int = 1000, grace: int = 1000) -> Session:
    limiter = RateLimiter(
        messages_per_s=rate,
        burst_messages=burst,
        bytes_per_s=1e9,
        burst_bytes=10**9,
        grace_ms=grace,
        now_ms=0,
    )
    return Session(session="s", peer="p", room="r", limiter=limiter)


def test_first_frame_must_be_hello() -> None:
    s = make()
    with pytest.raises(ExpectedHello) as info:
        s.receive({"type": "pack", "data": ""}, 10, 0)
    assert info.value.close == 1002
    with pytest.raises(ExpectedHello):
        s.receive({"type": "nonsense"}, 10, 0)
    assert isinstance(s.receive({"type": "hello", "v": 1}, 10, 0), m.Hello)


def test_open_session_checks_caps_per_type() -> None:
    s = make()
    s.open(caps=("read",), actor="a", prefixes=("/",), exp_ms=None)
    assert s.phase is Phase.OPEN
    assert isinstance(s.receive({"type": "request", "since": 0}, 10, 0), m.Request)
    with pytest.raises(Forbidden) as info:
        s.receive({"type": "pack", "data": ""}, 10, 0)
    assert info.value.close is None and "write" in info.value.message
    with pytest.raises(Forbidden, match="'reconcile'") as info:
        s.receive({"type": "mst-probe", "data": ""}, 10, 0)
    assert info.value.close is None
    with pytest.raises(ProtocolError, match="already"):
        s.receive({"type": "hello", "v": 1}, 10, 0)


def test_subscribe_replaces_prefixes_only_when_applied() -> None:
    s = make()
    s.open(caps=("read",), actor="a", prefixes=("/",), exp_ms=None)
    msg = s.receive({"type": "subscribe", "paths": ["/a/", "/b"]}, 10, 0)
    assert s.prefixes == ("/",)  # the room may still refuse its answer
    assert isinstance(msg, m.Subscribe)
    assert s.resubscribe(msg.paths) == ("/",)
    assert s.prefixes == ("/a", "/b")
    with pytest.raises(MalformedEnvelope):
        s.resubscribe(("no-slash",))
    assert s.prefixes == ("/a", "/b")


def test_every_open_type_has_a_cap_rule() -> None:
    assert set(ALLOWED[Phase.OPEN]) == {
        "pack",
        "request",
        "subscribe",
        "mst-root",
        "mst-get",
        "mst-probe",
        "presence",
        "blob-upload",
        "request-upload",
        "blob-uploaded",
        "blob-request",
        "ping",
        "pong",
    }
    assert ALLOWED[Phase.CLOSED] == {}


def test_rate_limit_refuses_then_closes() -> None:
    s = make(rate=1, burst=1, grace=100)
    s.receive({"type": "hello", "v": 1}, 10, 0)
    s.open(caps=(), actor="a", prefixes=("/",), exp_ms=None)
    with pytest.raises(RateLimited) as info:
        s.receive({"type": "ping"}, 10, 1)
    assert info.value.close is None
    with pytest.raises(RateLimited) as info:
        s.receive({"type": "ping"}, 10, 60)
    assert info.value.close is None
    with pytest.raises(RateLimited) as info:
        s.receive({"type": "ping"}, 10, 110)
    assert info.value.close == 4008


def test_frames_that_are_not_json_text_get_the_error_of_the_phase() -> None:
    from roomsync.core.codes import CloseCode, ErrorCode

    s = make()
    assert s.undecodable("x").code == ErrorCode.EXPECTED_HELLO
    with pytest.raises(ExpectedHello):
        s.receive_binary(b"\x01\x00", 100)
    s.open(caps=("read", "write"), actor="a", prefixes=("/",), exp_ms=None)
    bad = s.undecodable("unexpected character")
    assert bad.code == ErrorCode.MALFORMED_ENVELOPE and "unexpected character" in bad.message
    assert bad.close == CloseCode.PROTOCOL_ERROR
    # Without the negotiated cap a binary frame is a broken envelope (1002).
    with pytest.raises(MalformedEnvelope, match="'binary' cap") as info:
        s.receive_binary(b"\x01\x00", 100)
    assert info.value.close == CloseCode.PROTOCOL_ERROR


def test_binary_packs_need_the_cap_a_known_tag_and_write() -> None:
    from roomsync.core.codes import CloseCode

    s = make()
    s.open(caps=("read", "write", "binary"), actor="a", prefixes=("/",), exp_ms=None)
    msg = s.receive_binary(b"\x01\x00", 100)
    assert isinstance(msg, m.PackMsg) and msg.data == b"\x00"
    for payload, match in ((b"", "empty binary frame"), (b"\x02\x00\x00\x00", "tag 0x02")):
        with pytest.raises(MalformedEnvelope, match=match) as info:
            s.receive_binary(payload, 100)
        assert info.value.close == CloseCode.PROTOCOL_ERROR
    reader = make()
    reader.open(caps=("read", "binary"), actor="a", prefixes=("/",), exp_ms=None)
    with pytest.raises(Forbidden, match="'write'") as refused:
        reader.receive_binary(b"\x01\x00", 100)
    assert refused.value.close is None  # the session survives


def test_deadlines_come_from_the_session() -> None:
    from roomsync.core.codes import CloseCode, ErrorCode
    from roomsync.core.session import LIVENESS_HEARTBEATS

    limiter = RateLimiter(
        messages_per_s=10, burst_messages=10, bytes_per_s=1e9, burst_bytes=10**9,
        grace_ms=1000, now_ms=1000,
    )  # fmt: skip
    s = Session(
        session="s", peer="p", room="r", limiter=limiter,
        now_ms=1000, hello_timeout_ms=500, heartbeat_ms=100,
    )  # fmt: skip
    assert s.next_deadline() == 1300  # liveness (3 x 100) comes before the hello deadline
    assert s.due(1299) is None
    silent = s.due(1300)
    assert silent is not None and silent.code == ErrorCode.TIMEOUT
    assert silent.close == CloseCode.INTERNAL
    s.seen(1290)
    assert s.next_deadline() == 1500 and s.due(1499) is None
    late = s.due(1500)
    assert late is not None and late.code == ErrorCode.EXPECTED_HELLO
    s.open(caps=("read",), actor="a", prefixes=("/",), exp_ms=1450)
    assert s.next_deadline() == 1450  # the token expires before the liveness limit
    expired = s.due(1450)
    assert expired is not None and expired.close == CloseCode.TOKEN_EXPIRED
    assert expired.message == "auth: token expired"
    s.exp_ms = None
    assert s.next_deadline() == 1290 + LIVENESS_HEARTBEATS * 100
    s.close()
    assert s.next_deadline() is None and s.due(10**9) is None


def test_timer_deadline_leaves_liveness_to_the_heartbeat() -> None:
    limiter = RateLimiter(
        messages_per_s=10, burst_messages=10, bytes_per_s=1e9, burst_bytes=10**9,
        grace_ms=1000, now_ms=0,
    )  # fmt: skip
    s = Session(session="s", peer="p", room="r", limiter=limiter, hello_timeout_ms=500)
    assert s.timer_deadline() == 500
    s.open(caps=("read",), actor="a", prefixes=("/",), exp_ms=None)
    assert s.timer_deadline() is None  # an idle, token-less peer needs no timer
    s.exp_ms = 9_000
    assert s.timer_deadline() == 9_000
