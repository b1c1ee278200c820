"""The ``policy`` family (SPEC §6) against a real server over real sockets: effective
settings by scope, patches that survive restarts, and changes that reach live sessions at
once (rate limits, max peers, presence TTL). Plus the pure parts: merging patches and
naming the field of a refused one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from roomsync.config import ConfigError, Policy
from roomsync.config.policy import merge_patch
from roomsync.control.handlers.policy import _refused
from roomsync.storage.memory import MemoryStore
from roomsync.testing.control import call, ok
from roomsync.testing.server import ServerHandle, running_server, wait_until
from roomsync.testing.wsclient import closed, connect, hello, recv, recv_type

DEFAULTS: dict[str, Any] = msgspec.to_builtins(Policy())


# -- effective settings and patches -----------------------------------------------------------


async def test_global_get_and_set_with_null_removing_an_override(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    got = await ok(http, srv, "policy get", {})
    assert got["scope"] == "global" and got["patch"] == {}
    # The config file's policy (the test server grants anonymous peers every data cap).
    config = msgspec.to_builtins(srv.server.settings.policy)
    assert got["policy"] == config and config["max_peers"] == DEFAULTS["max_peers"]
    changed = await ok(
        http, srv, "policy set", {"patch": {"rate_messages_per_s": 50, "echo_to_sender": True}}
    )
    assert changed["scope"] == "global"
    assert changed["patch"] == {"rate_messages_per_s": 50, "echo_to_sender": True}
    assert changed["policy"] == {**config, "rate_messages_per_s": 50.0, "echo_to_sender": True}
    assert await srv.server.store.get_setting("policy") == changed["patch"]
    removed = await ok(http, srv, "policy set", {"patch": {"echo_to_sender": None}})
    assert removed["patch"] == {"rate_messages_per_s": 50}
    assert removed["policy"]["echo_to_sender"] is config["echo_to_sender"]
    assert await ok(http, srv, "policy get", {}) == removed


async def test_a_room_policy_overrides_the_global_one(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await ok(http, srv, "room create", {"room": "doc"})
    ws, _ = await hello(http, srv.ws_url("doc"))
    await ok(http, srv, "policy set", {"patch": {"max_peers": 50, "echo_to_sender": True}})
    room = await ok(http, srv, "policy set", {"room": "doc", "patch": {"max_peers": 2}})
    assert (room["scope"], room["patch"]) == ("doc", {"max_peers": 2})
    assert room["policy"]["max_peers"] == 2 and room["policy"]["echo_to_sender"] is True
    assert srv.server.rooms.hosts["doc"].policy.max_peers == 2
    assert (await ok(http, srv, "policy get", {}))["policy"]["max_peers"] == 50
    # A global change reaches the room where it has no override of its own.
    await ok(http, srv, "policy set", {"patch": {"max_peers": 60, "broadcast_window_ms": 5}})
    got = await ok(http, srv, "policy get", {"room": "doc"})
    assert (got["policy"]["max_peers"], got["policy"]["broadcast_window_ms"]) == (2, 5)
    assert srv.server.rooms.hosts["doc"].policy.broadcast_window_ms == 5
    # Removing the room's override falls back to the global value.
    back = await ok(http, srv, "policy set", {"room": "doc", "patch": {"max_peers": None}})
    assert back["patch"] == {} and back["policy"]["max_peers"] == 60
    assert srv.server.rooms.hosts["doc"].policy.max_peers == 60
    record = await srv.server.store.get_room("doc")
    assert record is not None and record.policy == {}
    await ws.close()


async def test_policy_get_of_a_room_that_is_not_loaded(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await ok(http, srv, "room create", {"room": "cold"})
    await ok(http, srv, "policy set", {"room": "cold", "patch": {"presence_ttl_ms": 5000}})
    assert "cold" not in srv.server.rooms.hosts
    got = await ok(http, srv, "policy get", {"room": "cold"})
    assert got["policy"]["presence_ttl_ms"] == 5000 and got["patch"] == {"presence_ttl_ms": 5000}
    # It loads with it.
    ws, welcome = await hello(http, srv.ws_url("cold"))
    assert srv.server.rooms.hosts["cold"].policy.presence_ttl_ms == 5000
    assert welcome["limits"]["presence_ttl_ms"] == 5000
    await ws.close()


async def test_patches_survive_a_restart(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path) as first:
        await ok(http, first, "room create", {"room": "doc"})
        await ok(http, first, "policy set", {"patch": {"max_peers": 7}})
        await ok(http, first, "policy set", {"room": "doc", "patch": {"catchup_chunk": 3}})
    async with running_server(tmp_path) as second:
        got = await ok(http, second, "policy get", {})
        assert got["patch"] == {"max_peers": 7} and got["policy"]["max_peers"] == 7
        room = await ok(http, second, "policy get", {"room": "doc"})
        assert (room["policy"]["max_peers"], room["policy"]["catchup_chunk"]) == (7, 3)
        ws, _ = await hello(http, second.ws_url("doc"))
        assert second.server.rooms.hosts["doc"].policy.catchup_chunk == 3
        await ws.close()


async def test_a_stored_key_no_longer_valid_is_left_out_at_start(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    store = MemoryStore()
    await store.open()
    await store.put_setting("policy", {"max_peers": 3, "retired_setting": 1, "max_pack_bytes": 0})
    async with running_server(tmp_path, store=store) as srv:
        got = await ok(http, srv, "policy get", {})
        assert got["patch"] == {"max_peers": 3} and got["policy"]["max_peers"] == 3


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"patch": {"bogus": 1}}, "patch.bogus"),
        ({"patch": {"max_peers": 0}}, "patch.max_peers"),
        ({"patch": {"max_peers": "10"}}, "patch.max_peers"),
        ({"patch": {"echo_to_sender": "yes"}}, "patch.echo_to_sender"),
        ({"patch": {"anonymous_caps": ["read", "admin"]}}, "patch.anonymous_caps"),
        ({"patch": {"broadcast_window_ms": 5000}}, "patch.broadcast_window_ms"),
        ({"room": "doc", "patch": {"rate_grace_ms": -1}}, "patch.rate_grace_ms"),
        ({"patch": [1]}, "patch"),
        ({}, "patch"),
        ({"room": "bad room!", "patch": {}}, "room"),
        ({"patch": {}, "scope": "global"}, "scope"),
    ],
)
async def test_invalid_payloads_name_the_field(
    srv: ServerHandle, http: aiohttp.ClientSession, payload: dict[str, Any], field: str
) -> None:
    await ok(http, srv, "room create", {"room": "doc"})
    status, body = await call(http, srv, "policy set", payload)
    assert status == 422, body
    assert body["reject"]["class"] == "invalid-payload" and body["reject"]["field"] == field
    # Nothing changed.
    assert (await ok(http, srv, "policy get", {}))["patch"] == {}
    assert (await ok(http, srv, "policy get", {"room": "doc"}))["patch"] == {}


async def test_unknown_rooms_and_forbidden(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    for command, payload in (
        ("policy get", {"room": "nope"}),
        ("policy set", {"room": "nope", "patch": {"max_peers": 2}}),
        ("policy set", {"room": "nope", "patch": {"max_peers": 0}}),
    ):
        status, body = await call(http, srv, command, payload)
        assert status == 404, body
        assert (body["reject"]["code"], body["reject"]["field"]) == ("room-unknown", "room")
    assert await srv.server.store.get_room("nope") is None
    status, body = await call(http, srv, "policy set", {"patch": {}}, caps=("policy:get",))
    assert status == 403 and body["reject"]["required"] == "policy:set"
    status, body = await call(http, srv, "policy get", {}, caps=("tick:*",))
    assert status == 403 and body["reject"]["required"] == "policy:get"
    status, body = await call(http, srv, "policy get", {}, caps=("policy:*",))
    assert status == 200


# -- live sessions ----------------------------------------------------------------------------


async def test_a_lowered_rate_limit_throttles_a_connected_peer(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, srv.ws_url("busy"))
    for _ in range(20):  # far below the configured limit
        await ws.send_json({"type": "ping"})
        await recv_type(ws, "pong")
    patch = {"rate_messages_per_s": 1, "rate_burst_messages": 2, "rate_grace_ms": 300}
    await ok(http, srv, "policy set", {"patch": patch})
    # At once: the peer's bucket holds at most the new burst, so a few pings in a row
    # are refused (the session survives), whatever it had saved up before.
    answers = []
    for _ in range(5):
        await ws.send_json({"type": "ping"})
    for _ in range(5):
        msg = await recv(ws)
        answers.append(msg["type"] if msg["type"] == "pong" else msg["code"])
    assert answers.count("pong") <= 3 and "rate-limited" in answers
    # Still flooding past the grace: closed with 4008.
    seen: list[dict[str, Any]] = []

    async def flood() -> None:
        while not ws.closed:
            await ws.send_json({"type": "ping"})
            await asyncio.sleep(0.05)

    flooding = asyncio.ensure_future(flood())
    try:
        seen, code = await closed(ws)
    finally:
        flooding.cancel()
    assert code == 4008 and seen[-1]["code"] == "rate-limited"


async def test_a_room_rate_limit_applies_to_its_new_peers(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await ok(http, srv, "room create", {"room": "slow"})
    await ok(http, srv, "policy set", {"room": "slow", "patch": {"rate_burst_messages": 1}})
    ws, _ = await hello(http, srv.ws_url("slow"))
    for _ in range(3):
        await ws.send_json({"type": "ping"})
    types = [(await recv(ws))["type"] for _ in range(3)]
    assert "error" in types  # the room's burst, not the global one, after the welcome
    await ws.close()


async def test_a_lowered_max_peers_refuses_the_next_join(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await ok(http, srv, "room create", {"room": "small"})
    first, _ = await hello(http, srv.ws_url("small"))
    second, _ = await hello(http, srv.ws_url("small"))
    await ok(http, srv, "policy set", {"room": "small", "patch": {"max_peers": 2}})
    late = await connect(http, srv.ws_url("small"))
    await late.send_json({"type": "hello", "v": 1})
    seen, code = await closed(late)
    assert code == 1011 and seen[-1]["code"] == "overload"
    assert "full" in seen[-1]["message"]
    # The peers already in stay; lifting the override admits again.
    await first.send_json({"type": "ping"})
    assert (await recv_type(first, "pong"))["type"] == "pong"
    await ok(http, srv, "policy set", {"room": "small", "patch": {"max_peers": None}})
    third, _ = await hello(http, srv.ws_url("small"))
    for ws in (first, second, third):
        await ws.close()


async def test_rooms_loaded_after_a_global_change_use_it(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await ok(http, srv, "policy set", {"patch": {"max_peers": 1}})
    first, _ = await hello(http, srv.ws_url("new-room"))
    assert srv.server.rooms.hosts["new-room"].policy.max_peers == 1
    late = await connect(http, srv.ws_url("new-room"))
    await late.send_json({"type": "hello", "v": 1})
    seen, code = await closed(late)
    assert code == 1011 and seen[-1]["code"] == "overload"
    await first.close()


async def test_a_shorter_presence_ttl_expires_present_peers(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await ok(http, srv, "room create", {"room": "lobby"})
    watcher, _ = await hello(http, srv.ws_url("lobby"))
    present, welcome = await hello(http, srv.ws_url("lobby"))
    await present.send_json({"type": "presence", "state": {"cursor": 1}})
    batch = await recv_type(watcher, "presence")
    assert [p["peer"] for p in batch["peers"]] == [welcome["peer"]]
    # The default TTL (30 s) would keep it; the room's new one expires it (the peer
    # sends nothing more: WebSocket pongs do not refresh presence).
    await ok(http, srv, "policy set", {"room": "lobby", "patch": {"presence_ttl_ms": 200}})
    left = await recv_type(watcher, "presence-leave")
    assert left["peer"] == welcome["peer"]
    assert srv.server.rooms.hosts["lobby"].presence.snapshot() == []
    for ws in (watcher, present):
        await ws.close()


async def test_a_lowered_stream_budget_applies_to_present_peers(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, srv.ws_url("budget"))
    await ok(http, srv, "policy set", {"patch": {"stream_budget_bytes": 4096}})
    host = srv.server.rooms.hosts["budget"]
    await wait_until(lambda: all(p.out.budget == 4096 for p in host.peers))
    await ws.close()


# -- pure parts -------------------------------------------------------------------------------


def test_merge_patch_overrides_and_removes() -> None:
    stored: dict[str, object] = {"max_peers": 5, "echo_to_sender": True}
    merged = merge_patch(stored, {"max_peers": 6, "echo_to_sender": None, "catchup_chunk": 3})
    assert merged == {"max_peers": 6, "catchup_chunk": 3}
    assert stored == {"max_peers": 5, "echo_to_sender": True}  # not modified
    assert merge_patch({}, {"missing": None}) == {}
    assert merge_patch({"a": 1}, {}) == {"a": 1}


@pytest.mark.parametrize(
    ("patch", "field", "starts"),
    [
        ({"bogus": 1}, "patch.bogus", "unknown key 'patch.bogus'"),
        ({"max_peers": 0}, "patch.max_peers", "patch.max_peers: Expected `int` >= 1"),
        ({"anonymous_caps": ["read", "x"]}, "patch.anonymous_caps", "patch.anonymous_caps[1]"),
    ],
)
def test_a_refused_patch_names_its_key(patch: dict[str, object], field: str, starts: str) -> None:
    with pytest.raises(ConfigError) as info:
        Policy().patched(patch)
    rejected = _refused(info.value)
    assert rejected.field == field and rejected.message.startswith(starts)
    assert rejected.envelope()["reject"]["class"] == "invalid-payload"
