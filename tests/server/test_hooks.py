"""App hooks over real sockets (``docs/hooks.md``): authorize, validate, the side-effect
hooks, their budgets and fail-closed rules, and ``roomsync serve --app``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roomsync.core.codec import pack_data, unpack_data
from roomsync.core.entries import Change
from roomsync.hooks import (
    Allow,
    ChangesContext,
    CommitEvent,
    HelloContext,
    JsonSchemaValidator,
    PeerEvent,
    Refusal,
    Refuse,
    RoomInfo,
)
from roomsync.testing.server import ServerHandle, running_server, server_process, wait_until
from roomsync.testing.wsclient import closed, connect, hello, recv, recv_type

ITEM_SCHEMA = {
    "type": "object",
    "required": ["title"],
    "properties": {"title": {"type": "string"}, "done": {"type": "boolean"}},
    "additionalProperties": False,
}


def ch(path: str, ts: int, value: Any, actor: str = "a") -> Change:
    raw = None if value is None else json.dumps(value).encode()
    return Change(path, ts, 0, actor, raw)


async def send_pack(ws: aiohttp.ClientWebSocketResponse, changes: list[Change]) -> dict[str, Any]:
    await ws.send_json({"type": "pack", "data": pack_data(changes)})
    return await recv_type(ws, "ack")


async def next_pack(ws: aiohttp.ClientWebSocketResponse) -> list[Change]:
    return unpack_data((await recv_type(ws, "pack"))["data"])


def hook_count(srv: ServerHandle, hook: str, outcome: str) -> float:
    value = srv.server.metrics.registry.get_sample_value(
        "roomsync_hook_calls_total", {"hook": hook, "outcome": outcome}
    )
    return value or 0.0


# -- authorize -----------------------------------------------------------------------------


class SessionAuth:
    """Admits peers by the app's own session id (a hello field or a cookie), refuses the
    banned actor even with a valid roomsync token, and keeps roomsync's decision else."""

    def __init__(self) -> None:
        self.seen: list[HelloContext] = []

    async def authorize(self, hello: HelloContext) -> Allow | Refuse | None:
        self.seen.append(hello)
        session = hello.fields.get("session_id") or hello.headers.get("cookie", "")
        if session in ("s-alice", "sid=s-alice"):
            return Allow(("read", "write"), actor="alice")
        if session == "s-viewer":
            return Allow(("read",))
        if hello.claims is not None and hello.claims.sub == "mallory":
            return Refuse("mallory is banned from this app")
        if hello.fields.get("boom"):
            raise RuntimeError("the app's session store is down")
        if hello.fields.get("slow"):
            await asyncio.sleep(5)
        return None


