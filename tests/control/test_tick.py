"""The ``tick`` family (SPEC §6) against a real server: counters, broadcasts, timers that
survive restarts, placement, and each reject on its path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roomsync.client import TickInfo, connect
from roomsync.server.ticks import MAX_N
from roomsync.storage.base import RoomRecord
from roomsync.storage.memory import MemoryStore
from roomsync.testing.control import call, ok
from roomsync.testing.server import ServerHandle, running_server, wait_until
from roomsync.testing.wsclient import hello, recv_type


async def stored(srv: ServerHandle, room: str) -> RoomRecord:
    record = await srv.server.store.get_room(room)
    assert record is not None
    return record


async def test_get_set_advance_persist_and_broadcast(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await ok(http, srv, "room create", {"room": "game"})
    got = await ok(http, srv, "tick get", {"room": "game"})
    assert got == {"room": "game", "n": 0, "interval_ms": 0, "at": 0, "running": False}
    ws, _ = await hello(http, srv.ws_url("game"))
    one = await ok(http, srv, "tick advance", {"room": "game"})
    assert (one["n"], one["interval_ms"], one["running"]) == (1, 0, False)
    assert one["at"] > 0
    assert await recv_type(ws, "tick") == {"type": "tick", "n": 1, "at": one["at"]}
    ten = await ok(http, srv, "tick set", {"room": "game", "n": 10})
    assert (await recv_type(ws, "tick"))["n"] == ten["n"] == 10
    fifteen = await ok(http, srv, "tick advance", {"room": "game", "n": 5})
    assert (await recv_type(ws, "tick"))["n"] == fifteen["n"] == 15
    record = await stored(srv, "game")
    assert (record.tick_n, record.tick_at_ms) == (15, fifteen["at"])
    assert (await ok(http, srv, "tick get", {"room": "game"}))["n"] == 15
    # Setting only the interval changes neither n nor at, and broadcasts nothing.
    slow = await ok(http, srv, "tick set", {"room": "game", "interval_ms": 3_600_000})
    assert (slow["n"], slow["at"], slow["interval_ms"], slow["running"]) == (
        15,
        fifteen["at"],
        3_600_000,
        True,
    )
    await ws.send_json({"type": "ping"})
    assert (await recv_type(ws, "pong"))["type"] == "pong"  # no tick came before it
    await ws.close()


async def test_a_loaded_room_never_written_gets_a_record(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, srv.ws_url("fresh"))
    assert await srv.server.store.get_room("fresh") is None
    assert (await ok(http, srv, "tick advance", {"room": "fresh"}))["n"] == 1
    assert (await stored(srv, "fresh")).tick_n == 1
    await ws.close()


async def test_the_timer_advances_broadcasts_and_stops(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await ok(http, srv, "room create", {"room": "clock"})
    ws, _ = await hello(http, srv.ws_url("clock"))
    started = await ok(http, srv, "tick set", {"room": "clock", "interval_ms": 20})
    assert started["running"] is True and started["n"] == 0
    seen = [(await recv_type(ws, "tick"))["n"] for _ in range(3)]
    assert seen == [1, 2, 3]  # one advance per interval, in order
    stopped = await ok(http, srv, "tick set", {"room": "clock", "interval_ms": 0})
    assert stopped["running"] is False and stopped["n"] >= 3
    await asyncio.sleep(0.1)  # five intervals: a timer still running would have ticked
    assert (await ok(http, srv, "tick get", {"room": "clock"}))["n"] == stopped["n"]
    assert (await stored(srv, "clock")).tick_n == stopped["n"]
    await ws.close()


async def test_a_ticking_room_without_peers_advances_and_persists(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await ok(http, srv, "room create", {"room": "idle"})
    await ok(http, srv, "tick set", {"room": "idle", "interval_ms": 10, "n": 40})
    assert "idle" not in srv.server.rooms.hosts

    async def advanced() -> bool:
        return (await stored(srv, "idle")).tick_n >= 43

    await wait_until(advanced)
    assert "idle" not in srv.server.rooms.hosts


async def test_n_and_the_interval_survive_a_restart(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path) as first:
        await ok(http, first, "room create", {"room": "durable"})
        await ok(http, first, "tick set", {"room": "durable", "n": 100, "interval_ms": 30})

        async def ticked() -> bool:
            return (await stored(first, "durable")).tick_n >= 102

        await wait_until(ticked)
    # The same SQLite file: the counter and the interval are kept, and the timer runs.
    async with running_server(tmp_path) as second:
        got = await ok(http, second, "tick get", {"room": "durable"})
        assert got["interval_ms"] == 30 and got["running"] is True
        assert got["n"] >= 102
        ws, _ = await hello(http, second.ws_url("durable"))
        tick = await recv_type(ws, "tick")
        assert tick["n"] > got["n"]
        await ws.close()


async def test_only_the_owning_node_runs_the_timer(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    store = MemoryStore()
    await store.open()
    # Placed on another node before this one starts: not resumed here.
    await store.put_room(
        RoomRecord("elsewhere", created_ms=1, node="node-b", tick_n=5, tick_interval_ms=10)
    )
    async with running_server(tmp_path, store=store) as srv:
        got = await ok(http, srv, "tick get", {"room": "elsewhere"})
        assert (got["n"], got["interval_ms"], got["running"]) == (5, 10, False)
        # Placed here (topology place): this node runs it from now on.
        await ok(http, srv, "topology place", {"room": "elsewhere", "node": srv.server.node_name})
        assert srv.server.node.ticks.running("elsewhere")

        async def advanced() -> bool:
            return (await stored(srv, "elsewhere")).tick_n > 5

        await wait_until(advanced)
        # Placed elsewhere again: the timer stops, the counter stays.
        await srv.server.rooms.update_record("elsewhere", node="node-b")
        assert not srv.server.node.ticks.running("elsewhere")
        n = (await stored(srv, "elsewhere")).tick_n
        await asyncio.sleep(0.1)
        assert (await stored(srv, "elsewhere")).tick_n == n
        # An operator's advance still works on any node.
        assert (await ok(http, srv, "tick advance", {"room": "elsewhere"}))["n"] == n + 1


async def test_a_deleted_room_stops_ticking(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    await ok(http, srv, "room create", {"room": "gone"})
    await ok(http, srv, "tick set", {"room": "gone", "interval_ms": 10})
    await ok(http, srv, "room delete", {"room": "gone", "hard": True})
    await wait_until(lambda: not srv.server.node.ticks.running("gone"))
    assert await srv.server.store.get_room("gone") is None
    status, body = await call(http, srv, "tick get", {"room": "gone"})
    assert status == 404 and body["reject"]["code"] == "room-unknown"


async def test_the_sdk_reports_ticks(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    await ok(http, srv, "room create", {"room": "sdk"})
    client = await connect(srv.url, "sdk")
    try:
        got: list[TickInfo] = []
        client.on_tick(got.append)
        assert client.last_tick is None
        result = await ok(http, srv, "tick set", {"room": "sdk", "n": 7})
        await wait_until(lambda: got)
        assert got == [TickInfo(7, result["at"])] and client.last_tick == got[0]
    finally:
        await client.close()


async def test_unknown_rooms_overflow_and_forbidden(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    for command, payload in (
        ("tick get", {"room": "nope"}),
        ("tick set", {"room": "nope", "n": 1}),
        ("tick advance", {"room": "nope"}),
    ):
        status, body = await call(http, srv, command, payload)
        assert status == 404, body
        assert (body["reject"]["code"], body["reject"]["field"]) == ("room-unknown", "room")
    await ok(http, srv, "room create", {"room": "big"})
    await ok(http, srv, "tick set", {"room": "big", "n": MAX_N - 1})
    assert (await ok(http, srv, "tick advance", {"room": "big"}))["n"] == MAX_N
    status, body = await call(http, srv, "tick advance", {"room": "big"})
    assert status == 409 and body["reject"]["code"] == "tick-overflow"
    assert body["reject"]["field"] == "n"
    assert (await stored(srv, "big")).tick_n == MAX_N
    # The neighbouring caps do not cover it.
    status, body = await call(http, srv, "tick advance", {"room": "big"}, caps=("tick:get",))
    assert status == 403 and body["reject"]["required"] == "tick:advance"
    status, body = await call(http, srv, "tick get", {"room": "big"}, caps=("policy:*",))
    assert status == 403 and body["reject"]["required"] == "tick:get"
    status, body = await call(http, srv, "tick get", {"room": "big"}, caps=("tick:*",))
    assert status == 200


@pytest.mark.parametrize(
    ("command", "payload", "field"),
    [
        ("tick get", {"room": "bad room!"}, "room"),
        ("tick get", {}, "room"),
        ("tick set", {"room": "r"}, "interval_ms"),
        ("tick set", {"room": "r", "interval_ms": 5}, "interval_ms"),
        ("tick set", {"room": "r", "interval_ms": -1}, "interval_ms"),
        ("tick set", {"room": "r", "interval_ms": 86_400_001}, "interval_ms"),
        ("tick set", {"room": "r", "n": -1}, "n"),
        ("tick set", {"room": "r", "n": 1.5}, "n"),
        ("tick advance", {"room": "r", "n": 0}, "n"),
        ("tick advance", {"room": "r", "by": 2}, "by"),
    ],
)
async def test_invalid_payloads_name_the_field(
    srv: ServerHandle,
    http: aiohttp.ClientSession,
    command: str,
    payload: dict[str, Any],
    field: str,
) -> None:
    status, body = await call(http, srv, command, payload)
    assert status == 422, body
    assert body["reject"]["class"] == "invalid-payload" and body["reject"]["field"] == field
