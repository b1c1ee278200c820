"""The ``query`` family against a real server (SPEC §6): entries written by a real client
over a socket, ``query define get list run drop`` over HTTP, the SQLite store answering
``run`` through its push-down, and every refusal on its path."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from roomsync.cli.control_cmd import EXIT_CODES
from roomsync.client import Backoff, connect
from roomsync.control.client import ControlClient, ControlPreconditionFailed
from roomsync.core.codes import RejectClass
from roomsync.storage.sqlite import SqliteStore
from roomsync.testing.control import call, ok, refused
from roomsync.testing.server import ServerHandle

FAST = Backoff(base=0.01, factor=2, max=0.05)

TODOS: dict[str, Any] = {
    "/todos/1": {"title": "milk", "done": False, "due": 3, "tags": ["shop"]},
    "/todos/2": {"title": "mail", "done": True, "due": 1, "tags": []},
    "/todos/3": {"title": "mow", "done": False, "due": "soon", "tags": ["yard", "shop"]},
    "/todos/4": {"title": "move", "done": False, "due": 2.0},
    "/todos/5": {"title": "meet", "done": "no", "due": 1},
    "/notes/1": {"title": "milk is out", "done": False},
}


async def written(srv: ServerHandle, room: str) -> None:
    """The todos, a deleted one and a value that is not JSON, written over a socket."""
    async with await connect(srv.url, room, actor="alice", backoff=FAST) as alice:
        for path, value in TODOS.items():
            alice.set_json(path, value)
        alice.set_json("/todos/6", {"title": "gone", "done": False})
        alice.delete("/todos/6")
        alice.set("/todos/7", b"\xffnot json")
        await alice.flush()


async def run_all(
    http: aiohttp.ClientSession, srv: ServerHandle, room: str, name: str, limit: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(20):
        payload: dict[str, Any] = {"room": room, "name": name, "limit": limit}
        if cursor is not None:
            payload["cursor"] = cursor
        page = await ok(http, srv, "query run", payload)
        assert len(page["rows"]) <= limit and page["room"] == room and page["name"] == name
        rows += page["rows"]
        cursor = page["cursor"]
        if cursor is None:
            return rows
    raise AssertionError("paging did not end")


async def test_define_get_list_run_drop(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    assert isinstance(srv.server.node.store, SqliteStore)  # run goes through the push-down
    await written(srv, "home")
    spec = {
        "prefix": "/todos/",
        "filters": [{"pointer": "/done", "op": "eq", "value": False}],
        "order": {"pointer": "/due", "dir": "asc"},
        "project": ["/title", "/due"],
    }
    assert await ok(http, srv, "query define", {"name": "open", "spec": spec}) == {
        "name": "open",
        "created": True,
    }
    got = await ok(http, srv, "query get", {"name": "open"})
    assert got == {
        "name": "open",
        "spec": {
            **spec,
            "prefix": "/todos",
            "order": {"pointer": "/due", "dir": "asc"},
            "limit": 100,
        },
    }
    # Numbers (by value: 2.0 before 3), then strings, then the rest; "no" is not false.
    rows = (await ok(http, srv, "query run", {"room": "home", "name": "open"}))["rows"]
    assert rows == [
        {"path": "/todos/4", "value": {"/title": "move", "/due": 2.0}},
        {"path": "/todos/1", "value": {"/title": "milk", "/due": 3}},
        {"path": "/todos/3", "value": {"/title": "mow", "/due": "soon"}},
    ]
    assert await run_all(http, srv, "home", "open", 1) == rows
    assert srv.server.node.store.last_query is not None

    # Redefine: created is false; contains on an array, prefix on a string, desc, paged.
    shop = {
        "prefix": "/todos",
        "filters": [
            {"pointer": "/tags", "op": "contains", "value": "shop"},
            {"pointer": "/title", "op": "prefix", "value": "m"},
        ],
        "order": {"pointer": "/title", "dir": "desc"},
        "limit": 1,
    }
    assert (await ok(http, srv, "query define", {"name": "open", "spec": shop}))["created"] is False
    assert [r["path"] for r in await run_all(http, srv, "home", "open", 1)] == [
        "/todos/3",
        "/todos/1",
    ]
    first = await ok(http, srv, "query run", {"room": "home", "name": "open"})
    assert len(first["rows"]) == 1 and first["cursor"] is not None  # the spec's limit

    # No filters: every live entry under the prefix, the one that is not JSON with raw.
    await ok(http, srv, "query define", {"name": "all", "spec": {"prefix": "/todos"}})
    every = await run_all(http, srv, "home", "all", 2)
    assert [r["path"] for r in every] == [f"/todos/{i}" for i in (1, 2, 3, 4, 5, 7)]
    assert every[-1] == {"path": "/todos/7", "value": None, "raw": "/25vdCBqc29u"}

    await ok(http, srv, "query define", {"name": "b-spec", "spec": {}})
    page = await ok(http, srv, "query list", {"limit": 2})
    assert [q["name"] for q in page["queries"]] == ["all", "b-spec"] and page["cursor"] == "b-spec"
    assert page["queries"][1]["spec"] == {"prefix": "/", "filters": [], "limit": 100}
    page = await ok(http, srv, "query list", {"limit": 2, "cursor": page["cursor"]})
    assert [q["name"] for q in page["queries"]] == ["open"] and page["cursor"] is None

    assert await ok(http, srv, "query drop", {"name": "open"}) == {"name": "open", "dropped": True}
    await refused(http, srv, "query drop", {"name": "open"}, status=404, code="query-unknown")
    await refused(http, srv, "query get", {"name": "open"}, status=404, code="query-unknown")


async def test_run_needs_the_spec_and_the_room(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await written(srv, "home")
    reject = await refused(
        http,
        srv,
        "query run",
        {"room": "home", "name": "nothing"},
        status=412,
        code="query-spec-missing",
    )
    assert reject["class"] == "precondition-failed" and reject["field"] == "name"
    assert reject["next"] == "satisfy the precondition named in `code`"
    await ok(http, srv, "query define", {"name": "q", "spec": {}})
    reject = await refused(
        http, srv, "query run", {"room": "nowhere", "name": "q"}, status=404, code="room-unknown"
    )
    assert reject["field"] == "room"
    reject = await refused(
        http,
        srv,
        "query run",
        {"room": "home", "name": "q", "cursor": "nope"},
        status=422,
        code="invalid",
    )
    assert reject["field"] == "cursor"
    # A cursor of one order does not resume another.
    await ok(http, srv, "query define", {"name": "by-due", "spec": {"order": {"pointer": "/due"}}})
    cursor = (await ok(http, srv, "query run", {"room": "home", "name": "q", "limit": 1}))["cursor"]
    await refused(
        http,
        srv,
        "query run",
        {"room": "home", "name": "by-due", "cursor": cursor},
        status=422,
        code="invalid",
    )


async def test_a_live_room_is_queried_from_its_committed_state(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await ok(
        http,
        srv,
        "query define",
        {"name": "n", "spec": {"filters": [{"pointer": "/n", "op": "ge", "value": 2}]}},
    )
    async with await connect(srv.url, "live", actor="bob", backoff=FAST) as bob:
        for i in range(4):
            bob.set_json(f"/x/{i}", {"n": i})
        await bob.flush()
        assert "live" in srv.server.node.rooms.hosts
        rows = (await ok(http, srv, "query run", {"room": "live", "name": "n"}))["rows"]
        assert [r["path"] for r in rows] == ["/x/2", "/x/3"]
        bob.set_json("/x/0", {"n": 9})
        await bob.flush()
        rows = (await ok(http, srv, "query run", {"room": "live", "name": "n"}))["rows"]
        assert [r["path"] for r in rows] == ["/x/0", "/x/2", "/x/3"]


async def test_the_neighbouring_cap_is_forbidden(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await ok(http, srv, "query define", {"name": "q", "spec": {}})
    reject = await refused(
        http,
        srv,
        "query run",
        {"room": "home", "name": "q"},
        status=403,
        code="capability-missing",
        caps=("query:get",),
    )
    assert reject["required"] == "query:run"
    status, body = await call(http, srv, "query get", {"name": "q"}, caps=("query:get",))
    assert status == 200 and body["result"]["name"] == "q"
    await refused(
        http,
        srv,
        "query define",
        {"name": "q", "spec": {}},
        status=403,
        code="capability-missing",
        caps=("room:*", "query:run"),
    )


@pytest.mark.parametrize(
    ("command", "payload", "field"),
    [
        ("define", {"name": "q", "spec": {"filters": [{"pointer": "/a", "op": "like"}]}}, "spec"),
        (
            "define",
            {"name": "q", "spec": {"filters": [{"pointer": "a", "op": "exists"}]}},
            "spec.filters[0].pointer",
        ),
        (
            "define",
            {"name": "q", "spec": {"filters": [{"pointer": "/a", "op": "exists", "value": 1}]}},
            "spec.filters[0].value",
        ),
        (
            "define",
            {"name": "q", "spec": {"filters": [{"pointer": "/a", "op": "lt", "value": True}]}},
            "spec.filters[0].value",
        ),
        ("define", {"name": "q", "spec": {"prefix": "todos"}}, "spec.prefix"),
        ("define", {"name": "q", "spec": {"limit": 1001}}, "spec"),
        ("define", {"name": "q", "spec": {"where": 1}}, "spec"),
        ("define", {"name": "bad name", "spec": {}}, "name"),
        ("define", {"name": "q"}, "spec"),
        ("run", {"room": "bad room", "name": "q"}, "room"),
        ("run", {"room": "r", "name": "q", "limit": 0}, "limit"),
        ("list", {"limit": 1001}, "limit"),
        ("drop", {"name": "q", "extra": 1}, "extra"),
    ],
)
async def test_invalid_payloads_name_the_field(
    srv: ServerHandle,
    http: aiohttp.ClientSession,
    command: str,
    payload: dict[str, Any],
    field: str,
) -> None:
    status, body = await call(http, srv, f"query {command}", payload)
    assert status == 422, body
    assert body["reject"]["class"] == "invalid-payload" and body["reject"]["field"] == field


def run_cli(url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMSYNC_")}
    env["ROOMSYNC_OPERATOR_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "roomsync.cli.main", "control", "--url", url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_the_cli_and_the_control_client(srv: ServerHandle) -> None:
    await written(srv, "home")
    token = srv.mint("*", ("query:*",), actor="ops")
    spec = '{"prefix":"/todos","filters":[{"pointer":"/due","op":"eq","value":1}]}'
    done = await asyncio.to_thread(
        run_cli, srv.url, token, "query", "define", "name=due-now", f"spec={spec}"
    )
    assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(
        run_cli, srv.url, token, "query", "run", "room=home", "name=due-now"
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert [r["path"] for r in answer["rows"]] == ["/todos/2", "/todos/5"]
    done = await asyncio.to_thread(
        run_cli, srv.url, token, "query", "run", "room=home", "name=unknown"
    )
    assert done.returncode == EXIT_CODES[RejectClass.PRECONDITION_FAILED]
    assert "query-spec-missing" in done.stderr
    async with ControlClient(srv.url, token) as ops:
        page = await ops.query_run(room="home", name="due-now", limit=1)
        assert [r["path"] for r in page["rows"]] == ["/todos/2"] and page["cursor"]
        rest = await ops.query_run(room="home", name="due-now", cursor=page["cursor"])
        assert [r["path"] for r in rest["rows"]] == ["/todos/5"] and rest["cursor"] is None
        with pytest.raises(ControlPreconditionFailed) as missing:
            await ops.query_run(room="home", name="unknown")
        assert missing.value.reject_code == "query-spec-missing"