async def test_authorize_admits_refuses_and_defers(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    app = SessionAuth()
    # No anonymous access: without the hook, a hello without a token is refused.
    async with running_server(tmp_path, dev=False, app=app, app__budget_ms=300) as srv:
        url = srv.ws_url("r")
        ws, welcome = await hello(http, url, session_id="s-alice")
        assert set(welcome["caps"]) == {"read", "write"} and welcome["actor"] == "alice"
        # Bound to the app's actor as a token's sub would bind it.
        ack = await send_pack(ws, [ch("/x", 1, {"v": 1}, actor="alice#laptop")])
        assert ack["seqs"] == [1]
        bad = await send_pack(ws, [ch("/y", 2, {"v": 1}, actor="bob")])
        assert bad["seqs"] == [] and bad["refused"][0]["code"] == "forbidden"
        await ws.close()

        # A cookie on the upgrade request works as well as a hello field.
        cookie_ws = await http.ws_connect(url, headers={"Cookie": "sid=s-alice"})
        await cookie_ws.send_json({"type": "hello", "v": 1})
        assert (await recv(cookie_ws))["actor"] == "alice"
        await cookie_ws.close()

        # Narrower caps: a viewer reads but may not write.
        viewer, welcome = await hello(http, url, session_id="s-viewer")
        assert welcome["caps"] == ["read"]
        refused = await send_pack(viewer, [ch("/z", 3, {"v": 1})])
        assert refused["refused"][0]["code"] == "forbidden"
        await viewer.close()

        # A valid roomsync token, refused by the app.
        token = srv.tokens.mint(room="r", caps=["read"], ttl_s=60, now_s=int(time.time()),
                                actor="mallory")  # fmt: skip
        for fields in ({"token": token}, {}, {"boom": True}, {"slow": True}):
            ws = await connect(http, url)
            await ws.send_json({"type": "hello", "v": 1, **fields})
            seen, code = await closed(ws)
            assert code == 4003, fields
            assert seen[-1]["code"] == "auth" and seen[-1]["message"].startswith("auth: ")
        messages = [c.token_error for c in app.seen]
        assert "anonymous access is disabled" in str(messages)  # the hook saw why
        assert hook_count(srv, "authorize", "refused") == 1
        assert hook_count(srv, "authorize", "error") == 1
        assert hook_count(srv, "authorize", "timeout") == 1
        # roomsync's decision stood for the hello without a token (None from the hook).
        assert (
            srv.server.metrics.registry.get_sample_value(
                "roomsync_auth_total", {"outcome": "anonymous"}
            )
            == 1.0
        )
        assert (
            srv.server.metrics.registry.get_sample_value(
                "roomsync_auth_total", {"outcome": "refused-by-app"}
            )
            == 3.0
        )  # mallory, the failing hook and the late one

        # A roomsync token the app has no opinion on is admitted as usual.
        ok = srv.tokens.mint(room="r", caps=["read"], ttl_s=60, now_s=int(time.time()),
                             actor="carol")  # fmt: skip
        ws, welcome = await hello(http, url, token=ok)
        assert welcome["caps"] == ["read"] and welcome["actor"] == "carol"
        await ws.close()


# -- validate ------------------------------------------------------------------------------


async def test_validate_refuses_single_changes_and_the_rest_commits(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The shipped JsonSchemaValidator, configured as an operator would ([app] table)."""
    async with running_server(
        tmp_path,
        app__object="roomsync.hooks:JsonSchemaValidator",
        app__options={"schemas": {"/todos": ITEM_SCHEMA}},
    ) as srv:
        writer, _ = await hello(http, srv.ws_url("todo"))
        reader, _ = await hello(http, srv.ws_url("todo"))
        ack = await send_pack(
            writer,
            [
                ch("/todos/1", 1, {"title": "milk"}),
                ch("/todos/2", 2, {"title": 7}),  # wrong type
                ch("/notes/x", 3, "anything goes outside /todos"),
                ch("/todos/3", 4, {"done": True}),  # title missing
                ch("/todos/1", 5, None),  # a delete passes
            ],
        )
        assert ack["seqs"] == [1, None, 2, None, 3]
        refused = {r["index"]: r for r in ack["refused"]}
        assert set(refused) == {1, 3}
        assert all(r["code"] == "invalid-value" for r in refused.values())
        assert "title" in refused[1]["message"] and "title" in refused[3]["message"]
        got = await next_pack(reader)
        assert [(c.path, c.seq) for c in got] == [("/todos/1", 1), ("/notes/x", 2), ("/todos/1", 3)]
        not_json = await send_pack(writer, [Change("/todos/9", 9, 0, "a", b"\xff")])
        assert not_json["refused"][0]["message"] == "value is not JSON (UTF-8)"
        assert hook_count(srv, "validate", "refused") == 2
        await writer.close()
        await reader.close()


class Flaky:
    """A validator that fails for packs touching /boom and hangs for /slow."""

    async def validate(self, pack: ChangesContext) -> list[Refusal]:
        paths = [c.path for c in pack.changes]
        if "/boom" in paths:
            raise ValueError("validator bug")
        if "/slow" in paths:
            await asyncio.sleep(10)
        if "/bad-index" in paths:
            return [Refusal(99, "no such change")]
        if "/gen" in paths:

            def refusals() -> Any:
                yield Refusal(0, "first")
                raise KeyError("the app's generator broke")

            return refusals()  # type: ignore[no-any-return]
        return [Refusal(i, "no secrets", "forbidden") for i, p in enumerate(paths) if "secret" in p]


async def test_a_failing_validator_refuses_its_pack_and_acks_stay_in_order(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, app=Flaky(), app__budget_ms=200) as srv:
        ws, _ = await hello(http, srv.ws_url("v"))
        # Four packs at once: each ack comes back in order, the bad ones refused whole.
        packs = [
            [ch("/ok", 1, 1), ch("/secret", 2, 2)],
            [ch("/boom", 3, 3), ch("/fine", 4, 4)],
            [ch("/slow", 5, 5)],
            [ch("/bad-index", 6, 6)],
            [ch("/gen", 8, 8)],
            [ch("/after", 7, 7)],
        ]
        for changes in packs:
            await ws.send_json({"type": "pack", "data": pack_data(changes)})
        acks = [await recv_type(ws, "ack") for _ in packs]
        assert acks[0]["seqs"] == [1, None] and acks[0]["refused"][0]["code"] == "forbidden"
        assert acks[1]["seqs"] == [None, None]
        assert {r["code"] for r in acks[1]["refused"]} == {"internal"}
        assert acks[2]["seqs"] == [None] and "timed out" in acks[2]["refused"][0]["message"]
        assert acks[3]["seqs"] == [None] and "invalid result" in acks[3]["refused"][0]["message"]
        assert acks[4]["seqs"] == [None] and "invalid result" in acks[4]["refused"][0]["message"]
        assert acks[5]["seqs"] == [2]
        assert srv.server.rooms.hosts["v"].state.durable_head == 2
        assert hook_count(srv, "validate", "error") == 3  # the raise, bad index, generator
        assert hook_count(srv, "validate", "timeout") == 1
        await ws.close()


# -- side effects --------------------------------------------------------------------------


class Recorder:
    def __init__(self, hang_first_commit: bool = False) -> None:
        self.commits: list[CommitEvent] = []
        self.joins: list[PeerEvent] = []
        self.leaves: list[PeerEvent] = []
        self.loaded: list[RoomInfo] = []
        self.unloaded: list[RoomInfo] = []
        self.hang = hang_first_commit
        self.hanging = asyncio.Event()

    async def on_commit(self, event: CommitEvent) -> None:
        if self.hang:
            self.hang = False
            self.hanging.set()
            await asyncio.sleep(3600)
        self.commits.append(event)

    async def on_join(self, event: PeerEvent) -> None:
        self.joins.append(event)

    async def on_leave(self, event: PeerEvent) -> None:
        self.leaves.append(event)

    async def on_room_loaded(self, event: RoomInfo) -> None:
        self.loaded.append(event)

    async def on_room_unloaded(self, event: RoomInfo) -> None:
        self.unloaded.append(event)


async def test_on_commit_sees_every_committed_seq_once_in_order(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    app = Recorder()
    async with running_server(tmp_path, app=app) as srv:
        writers = [(await hello(http, srv.ws_url("c")))[0] for _ in range(4)]

        async def write(k: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            for i in range(25):
                await ws.send_json(
                    {"type": "pack", "data": pack_data([ch(f"/w{k}/{i}", i + 1, i, f"a{k}")])}
                )
            for _ in range(25):
                await recv_type(ws, "ack")

        await asyncio.gather(*(write(k, ws) for k, ws in enumerate(writers)))
        await wait_until(lambda: sum(len(e.changes) for e in app.commits) == 100, timeout=10)
        seqs = [c.seq for e in app.commits for c in e.changes]
        assert seqs == list(range(1, 101))  # every seq once, in order
        assert all(e.first_seq == e.changes[0].seq and e.last_seq == e.changes[-1].seq
                   for e in app.commits)  # fmt: skip
        peers = {w.peer for w in app.joins}
        assert all(a in peers for e in app.commits for a in e.authors)
        assert {e.room for e in app.joins} == {"c"} and len(app.joins) == 4
        assert app.loaded[0].room == "c" and app.loaded[0].head == 0
        for ws in writers:
            await ws.close()
        await wait_until(lambda: len(app.leaves) == 4 and app.unloaded, timeout=10)
        assert app.unloaded[0].head == 100 and app.unloaded[0].entries == 100
        assert hook_count(srv, "on_commit", "ok") == len(app.commits)


async def test_a_hanging_hook_does_not_slow_delivery(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """on_commit hangs on its first call: broadcasts and acks go on as without it; the
    queued events run once it passes its budget."""

    async def latencies(srv: ServerHandle, room: str) -> list[float]:
        writer, _ = await hello(http, srv.ws_url(room))
        reader, _ = await hello(http, srv.ws_url(room))
        out = []
        for i in range(50):
            t0 = time.perf_counter()
            await writer.send_json({"type": "pack", "data": pack_data([ch(f"/k/{i}", i + 1, i)])})
            got = await next_pack(reader)
            out.append(time.perf_counter() - t0)
            assert [c.path for c in got] == [f"/k/{i}"]
            await recv_type(writer, "ack")
        await writer.close()
        await reader.close()
        return sorted(out)

    async with running_server(tmp_path / "plain") as srv:
        before = await latencies(srv, "h")
    app = Recorder(hang_first_commit=True)
    async with running_server(tmp_path / "hooked", app=app, app__event_budget_ms=2000) as srv:
        after = await latencies(srv, "h")
        assert app.hanging.is_set() and not app.commits  # still stuck in the first call
        await wait_until(lambda: len(app.commits) == 49, timeout=10)  # after its budget
        assert hook_count(srv, "on_commit", "timeout") == 1
    print(
        f"\nbroadcast latency p50/p95 ms without hooks {before[25] * 1e3:.2f}/"
        f"{before[47] * 1e3:.2f}, with a hanging on_commit {after[25] * 1e3:.2f}/"
        f"{after[47] * 1e3:.2f}"
    )


# -- loading -------------------------------------------------------------------------------


def test_load_app_errors_name_the_key() -> None:
    from roomsync.config import ConfigError
    from roomsync.server.hooks import AppHooks, load_app
    from roomsync.server.metrics import Metrics

    with pytest.raises(ConfigError, match="expected 'module:object'"):
        load_app("nocolon")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        load_app("roomsync.hooks:Missing")
    with pytest.raises(ConfigError, match="could not be built") as info:
        load_app("roomsync.hooks:JsonSchemaValidator", {"schemas": {"/x": {"type": 5}}})
    assert info.value.key == "app.options"
    assert isinstance(load_app("roomsync.hooks:JsonSchemaValidator", {"schemas": {}}),
                      JsonSchemaValidator)  # fmt: skip

    class Sync:
        def validate(self, pack: object) -> None:
            return None

    with pytest.raises(ConfigError, match="must be an async method"):
        AppHooks(Sync(), Metrics())


def test_serve_app_flag_loads_the_validator(tmp_path: Path) -> None:
    """``roomsync serve --app`` with the validator's schemas in the config file."""
    config = tmp_path / "roomsync.toml"
    config.write_text(
        '[app.options.schemas."/todos"]\ntype = "object"\nrequired = ["title"]\n',
        encoding="utf-8",
    )
    with server_process(
        tmp_path / "data",
        args=["--config", str(config), "--app", "roomsync.hooks:JsonSchemaValidator"],
    ) as proc:

        async def check() -> None:
            async with aiohttp.ClientSession() as http:
                ws, _ = await hello(http, proc.ws_url("t"))
                ack = await send_pack(
                    ws, [ch("/todos/1", 1, {"x": 1}), ch("/todos/2", 2, {"title": "a"})]
                )
                assert ack["seqs"] == [None, 1]
                assert ack["refused"][0]["code"] == "invalid-value"
                await ws.close()

        asyncio.run(check())
    assert proc.proc.stdout is not None


def test_serve_refuses_an_app_it_cannot_load(tmp_path: Path) -> None:
    import subprocess
    import sys

    from roomsync.testing.server import free_port

    out = subprocess.run(
        [sys.executable, "-m", "roomsync.cli.main", "serve", "--data-dir", str(tmp_path),
         "--port", str(free_port()), "--app", "no_such_module_xyz:App"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert "cannot start" in out.stderr and "no_such_module_xyz" in out.stderr
    assert "Traceback" not in out.stderr


async def test_the_sdk_sends_hello_fields_for_authorize(tmp_path: Path) -> None:
    from roomsync.client import connect as sdk_connect

    app = SessionAuth()
    async with running_server(tmp_path, dev=False, app=app) as srv:
        client = await sdk_connect(
            srv.url, "r", actor="alice#sdk", hello_fields={"session_id": "s-alice"}
        )
        try:
            assert app.seen[-1].fields["session_id"] == "s-alice"
            client.set_json("/from-sdk", 1)  # bound to the app's actor: alice#sdk may write
            await client.flush()
            assert srv.server.rooms.hosts["r"].state.durable_head == 1
            with pytest.raises(ValueError, match="protocol's own fields"):
                await sdk_connect(srv.url, "r", hello_fields={"token": "x"})
        finally:
            await client.close()


class Slow:
    async def validate(self, pack: ChangesContext) -> None:
        await asyncio.sleep(0.05)


async def test_a_peer_flooding_a_slow_validator_is_closed_and_others_go_on(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    from roomsync.server.rooms import MAX_VALIDATING_PACKS

    async with running_server(tmp_path, app=Slow()) as srv:
        flooder, _ = await hello(http, srv.ws_url("f"))
        honest, _ = await hello(http, srv.ws_url("f"))
        for i in range(MAX_VALIDATING_PACKS + 8):
            await flooder.send_json({"type": "pack", "data": pack_data([ch(f"/f/{i}", i + 1, i)])})
        seen, code = await closed(flooder, timeout=30)
        assert code == 1011
        assert any(m.get("type") == "error" and m["code"] == "overload" for m in seen)
        # What it queued before is still validated and committed (its acks went to a
        # closed connection: the SDK resends unacknowledged writes, LWW makes that safe).
        host = srv.server.rooms.hosts["f"]
        await wait_until(lambda: host.head >= MAX_VALIDATING_PACKS, timeout=20)
        ack = await send_pack(honest, [ch("/h", 1, "fine", actor="h")])
        assert ack["seqs"][0] is not None
        await honest.close()
