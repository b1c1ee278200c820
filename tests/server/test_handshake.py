"""Handshake, auth outcomes and close codes over real sockets (SPEC §2, §3)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.storage.base import RoomRecord
from roomsync.testing.server import ServerHandle, running_server
from roomsync.testing.wsclient import closed, connect, hello, recv


async def test_welcome_fields(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    ws, welcome = await hello(http, srv.ws_url("room-1"), actor="alice")
    for field in (
        "v",
        "session",
        "peer",
        "room",
        "caps",
        "head",
        "root",
        "heartbeat_ms",
        "limits",
        "presence",
    ):
        assert field in welcome
    assert welcome["room"] == "room-1"
    assert welcome["v"] == 1
    assert welcome["head"] == 0
    assert welcome["root"] == "0" * 64
    assert welcome["actor"] == "alice"
    assert welcome["limits"]["max_frame_bytes"] == srv.server.settings.server.max_frame_bytes
    assert welcome["session"] != welcome["peer"]
    await ws.close()


async def test_caps_are_requested_and_granted_and_supported(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, dev=False) as srv:
        token = srv.mint("room-1", ["read", "write", "presence"])
        ws, welcome = await hello(
            http, srv.ws_url("room-1"), token=token, caps=["write", "blob", "reconcile", "teleport"]
        )
        assert welcome["caps"] == ["write"]
        await ws.close()
        ws, welcome = await hello(http, srv.ws_url("room-1"), token=token)
        assert welcome["caps"] == ["read", "write", "presence"]
        await ws.close()


async def test_token_actor_wins_over_hello_actor(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, dev=False) as srv:
        token = srv.mint("r", ["read"], actor="carol")
        ws, welcome = await hello(http, srv.ws_url("r"), token=token, actor="mallory")
        assert welcome["actor"] == "carol"
        await ws.close()


@pytest.mark.parametrize(
    ("make_token", "message", "code"),
    [
        (
            lambda s: s.mint("room-1", ["read"], ttl_s=1, now_s=int(time.time()) - 100),
            "auth: token expired",
            4002,
        ),
        (
            lambda s: jwt.encode(
                {"room": "room-1", "caps": ["read"]},
                "wrong-secret-wrong-secret-0123456789",
                algorithm="HS256",
                headers={"kid": "test-k1"},
            ),
            "auth: bad signature",
            4003,
        ),
        (
            lambda s: jwt.encode(
                {"room": "room-1", "caps": ["read"]},
                "x" * 32,
                algorithm="HS256",
                headers={"kid": "nope"},
            ),
            "auth: unknown kid 'nope'",
            4003,
        ),
        (lambda s: s.mint("other-room", ["read"]), "auth: token not valid for room 'room-1'", 4003),
        (lambda s: "not-a-token", "auth: malformed token", 4003),
    ],
    ids=["token-expired", "bad-signature", "unknown-kid", "not-valid-for-room", "malformed"],
)
async def test_auth_failures(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    make_token: object,
    message: str,
    code: int,
    request: pytest.FixtureRequest,
) -> None:
    async with running_server(tmp_path, dev=False) as srv:
        ws = await connect(http, srv.ws_url("room-1"))
        await ws.send_json({"type": "hello", "v": 1, "token": make_token(srv)})  # type: ignore[operator]
        seen, close_code = await closed(ws)
        assert close_code == code
        assert seen[0]["type"] == "error" and seen[0]["code"] == "auth"
        assert seen[0]["message"].startswith(message)
        # The failed check as data, the reason the id of this case names.
        assert seen[0]["reason"] == request.node.callspec.id
        metrics = await (await http.get(srv.url + "/metrics")).text()
        assert "roomsync_auth_total{outcome=" in metrics


async def test_anonymous_refused_by_default(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, dev=False) as srv:
        ws = await connect(http, srv.ws_url("room-1"))
        await ws.send_json({"type": "hello", "v": 1})
        seen, code = await closed(ws)
        assert code == 4003
        assert seen[0]["message"] == "auth: anonymous access is disabled: send a token"


async def test_prefix_room_pattern(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, dev=False) as srv:
        token = srv.mint("team-*", ["read"])
        ws, welcome = await hello(http, srv.ws_url("team-7"), token=token)
        assert welcome["room"] == "team-7"
        await ws.close()


async def test_locked_room_needs_token(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    await srv.server.store.put_room(RoomRecord("vault", created_ms=0, locked=True))
    ws = await connect(http, srv.ws_url("vault"))
    await ws.send_json({"type": "hello", "v": 1})
    seen, code = await closed(ws)
    assert code == 4003
    assert "locked" in seen[0]["message"]
    ws, welcome = await hello(http, srv.ws_url("vault"), token=srv.mint("vault", ["read"]))
    assert welcome["caps"] == ["read"]
    await ws.close()


async def test_expiry_mid_session_closes_4002_at_exp(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, dev=False) as srv:
        now = time.time()
        exp = int(now) + 2
        token = srv.mint("room-1", ["read"], ttl_s=exp - int(now), now_s=int(now))
        ws, _ = await hello(http, srv.ws_url("room-1"), token=token)
        seen, code = await closed(ws, timeout=10)
        closed_at = time.time()
        assert code == 4002
        assert seen[-1] == {
            "type": "error",
            "code": "auth",
            "message": "auth: token expired",
            "reason": "token-expired",
        }
        assert exp - 0.05 <= closed_at <= exp + 1.5


async def test_missing_hello_is_1002(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, srv.ws_url("room-1"))
    await ws.send_json({"type": "pack", "data": ""})
    seen, code = await closed(ws)
    assert code == 1002
    assert seen[0]["code"] == "expected-hello"


async def test_non_json_first_frame_is_expected_hello(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws = await connect(http, srv.ws_url("room-1"))
    await ws.send_str("hello?")
    seen, code = await closed(ws)
    assert (seen[0]["code"], code) == ("expected-hello", 1002)


async def test_bad_room_id(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, srv.ws_url("bad room!"))
    seen, code = await closed(ws)
    assert code == 1002
    assert seen[0]["code"] == "invalid-room"


async def test_unsupported_version(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    ws = await connect(http, srv.ws_url("room-1"))
    await ws.send_json({"type": "hello", "v": 99})
    seen, code = await closed(ws)
    assert (seen[0]["code"], code) == ("unsupported-version", 1002)


async def test_unknown_type_survives_and_malformed_envelope_closes(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, srv.ws_url("room-1"))
    await ws.send_json({"type": "teleport"})
    err = await recv(ws)
    assert err["code"] == "unknown-type"
    await ws.send_json({"type": "ping"})
    assert (await recv(ws))["type"] == "pong"
    await ws.send_json({"type": "request", "since": "yesterday"})
    seen, code = await closed(ws)
    assert seen[0]["code"] == "malformed-envelope"
    assert "request.since" in seen[0]["message"]
    assert code == 1002


async def test_malformed_pack_keeps_session_and_state(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _welcome = await hello(http, srv.ws_url("room-1"))

    async def two() -> dict[str, dict[str, object]]:
        return {m["type"]: m for m in [await recv(ws), await recv(ws)]}

    await ws.send_json({"type": "pack", "data": "***"})
    got = await two()
    assert (got["error"]["code"], got["error"]["message"]) == (
        "malformed-pack",
        "bad base64 in data",
    )
    # The pack still gets its ack, refused as a whole, in order with the others.
    assert got["ack"]["seqs"] == [] and got["ack"]["refused"][0]["code"] == "malformed-pack"
    await ws.send_json({"type": "pack", "data": "AQID"})
    got = await two()
    assert got["error"]["code"] == "malformed-pack"
    assert str(got["error"]["message"]).startswith("bad postcard: ")
    await ws.send_json({"type": "pack", "data": pack_data([Change("/ok", 1, 0, "a", b"v")])})
    ack = await recv(ws)
    assert ack == {"type": "ack", "seqs": [1]}
    await ws.close()


async def test_oversized_frame_is_1009(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, server__max_frame_bytes=4096) as srv:
        ws, _ = await hello(http, srv.ws_url("room-1"))
        await ws.send_str('{"type":"ping","pad":"' + "x" * 10_000 + '"}')
        seen, code = await closed(ws)
        assert code == 1009, seen
        assert seen[-1]["code"] == "too-large"


async def test_rate_limit_refuses_then_closes_4008(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(
        tmp_path,
        policy__rate_messages_per_s=5,
        policy__rate_burst_messages=5,
        policy__rate_grace_ms=200,
    ) as srv:
        ws, _ = await hello(http, srv.ws_url("room-1"))
        errors: list[dict[str, object]] = []
        code = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and code is None:
            try:
                await ws.send_json({"type": "ping"})
            except ConnectionResetError:
                break
            try:
                msg = await asyncio.wait_for(ws.receive(), 0.01)
            except TimeoutError:
                continue
            if msg.type is aiohttp.WSMsgType.TEXT and msg.json()["type"] == "error":
                errors.append(msg.json())
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            ):
                code = ws.close_code
        if code is None:
            _, code = await closed(ws)
        assert code == 4008
        assert errors and all(e["code"] == "rate-limited" for e in errors)
        metrics = await (await http.get(srv.url + "/metrics")).text()
        assert "roomsync_rate_limited_total " in metrics
        assert 'roomsync_closes_total{code="4008"} 1.0' in metrics


async def test_rate_limited_pack_is_refused_explicitly(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(
        tmp_path,
        policy__rate_messages_per_s=1,
        policy__rate_burst_messages=2,
        policy__rate_grace_ms=60_000,
    ) as srv:
        ws, _ = await hello(http, srv.ws_url("room-1"))  # hello took one token
        data = pack_data([Change("/a", 1, 0, "a", b"1")])
        await ws.send_json({"type": "pack", "data": data})
        assert (await recv(ws))["seqs"] == [1]
        await ws.send_json({"type": "pack", "data": data})
        replies = {m["type"]: m for m in [await recv(ws), await recv(ws)]}
        assert replies["ack"]["seqs"] == []
        assert replies["ack"]["refused"][0]["code"] == "rate-limited"
        assert replies["error"]["code"] == "rate-limited"
        await ws.close()


async def test_connection_cap_is_overload_1011(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, server__max_connections=2) as srv:
        held = [await connect(http, srv.ws_url("r")) for _ in range(2)]
        for ws in held:
            await ws.send_json({"type": "hello", "v": 1})
            assert (await recv(ws))["type"] == "welcome"
        extra = await connect(http, srv.ws_url("r"))
        seen, code = await closed(extra)
        assert code == 1011
        assert seen[0]["code"] == "overload"
        assert 500 <= seen[0]["retry_after_ms"] <= 1500
        for ws in held:
            await ws.close()


async def test_silent_peer_is_reaped(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, server__heartbeat_ms=100) as srv:
        # autoping off: the client never answers pings, so the server hears nothing.
        ws = await http.ws_connect(srv.ws_url("r"), autoping=False)
        await ws.send_json({"type": "hello", "v": 1})
        started = time.monotonic()
        code = None
        pings = 0
        while code is None:
            msg = await asyncio.wait_for(ws.receive(), 5)
            if msg.type is aiohttp.WSMsgType.PING:
                pings += 1
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                code = ws.close_code
        assert pings >= 2
        assert code == 1011
        assert time.monotonic() - started >= 0.3
        assert not srv.server.connections or all(c.close_code for c in srv.server.connections)


async def test_server_ping_is_answered(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    ws = await http.ws_connect(srv.ws_url("r"), autoping=False)
    await ws.send_json({"type": "hello", "v": 1, "catchup": False})
    assert (await recv(ws))["type"] == "welcome"
    await ws.ping(b"beat")  # a WebSocket-level ping gets a WebSocket pong with its payload
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type is aiohttp.WSMsgType.PONG and msg.data == b"beat"
    await ws.send_json({"type": "ping"})  # the application-level one gets a pong envelope
    assert (await recv(ws)) == {"type": "pong"}
    await ws.close()
