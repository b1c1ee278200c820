"""``POST /v1/control/{family}/{command}`` against a real server (SPEC §6): every command
that exists so far, and each reject class on its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roomsync.control import REGISTRY
from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.testing.server import ServerHandle, running_server
from roomsync.testing.wsclient import closed, connect, hello, recv_type


async def call(
    http: aiohttp.ClientSession,
    srv: ServerHandle,
    family: str,
    command: str,
    payload: Any = None,
    *,
    token: str | None = "operator",
) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    if token == "operator":
        token = srv.mint("*", ("*",), actor="ops")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(
        f"{srv.url}/v1/control/{family}/{command}", json=payload or {}, headers=headers
    ) as resp:
        return resp.status, await resp.json(), resp


async def test_unauthenticated_forbidden_and_unknown(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await call(http, srv, "room", "get", {"room": "r"}, token=None)
    assert status == 401 and body["reject"]["class"] == "unauthenticated"
    assert body["reject"]["next"] == "obtain or refresh an operator token"
    status, body, _ = await call(http, srv, "room", "get", {"room": "r"}, token="x.y.z")
    assert status == 401
    narrow = srv.mint("*", ("room:get",), actor="ops")
    status, body, _ = await call(http, srv, "room", "lock", {"room": "r"}, token=narrow)
    assert status == 403 and body["reject"]["required"] == "room:lock"
    family_wide = srv.mint("*", ("room:*",), actor="ops")
    status, body, _ = await call(http, srv, "topology", "get", token=family_wide)
    assert status == 403 and body["reject"]["required"] == "topology:get"
    status, body, _ = await call(http, srv, "room", "teleport", {})
    assert status == 404 and body["reject"]["code"] == "command-unknown"


@pytest.mark.parametrize(
    ("family", "command", "payload", "field"),
    [
        ("room", "get", {"room": "bad room!"}, "room"),
        ("room", "get", {}, "room"),
        ("room", "list", {"limit": 0}, "limit"),
        ("room", "lock", {"room": "r", "extra": 1}, "extra"),
        ("room", "revoke", {"sub": "a", "jti": "b"}, "jti"),
        ("topology", "drain", {"node": ""}, "node"),
    ],
)
async def test_invalid_payloads_name_the_field(
    srv: ServerHandle,
    http: aiohttp.ClientSession,
    family: str,
    command: str,
    payload: dict[str, Any],
    field: str,
) -> None:
    status, body, _ = await call(http, srv, family, command, payload)
    assert status == 422, body
    assert body["reject"]["class"] == "invalid-payload" and body["reject"]["field"] == field


async def test_room_commands_end_to_end(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(http, srv, "room", "get", {"room": "doc"})
    assert status == 404 and body["reject"]["code"] == "room-unknown"
    status, body, _ = await call(http, srv, "room", "create", {"room": "doc"})
    assert (status, body["result"]) == (
        200,
        {"room": "doc", "created": True, "locked": False, "policy": {}},
    )
    status, body, _ = await call(http, srv, "room", "create", {"room": "doc"})
    assert status == 409 and body["reject"]["class"] == "conflict"
    ws, _ = await hello(http, srv.ws_url("doc"))
    await ws.send_json({"type": "pack", "data": pack_data([Change("/a", 1, 0, "x", b"1")])})
    await recv_type(ws, "ack")
    status, body, _ = await call(http, srv, "room", "get", {"room": "doc"})
    got = body["result"]
    assert (got["head"], got["count"], got["peers"], got["locked"]) == (1, 1, 1, False)
    assert got["root"] == srv.server.rooms.hosts["doc"].state.root
    assert got["lineage"] == {"archives": []}
    status, body, _ = await call(http, srv, "room", "list", {"limit": 10})
    assert [r["room"] for r in body["result"]["rooms"]] == ["doc"]
    assert body["result"]["cursor"] is None
    status, body, _ = await call(http, srv, "room", "lock", {"room": "doc"})
    assert body["result"]["locked"] is True
    late = await connect(http, srv.ws_url("doc"))
    await late.send_json({"type": "hello", "v": 1})
    _, code = await closed(late)
    assert code == 4003
    await call(http, srv, "room", "unlock", {"room": "doc"})
    status, body, _ = await call(http, srv, "room", "close", {"room": "doc"})
    assert body["result"]["closed"] is True
    _, code = await closed(ws)
    assert code == 4004
    status, body, _ = await call(http, srv, "room", "create", {"room": "doc", "locked": True})
    assert body["result"] == {"room": "doc", "created": False, "locked": True, "policy": {}}


async def test_room_create_with_a_policy(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    payload = {"room": "small", "policy": {"max_peers": 2, "echo_to_sender": True}}
    status, body, _ = await call(http, srv, "room", "create", payload)
    assert status == 200 and body["result"]["policy"] == payload["policy"]
    status, body, _ = await call(http, srv, "policy", "get", {"room": "small"})
    assert body["result"]["policy"]["max_peers"] == 2
    assert body["result"]["patch"] == payload["policy"]
    bad = {"room": "other", "policy": {"max_peers": 0}}
    status, body, _ = await call(http, srv, "room", "create", bad)
    assert status == 422 and body["reject"]["field"] == "policy.max_peers", body
    status, body, _ = await call(http, srv, "room", "get", {"room": "other"})
    assert status == 404  # nothing was stored


async def test_revoke_closes_the_session_and_refuses_the_token(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, dev=False) as srv:
        mallory = srv.mint("r", ("read",), actor="mallory")
        ws, _ = await hello(http, srv.ws_url("r"), token=mallory)
        status, body, _ = await call(http, srv, "room", "revoke", {"sub": "mallory"})
        assert (status, body["result"]) == (200, {"revoked": True, "closed": 1})
        _, code = await closed(ws)
        assert code == 4003
        status, body, _ = await call(http, srv, "room", "revoke", {})
        assert status == 422 and body["reject"]["code"] == "sub-or-jti"


async def test_topology_get_and_drain(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    ws, _ = await hello(http, srv.ws_url("r"))
    status, body, _ = await call(http, srv, "topology", "get")
    (node,) = body["result"]["nodes"]
    assert node["node"] == srv.server.node_name and node["rooms"] == ["r"]
    assert node["connections"] == 1 and node["draining"] is False
    status, body, _ = await call(http, srv, "topology", "drain", {"node": "elsewhere"})
    assert status == 404 and body["reject"]["field"] == "node"
    status, body, _ = await call(http, srv, "topology", "drain", {"node": srv.server.node_name})
    assert body["result"] == {"node": srv.server.node_name, "closed": 1}
    _, code = await closed(ws)
    assert code == 1012


async def test_rate_limit_and_metrics(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(
        tmp_path, server__control_burst=2, server__control_rate_per_s=0.5
    ) as srv:
        token = srv.mint("*", ("*",), actor="ops")
        statuses = [(await call(http, srv, "topology", "get", token=token))[0] for _ in range(3)]
        assert statuses == [200, 200, 429]
        _, body, resp = await call(http, srv, "topology", "get", token=token)
        assert body["reject"]["class"] == "rate-limited" and int(resp.headers["Retry-After"]) >= 1
        registry = srv.server.metrics.registry
        sample = registry.get_sample_value
        labels = {"family": "topology", "command": "get"}
        assert sample("roomsync_control_requests_total", {**labels, "outcome": "ok"}) == 2
        assert sample("roomsync_control_requests_total", {**labels, "outcome": "rate-limited"}) == 2


def test_registry_lists_the_commands_with_their_caps() -> None:
    names = {(c.family, c.name): c.cap for c in REGISTRY}
    assert names[("room", "revoke")] == "room:revoke"
    # Every command of SPEC §6, each with a summary and a published result model.
    spec = {
        "room": "create get list lock unlock close delete revoke capture fork propose "
        "validate promote reject",
        "archive": "create list get restore delete verify",
        "query": "define get list run drop",
        "topology": "get drain place",
        "tick": "get set advance",
        "policy": "get set",
    }
    expected = {(f, c) for f, commands in spec.items() for c in commands.split()}
    assert set(names) >= expected, sorted(expected - set(names))
    assert all(c.summary and c.result is not None for c in REGISTRY)


async def test_refilled_operator_buckets_are_forgotten(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-operator buckets stay bounded: past the limit, the ones that have refilled
    (equal to a new one) are dropped, the ones still limiting an operator are kept."""
    import time

    from roomsync.server import control as route_module
    from roomsync.testing.clock import FakeClock

    monkeypatch.setattr(route_module, "_MAX_BUCKETS", 2)
    clock = FakeClock(int(time.time() * 1000))
    async with running_server(
        tmp_path, now_ms=clock.now_ms, server__control_burst=1, server__control_rate_per_s=0.1
    ) as srv:
        now_s = clock.now_ms() // 1000

        async def as_(sub: str) -> int:
            token = srv.mint("*", ("*",), actor=sub, now_s=now_s)
            return (await call(http, srv, "topology", "get", token=token))[0]

        assert [await as_("a"), await as_("a"), await as_("b")] == [200, 429, 200]
        assert await as_("c") == 200  # the table was full; a and b are still limiting
        assert set(srv.server.control._buckets) == {"a", "b", "c"}
        assert await as_("a") == 429  # a's bucket was kept, not replaced by a full one
        clock.advance(60_000)  # every bucket refills
        assert await as_("d") == 200
        assert set(srv.server.control._buckets) == {"d"}
        assert await as_("a") == 200
