"""The handshake's decisions (core.handshake), one test per rule and error."""

from __future__ import annotations

import dataclasses

import pytest

from roomsync.core import messages as m
from roomsync.core.codes import AuthReason, CloseCode, ErrorCode
from roomsync.core.errors import AuthError, Overload, ResyncRequired, RoomClosed, UnsupportedVersion
from roomsync.core.handshake import (
    OPT_IN_CAPS,
    SUPPORTED_DATA_CAPS,
    Admission,
    RoomView,
    TokenGrant,
    admit,
    check_version,
    negotiate,
    welcome,
)

ROOM = RoomView(
    room="r",
    locked=False,
    closed=False,
    failed=False,
    peers=0,
    max_peers=2,
    durable_head=10,
    compacted_through=4,
    anonymous_caps=("read", "write"),
)


def hello(**fields: object) -> m.Hello:
    return m.Hello(v=1, **fields)  # type: ignore[arg-type]


def view(**changes: object) -> RoomView:
    return dataclasses.replace(ROOM, **changes)  # type: ignore[arg-type]


def go(h: m.Hello, room: RoomView = ROOM, grant: TokenGrant | None = None) -> Admission:
    return admit(h, room, grant, fallback_actor="p-1", retry_after_ms=700)


def test_version() -> None:
    check_version(hello())
    with pytest.raises(UnsupportedVersion) as exc:
        check_version(m.Hello(v=2))
    assert exc.value.close == CloseCode.PROTOCOL_ERROR


def test_anonymous_gets_the_policy_caps_and_its_own_actor() -> None:
    a = go(hello(actor="ann"))
    assert (a.caps, a.actor, a.bound, a.exp_ms, a.outcome) == (
        ("read", "write"),
        "ann",
        None,
        None,
        "anonymous",
    )
    assert go(hello()).actor == "p-1"


def test_locked_room_and_disabled_anonymous_access_refuse_without_a_token() -> None:
    with pytest.raises(AuthError) as exc:
        go(hello(), view(locked=True))
    assert exc.value.reason is AuthReason.LOCKED and exc.value.close == CloseCode.FORBIDDEN
    with pytest.raises(AuthError) as exc:
        go(hello(), view(anonymous_caps=()))
    assert exc.value.reason is AuthReason.ANONYMOUS_DISABLED
    # A token opens a locked room.
    grant = TokenGrant(sub="alice", caps=("read",), exp_ms=99)
    assert go(hello(), view(locked=True), grant).caps == ("read",)


def test_token_actor_is_sub_or_sub_suffix() -> None:
    grant = TokenGrant(sub="alice", caps=("*",), exp_ms=5_000)
    assert go(hello(actor="alice#tab"), grant=grant).actor == "alice#tab"
    a = go(hello(actor="mallory"), grant=grant)
    assert (a.actor, a.bound, a.exp_ms, a.outcome) == ("alice", "alice", 5_000, "ok")
    # No caps in the hello: everything granted but the opt-in ``binary``.
    assert set(a.caps) == SUPPORTED_DATA_CAPS - OPT_IN_CAPS
    no_sub = go(hello(actor="x"), grant=TokenGrant(sub=None, caps=("read",), exp_ms=None))
    assert (no_sub.actor, no_sub.bound) == ("x", None)


def test_failed_closed_and_full_rooms() -> None:
    with pytest.raises(Overload) as exc:
        go(hello(), view(failed=True))
    assert exc.value.close == CloseCode.INTERNAL and exc.value.retry_after_ms == 700
    with pytest.raises(RoomClosed) as closed:
        go(hello(), view(closed=True))
    assert closed.value.close == CloseCode.ROOM_CLOSED
    with pytest.raises(Overload, match="full"):
        go(hello(), view(peers=2))


def test_cursor_is_checked_only_for_readers_and_only_with_catchup() -> None:
    assert go(hello(cursor=10)).caps  # at the head: fine
    for cursor in (11, 3):
        with pytest.raises(ResyncRequired) as exc:
            go(hello(cursor=cursor))
        assert exc.value.code == ErrorCode.RESYNC_REQUIRED
    assert go(hello(cursor=99, caps=("write",))).caps == ("write",)  # a writer's cursor
    assert go(hello(cursor=99, catchup=False)).caps  # the client reconciles instead


def test_negotiate_is_the_intersection_in_data_caps_order() -> None:
    assert negotiate(None, ("write", "read"), SUPPORTED_DATA_CAPS) == ("read", "write")
    # ``binary`` only when asked for by name, also under a requested ``*``.
    assert "binary" not in negotiate(None, ("*",), SUPPORTED_DATA_CAPS)
    assert "binary" not in negotiate(("*",), ("*",), SUPPORTED_DATA_CAPS)
    assert "binary" in negotiate(("*", "binary"), ("*",), SUPPORTED_DATA_CAPS)
    assert negotiate(("read", "binary"), ("read", "write"), SUPPORTED_DATA_CAPS) == ("read",)
    assert negotiate(("read", "binary"), ("*",), SUPPORTED_DATA_CAPS) == ("read", "binary")
    assert negotiate(("read", "admin:*"), ("*",), SUPPORTED_DATA_CAPS) == ("read",)
    assert negotiate(("*",), ("read",), {"read"}) == ("read",)


def test_welcome_has_the_fixed_fields() -> None:
    a = go(hello(actor="ann"))
    w = welcome(
        session="s",
        peer="p",
        room="r",
        admission=a,
        head=10,
        root="0" * 64,
        heartbeat_ms=15_000,
        limits={"max_frame_bytes": 1},
        presence=[],
        node="n1",
    )
    assert w == {
        "type": "welcome",
        "v": 1,
        "session": "s",
        "peer": "p",
        "room": "r",
        "caps": ["read", "write"],
        "head": 10,
        "root": "0" * 64,
        "heartbeat_ms": 15_000,
        "limits": {"max_frame_bytes": 1},
        "presence": [],
        "node": "n1",
        "actor": "ann",
    }
