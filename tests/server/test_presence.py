"""Presence over real sockets (SPEC §5): batch, snapshot, TTL, disconnect, not room state."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from roomsync.testing.clock import FakeClock
from roomsync.testing.server import ServerHandle, running_server
from roomsync.testing.wsclient import hello, recv, recv_type


async def test_presence_broadcast_snapshot_and_leave(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a, wa = await hello(http, srv.ws_url("p"), actor="alice")
    b, _ = await hello(http, srv.ws_url("p"), actor="bob")
    await a.send_json({"type": "presence", "state": {"cursor": [1, 2]}})
    msg = await recv_type(b, "presence")
    assert msg["peers"] == [{"peer": wa["peer"], "actor": "alice", "state": {"cursor": [1, 2]}}]
    c, wc = await hello(http, srv.ws_url("p"), actor="carol")
    assert wc["presence"] == [{"peer": wa["peer"], "actor": "alice", "state": {"cursor": [1, 2]}}]
    await a.close()
    leave = await recv_type(b, "presence-leave")
    assert leave == {"type": "presence-leave", "peer": wa["peer"]}
    # Presence is never room state: no seq, no change in the canonical hash.
    await b.send_json({"type": "mst-root"})
    root = await recv_type(b, "mst-root")
    assert root["count"] == 0 and root["root"] == "0" * 64
    assert srv.server.rooms.hosts["p"].state.head == 0
    await b.close()
    await c.close()


async def test_updates_in_one_window_are_one_message(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, policy__broadcast_window_ms=50) as srv:
        watcher, _ = await hello(http, srv.ws_url("w"))
        movers = [(await hello(http, srv.ws_url("w")))[0] for _ in range(5)]
        for i, ws in enumerate(movers):
            for step in range(4):
                await ws.send_json({"type": "presence", "state": {"x": i, "step": step}})
        msg = await recv_type(watcher, "presence")
        assert len(msg["peers"]) == 5
        assert all(p["state"]["step"] == 3 for p in msg["peers"])
        with_more = []
        try:
            while True:
                extra = await recv(watcher, timeout=0.3)
                with_more.append(extra)
        except TimeoutError:
            pass
        assert [m for m in with_more if m["type"] == "presence"] == []


async def test_presence_expires_without_heartbeat(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, policy__presence_ttl_ms=300) as srv:
        a, wa = await hello(http, srv.ws_url("t"))
        b, _ = await hello(http, srv.ws_url("t"))
        await a.send_json({"type": "presence", "state": "here"})
        await recv_type(b, "presence")
        started = time.monotonic()
        leave = await recv_type(b, "presence-leave", timeout=5)
        assert leave["peer"] == wa["peer"]
        assert time.monotonic() - started >= 0.2
        metrics = await (await http.get(srv.url + "/metrics")).text()
        assert "roomsync_presence_expired_total 1.0" in metrics
        await a.close()
        await b.close()


async def test_heartbeat_keeps_presence_alive(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """800 ms of server time pass in 100 ms steps: the peer that pings stays, the silent
    one (present since the same instant) expires, on the server's own expiry timer."""
    clock = FakeClock()
    async with running_server(tmp_path, policy__presence_ttl_ms=300, now_ms=clock.now_ms) as srv:
        a, wa = await hello(http, srv.ws_url("t"))
        silent, w_silent = await hello(http, srv.ws_url("t"))
        b, _ = await hello(http, srv.ws_url("t"))
        await silent.send_json({"type": "presence", "state": "quiet"})
        await a.send_json({"type": "presence", "state": "here"})
        shown: set[str] = set()
        while shown != {wa["peer"], w_silent["peer"]}:
            shown |= {p["peer"] for p in (await recv_type(b, "presence"))["peers"]}
        for _ in range(8):
            clock.advance(100)
            await a.send_json({"type": "ping"})
            assert await recv_type(a, "pong") == {"type": "pong"}  # the server saw it now
        leave = await recv_type(b, "presence-leave", timeout=5)
        assert leave["peer"] == w_silent["peer"]
        _c, wc = await hello(http, srv.ws_url("t"))
        assert [p["peer"] for p in wc["presence"]] == [wa["peer"]]
        metrics = await (await http.get(srv.url + "/metrics")).text()
        assert "roomsync_presence_expired_total 1.0" in metrics
        await a.close()
        await b.close()


async def test_presence_limits(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(
        tmp_path, policy__presence_max_bytes=64, policy__presence_max_members=1
    ) as srv:
        a, _ = await hello(http, srv.ws_url("l"))
        await a.send_json({"type": "presence", "state": "x" * 100})
        err = await recv_type(a, "error")
        assert err["code"] == "too-large" and "presence_max_bytes" in err["message"]
        await a.send_json({"type": "presence", "state": "ok"})
        b, _ = await hello(http, srv.ws_url("l"))
        await b.send_json({"type": "presence", "state": "me too"})
        err = await recv_type(b, "error")
        assert err["code"] == "too-large" and "presence_max_members" in err["message"]
        await a.close()
        await b.close()


async def test_presence_needs_cap(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, dev=False) as srv:
        ws, _ = await hello(http, srv.ws_url("c"), token=srv.mint("c", ["read"]))
        await ws.send_json({"type": "presence", "state": 1})
        err = await recv_type(ws, "error")
        assert err["code"] == "forbidden" and "presence" in err["message"]
        await ws.close()


async def test_null_state_leaves_presence_but_not_the_room(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a, wa = await hello(http, srv.ws_url("n"))
    b, _ = await hello(http, srv.ws_url("n"))
    await a.send_json({"type": "presence", "state": {"x": 1}})
    await recv_type(b, "presence")
    await a.send_json({"type": "presence", "state": None})
    assert (await recv_type(b, "presence-leave"))["peer"] == wa["peer"]
    assert srv.server.rooms.hosts["n"].presence.snapshot() == []
    await a.send_json({"type": "ping"})
    assert (await recv_type(a, "pong")) == {"type": "pong"}
