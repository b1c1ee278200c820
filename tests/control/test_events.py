"""``topology events`` (issue 12): the node's rings (log records redacted before they are
kept, sessions ended with their codes), what the query derives from them (closes,
reconnects, refused control requests and their caps), and the command on a real server
with real peers: its cap, its payload, a drop (1006), a refused handshake, a reconnect."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roomsync.control import REGISTRY
from roomsync.server.events import NodeEvents
from roomsync.server.logs import event
from roomsync.testing.rawws import RawWebSocket
from roomsync.testing.server import ServerHandle, running_server, wait_until
from roomsync.testing.wsclient import closed, hello

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ring(clock: Clock) -> Iterator[NodeEvents]:
    events = NodeEvents(5, clock)
    events.attach()
    try:
        yield events
    finally:
        events.detach()


log = logging.getLogger("roomsync.test-events")


# -- the rings ----------------------------------------------------------------------------


def test_records_are_redacted_before_they_are_kept(ring: NodeEvents) -> None:
    event(
        log,
        "session.close",
        room="r",
        peer="p-1",
        code=4003,
        token=TOKEN,
        message=f"invalid room id {TOKEN!r}",
        data=b"blob bytes",
        raw=b"\x00\x01secret-bytes",
        url="https://b.example/x?sig=deadbeef",
        nested={"authorization": "Bearer x", "path": Path("/tmp/x")},
    )
    (kept,) = ring.log_events()
    text = json.dumps(kept.to_json())
    assert TOKEN not in text and "c2lnbmF0dXJl" not in text
    assert "secret-bytes" not in text and "blob bytes" not in text and "deadbeef" not in text
    assert kept.fields["token"] == "***" and kept.fields["data"] == "***"
    assert kept.fields["raw"] == "<14 bytes>"
    assert kept.fields["nested"] == {"authorization": "***", "path": "/tmp/x"}
    out = kept.to_json()
    assert (out["event"], out["level"], out["room"], out["peer"], out["code"]) == (
        "session.close", "info", "r", "p-1", 4003,
    )  # fmt: skip


def test_the_ring_is_bounded_and_pages_backwards(ring: NodeEvents, clock: Clock) -> None:
    for i in range(8):
        clock.now = 1_000 + i
        event(log, "session.welcome" if i % 2 else "store.append_failed", room=f"r{i % 2}", i=i)
    held = ring.log_events()
    assert [e.fields["i"] for e in held] == [3, 4, 5, 6, 7]  # the newest 5
    answer = ring.query(limit=2)
    assert [e["fields"]["i"] for e in answer["events"]] == [6, 7]
    assert answer["ring"] == {
        "size": 5, "held": 5, "kept": 8, "dropped": 3, "oldest_at": 1003, "complete": False,
    }  # fmt: skip
    older = ring.query(limit=2, before=int(answer["cursor"]))
    assert [e["fields"]["i"] for e in older["events"]] == [4, 5]
    last = ring.query(limit=2, before=int(older["cursor"]))
    assert [e["fields"]["i"] for e in last["events"]] == [3] and last["cursor"] is None
    # filters: since, kind (a name or its prefix), room
    assert [e["fields"]["i"] for e in ring.query(since_ms=1006)["events"]] == [6, 7]
    assert ring.query(since_ms=1006)["ring"]["complete"] is True
    assert [e["fields"]["i"] for e in ring.query(kind="session")["events"]] == [3, 5, 7]
    assert ring.query(kind="sess")["events"] == []  # a prefix of segments, not of letters
    assert [e["fields"]["i"] for e in ring.query(kind="store.append_failed")["events"]] == [4, 6]
    assert [e["fields"]["i"] for e in ring.query(room="r0")["events"]] == [4, 6]


def test_foreign_loggers_and_debug_records_are_not_kept(ring: NodeEvents) -> None:
    logging.getLogger("roomsync.client").warning("retrying")
    logging.getLogger("roomsync.cli").warning("usage")
    event(log, "debug.thing", level=logging.DEBUG)
    logging.getLogger("elsewhere").error("not ours")
    event(log, "kept", level=logging.WARNING)
    assert [e.event for e in ring.log_events()] == ["kept"]


@pytest.fixture
def unconfigured() -> Iterator[logging.Logger]:
    """The ``roomsync`` logger with no level of its own (as without ``roomsync serve``)."""
    root = logging.getLogger("roomsync")
    before = root.level
    root.setLevel(logging.NOTSET)
    try:
        yield root
    finally:
        root.setLevel(before)


def test_attach_sets_the_level_only_when_nobody_chose_one(
    clock: Clock, unconfigured: logging.Logger
) -> None:
    root = unconfigured
    a, b = NodeEvents(5, clock), NodeEvents(5, clock)
    a.attach()
    b.attach()
    assert root.level == logging.INFO
    a.detach()
    assert root.level == logging.INFO  # b still relies on it
    b.detach()
    assert root.level == logging.NOTSET and a.handler not in root.handlers
    root.setLevel(logging.ERROR)  # an operator's choice is left alone
    try:
        a.attach()
        assert root.level == logging.ERROR
        event(log, "info.dropped")
        a.detach()
        assert root.level == logging.ERROR and a.log_events() == []
    finally:
        root.setLevel(logging.NOTSET)
    off = NodeEvents(0, clock)
    off.attach()
    assert off.handler not in root.handlers
    off.ended(room="r", peer="p", session="s", actor="a", code=1000)
    assert off.query()["closed"] == [] and off.query()["events"] == []


def test_closes_reconnects_and_control_failures(ring: NodeEvents, clock: Clock) -> None:
    ring = NodeEvents(100, clock)
    for i, code in enumerate([4001, 4001, 1006]):
        clock.now = 2_000 + i
        ring.ended(room="doc", peer=f"p-{i}", session=f"s-{i}", actor="alice", code=code)
    ring.ended(room="doc", peer="p-x", session="s-x", actor=None, code=4003)  # refused
    ring.ended(room="other", peer="p-o", session="s-o", actor="bob", code=1000)  # once: none
    answer = ring.query(live=[("doc", "alice", "p-new"), ("other", "carol", "p-c")])
    assert answer["closes"] == {"1000": 1, "1006": 1, "4001": 2, "4003": 1}
    (alice,) = answer["reconnects"]
    assert alice == {
        "room": "doc", "actor": "alice", "sessions": 4, "open": 1, "reconnects": 3,
        "codes": {"1006": 1, "4001": 2}, "peers": ["p-0", "p-1", "p-2", "p-new"],
        "first_at": 2000, "last_at": 2002,
    }  # fmt: skip
    refused = [c for c in answer["closed"] if not c["welcomed"]]
    assert refused == [
        {"at": 2002, "room": "doc", "peer": "p-x", "session": "s-x", "welcomed": False,
         "code": 4003}
    ]  # fmt: skip
    assert ring.query(room="other")["closes"] == {"1000": 1}
    assert ring.query(since_ms=2002)["closes"] == {"1000": 1, "1006": 1, "4003": 1}
    # control failures come from the control.request records
    ctl = NodeEvents(100, clock)
    ctl.attach()
    try:
        clock.now = 3_000
        control = logging.getLogger("roomsync.control")
        for outcome, caps in [("forbidden", ["room:get"]), ("forbidden", ["room:get"]),
                              ("ok", ["*"]), ("unauthenticated", [])]:  # fmt: skip
            op = None if outcome == "unauthenticated" else "ops"
            event(control, "control.request", family="room", command="lock", outcome=outcome,
                  operator=op, caps=caps, ms=1.0)  # fmt: skip
        failures = ctl.query()["control_failures"]
    finally:
        ctl.detach()
    assert failures == [
        {"family": "room", "command": "lock", "outcome": "forbidden", "code": None,
         "required": "room:lock", "operator": "ops", "caps": ["room:get"], "count": 2,
         "first_at": 3000, "last_at": 3000},
        {"family": "room", "command": "lock", "outcome": "unauthenticated", "code": None,
         "required": "room:lock", "operator": None, "caps": [], "count": 1,
         "first_at": 3000, "last_at": 3000},
    ]  # fmt: skip


# -- against a real server ----------------------------------------------------------------


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with running_server(tmp_path, server__control_burst=1000) as handle:
        yield handle


async def call(
    http: aiohttp.ClientSession,
    srv: ServerHandle,
    payload: dict[str, Any] | None = None,
    *,
    caps: tuple[str, ...] = ("topology:events",),
) -> tuple[int, dict[str, Any], str]:
    token = srv.mint("*", caps, actor="ops")
    async with http.post(
        f"{srv.url}/v1/control/topology/events",
        json=payload or {},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        text = await resp.text()
        return resp.status, json.loads(text), text


def test_registered_with_its_own_cap() -> None:
    command = REGISTRY.get("topology", "events")
    assert command is not None and command.cap == "topology:events"
    assert command.result is not None and command.summary


async def test_needs_its_cap_and_a_valid_payload(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await call(http, srv, caps=("topology:get",))
    assert status == 403 and body["reject"]["required"] == "topology:events"
    status, body, _ = await call(http, srv, caps=("topology:*",))
    assert status == 200
    for payload, field in [
        ({"cursor": "abc"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"since_ms": -1}, "since_ms"),
        ({"room": "bad room"}, "room"),
        ({"kind": ""}, "kind"),
        ({"extra": 1}, "extra"),
    ]:
        status, body, _ = await call(http, srv, payload)
        assert status == 422 and body["reject"]["field"] == field, (payload, body)


async def test_sessions_closes_and_failing_requests_on_a_live_node(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    # a reconnecting actor: two sessions ended normally, a third still open
    for _ in range(2):
        ws, _ = await hello(http, srv.ws_url("ev"), actor="alice")
        await ws.close()
    live, wl = await hello(http, srv.ws_url("ev"), actor="alice")
    # a drop without a CLOSE frame (1006)
    raw = await RawWebSocket.open(srv.host, srv.port, "/ws/ev")
    await raw.send_json({"type": "hello", "v": 1, "actor": "dropper"})
    await raw.read_frame()  # welcome
    await raw.close()
    # a refused handshake: a token that does not verify (4003), never welcomed
    bad = srv.mint("ev", ("read",), actor="mallory")[:-4] + "AAAA"
    ws, _ = await hello_refused(http, srv.ws_url("ev"), bad)
    # a token pasted into the route: the close message quotes it, the ring masks it
    planted = srv.mint("*", ("*",), actor="planted", ttl_s=60) + "x" * 10
    ws2 = await http.ws_connect(f"{srv.url}/ws/{planted}")
    await closed(ws2)
    # a control request refused for its scope
    narrow = srv.mint("*", ("room:get",), actor="ops-narrow")
    async with http.post(
        f"{srv.url}/v1/control/room/lock",
        json={"room": "ev"},
        headers={"Authorization": f"Bearer {narrow}"},
    ) as resp:
        assert resp.status == 403
    await wait_until(lambda: len(srv.server.node.events.session_ends()) >= 5)

    status, body, text = await call(http, srv)
    assert status == 200, body
    assert planted not in text and planted.split(".")[2][:20] not in text
    assert bad not in text
    result = body["result"]
    assert result["node"] == srv.server.node_name
    assert result["closes"]["1000"] == 2 and result["closes"]["1006"] == 1
    assert result["closes"]["4003"] >= 1
    (alice,) = [r for r in result["reconnects"] if r["actor"] == "alice"]
    assert (alice["sessions"], alice["open"], alice["reconnects"]) == (3, 1, 2)
    assert alice["peers"][-1] == wl["peer"]
    dropped = [c for c in result["closed"] if c.get("code") == 1006]
    assert dropped and dropped[0]["actor"] == "dropper" and dropped[0]["welcomed"]
    refused = [c for c in result["closed"] if c.get("code") == 4003]
    assert refused and all(not c["welcomed"] and "actor" not in c for c in refused)
    (failure,) = [f for f in result["control_failures"] if f["operator"] == "ops-narrow"]
    assert failure == {**failure, "command": "lock", "outcome": "forbidden",
                       "code": "capability-missing", "required": "room:lock",
                       "caps": ["room:get"], "count": 1}  # fmt: skip
    names = [e["event"] for e in result["events"]]
    assert "server.started" in names and "session.welcome" in names
    assert "session.close" in names and "control.request" in names
    assert all(e["at"] >= e["id"] for e in result["events"])  # ms times, increasing ids
    # filters reach the server: kind and room
    status, body, _ = await call(http, srv, {"kind": "control", "limit": 10})
    assert {e["event"] for e in body["result"]["events"]} == {"control.request"}
    status, body, _ = await call(http, srv, {"room": "ev", "kind": "session.welcome"})
    assert len(body["result"]["events"]) == 4  # alice x3 and the dropper
    status, body, _ = await call(http, srv, {"since_ms": result["now_ms"] + 60_000})
    assert body["result"]["events"] == [] and body["result"]["closes"] == {}
    await live.close()


async def hello_refused(
    http: aiohttp.ClientSession, url: str, token: str
) -> tuple[aiohttp.ClientWebSocketResponse, int | None]:
    ws = await http.ws_connect(url)
    await ws.send_json({"type": "hello", "v": 1, "token": token})
    _, code = await closed(ws)
    assert code == 4003
    return ws, code
