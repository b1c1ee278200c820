"""``room entries`` and ``room presence`` against a real server (SPEC §6): entries and
presence written by real clients over sockets, read over HTTP, and the refusals."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest

from roomsync.cli.control_cmd import EXIT_CODES
from roomsync.client import Backoff, connect
from roomsync.control.client import ControlClient
from roomsync.control.handlers.inspection import JSON_VIEW_BYTES
from roomsync.core.codes import RejectClass
from roomsync.core.room import PathIndex
from roomsync.testing.control import ok, refused
from roomsync.testing.server import ServerHandle, wait_until

from .test_client_and_cli import run_cli

FAST = Backoff(base=0.01, factor=2, max=0.05)


def test_index_under_after_is_path_order_strictly_after() -> None:
    index = PathIndex(["/a/2", "/a", "/b", "/a/1", "/a-b", "/a/1/x"])
    index.add("/a/0")
    assert list(index.under_after("/a", None)) == ["/a", "/a/0", "/a/1", "/a/1/x", "/a/2"]
    assert list(index.under_after("/a", "/a")) == ["/a/0", "/a/1", "/a/1/x", "/a/2"]
    assert list(index.under_after("/a", "/a/1")) == ["/a/1/x", "/a/2"]
    assert list(index.under_after("/a", "/a/2")) == []
    assert list(index.under_after("/", "/a/2")) == ["/b"]
    assert list(index.under_after("/", None)) == sorted(index.under("/"))
    assert list(index.under_after("/a", "/0")) == list(index.under("/a"))


async def pages(
    http: aiohttp.ClientSession, srv: ServerHandle, payload: dict[str, Any]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(50):
        body = dict(payload) if cursor is None else {**payload, "cursor": cursor}
        page = await ok(http, srv, "room entries", body)
        assert len(page["entries"]) <= payload.get("limit", 100)
        out += page["entries"]
        cursor = page["cursor"]
        if cursor is None:
            return out
    raise AssertionError("paging did not end")


async def test_entries_paged_in_path_order(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    big = {"blob": "x" * (JSON_VIEW_BYTES + 10)}
    async with await connect(srv.url, "insp", actor="alice", backoff=FAST) as alice:
        for i in (3, 1, 10, 2):
            alice.set_json(f"/todos/{i}", {"n": i})
        alice.set_json("/todos", "the list")
        alice.set_json("/todosx", 0)
        alice.set("/raw", b"\xffnot json")
        alice.set_json("/big", big)
        alice.set_json("/todos/gone", 1)
        alice.delete("/todos/gone")
        await alice.flush()
    head = (await ok(http, srv, "room get", {"room": "insp"}))["head"]

    got = await pages(http, srv, {"room": "insp", "prefix": "/todos", "limit": 2})
    assert [e["path"] for e in got] == ["/todos", "/todos/1", "/todos/10", "/todos/2", "/todos/3"]
    first = got[1]
    assert first["value_json"] == {"n": 1} and first["is_json"] and not first["deleted"]
    assert base64.b64decode(first["value_b64"]) == b'{"n":1}'
    assert first["actor"] == "alice" and first["seq"] > 0 and first["ts"] > 0
    # A trailing slash is dropped, as for subscriptions: the same prefix.
    assert await pages(http, srv, {"room": "insp", "prefix": "/todos/"}) == got

    every = await pages(http, srv, {"room": "insp", "include_deleted": True, "limit": 3})
    paths = [e["path"] for e in every]
    assert paths == sorted(paths) and "/todos/gone" in paths and "/todosx" in paths
    gone = next(e for e in every if e["path"] == "/todos/gone")
    assert gone["deleted"] and gone["value_b64"] is None
    live = await pages(http, srv, {"room": "insp"})
    assert [e["path"] for e in live] == [p for p in paths if p != "/todos/gone"]
    raw = next(e for e in live if e["path"] == "/raw")
    assert not raw["is_json"] and base64.b64decode(raw["value_b64"]) == b"\xffnot json"
    large = next(e for e in live if e["path"] == "/big")
    assert large["json_truncated"] and not large["is_json"] and large["value_json"] is None
    assert json.loads(base64.b64decode(large["value_b64"])) == big

    page = await ok(http, srv, "room entries", {"room": "insp", "limit": 1000})
    assert page["room"] == "insp" and page["head"] == head and page["cursor"] is None
    after = await ok(http, srv, "room entries", {"room": "insp", "cursor": "/todos/2"})
    assert [e["path"] for e in after["entries"]] == ["/todos/3", "/todosx"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"room": "insp", "limit": 0}, "limit"),
        ({"room": "insp", "limit": 1001}, "limit"),
        ({"room": "insp", "cursor": "no-slash"}, "cursor"),
        ({"room": "insp", "cursor": ""}, "cursor"),
        ({"room": "insp", "prefix": "todos"}, "prefix"),
        ({"room": "insp", "prefix": "/a//b"}, "prefix"),
        ({"room": "insp", "extra": 1}, "extra"),
        ({"room": "bad room"}, "room"),
    ],
)
async def test_entries_refuses_bad_payloads(
    srv: ServerHandle, http: aiohttp.ClientSession, payload: dict[str, Any], field: str
) -> None:
    await ok(http, srv, "room create", {"room": "insp"})
    reject = await refused(http, srv, "room entries", payload, status=422, code="invalid")
    assert reject["class"] == "invalid-payload" and reject["field"] == field


async def test_unknown_room_and_caps(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    reject = await refused(
        http, srv, "room entries", {"room": "nowhere"}, status=404, code="room-unknown"
    )
    assert reject["field"] == "room"
    assert await ok(http, srv, "room presence", {"room": "nowhere"}) == {
        "room": "nowhere",
        "peers": [],
    }
    await ok(http, srv, "room create", {"room": "insp"})
    for command in ("room entries", "room presence"):
        cap = "room:" + command.split()[1]
        reject = await refused(
            http,
            srv,
            command,
            {"room": "insp"},
            status=403,
            code="capability-missing",
            caps=("room:get",),
        )
        assert reject["required"] == cap
        await ok(http, srv, command, {"room": "insp"}, caps=(cap,))
        await ok(http, srv, command, {"room": "insp"}, caps=("room:*",))


async def test_presence_shows_each_peers_state(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    async with (
        await connect(srv.url, "pres", actor="alice", backoff=FAST) as alice,
        await connect(srv.url, "pres", actor="bob", backoff=FAST) as bob,
    ):
        alice.set_presence({"cursor": [1, 2]})
        bob.set_presence("typing")

        async def both() -> bool:
            got = await ok(http, srv, "room presence", {"room": "pres"})
            return len(got["peers"]) == 2

        await wait_until(both, timeout=5)
        got = await ok(http, srv, "room presence", {"room": "pres"})
        by_actor = {p["actor"]: p for p in got["peers"]}
        assert by_actor["alice"]["state"] == {"cursor": [1, 2]}
        assert by_actor["bob"]["state"] == "typing"
        assert all(p["peer"] and p["updated_ms"] > 0 for p in got["peers"])
        bob.set_presence(None)

        async def one() -> bool:
            got = await ok(http, srv, "room presence", {"room": "pres"})
            return [p["actor"] for p in got["peers"]] == ["alice"]

        await wait_until(one, timeout=5)


async def test_cli_and_client_reach_both(srv: ServerHandle) -> None:
    async with await connect(srv.url, "cli", actor="alice", backoff=FAST) as alice:
        alice.set_json("/a/1", {"x": 1})
        alice.set_json("/a/2", {"x": 2})
        await alice.flush()
    token = srv.mint("*", ("room:entries", "room:presence"), actor="ops")
    async with ControlClient(srv.url, token) as ops:
        page = await ops.room_entries(room="cli", prefix="/a", limit=1)
        assert [e["path"] for e in page["entries"]] == ["/a/1"] and page["cursor"] == "/a/1"
        assert (await ops.room_presence(room="cli"))["peers"] == []
    done = await asyncio.to_thread(
        run_cli, "--url", srv.url, "room", "entries", "room=cli", "cursor=/a/1", token=token
    )
    assert done.returncode == 0, done.stderr
    assert [e["path"] for e in json.loads(done.stdout)["entries"]] == ["/a/2"]
    done = await asyncio.to_thread(
        run_cli, "--url", srv.url, "room", "entries", "room=cli", "limit=0", token=token
    )
    assert done.returncode == EXIT_CODES[RejectClass.INVALID_PAYLOAD]
    assert "field limit" in done.stderr
