"""The client SDK against a real server (``running_server``): sync, reconnect, resync, auth."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roomsync.client import (
    Backoff,
    Change,
    ConnectError,
    ConnectionClosed,
    RefusedChange,
    RequestRefused,
    RoomClient,
    SupersededChange,
    connect,
    ws_url,
)
from roomsync.core.codec import pack_data
from roomsync.core.codes import CloseCode
from roomsync.core.mst import build_root
from roomsync.server.app import RoomsyncServer
from roomsync.server.rooms import RoomHost
from roomsync.testing import server as kit
from roomsync.testing import wsclient
from roomsync.testing.server import ServerHandle, running_server, wait_until
from roomsync.testing.tls import TlsFiles

ROOM = "room-1"
FAST = Backoff(base=0.01, factor=2, max=0.05)


class Gate:
    """A token provider the test can hold shut, to keep a client disconnected."""

    def __init__(self, srv: ServerHandle, *, ttl_s: int = 3600) -> None:
        self.srv = srv
        self.ttl_s = ttl_s
        self.calls = 0
        self.opened = asyncio.Event()
        self.opened.set()
        self.waiting = asyncio.Event()

    def close(self) -> None:
        self.opened.clear()
        self.waiting.clear()

    async def __call__(self) -> str:
        self.calls += 1
        if not self.opened.is_set():
            self.waiting.set()
            await self.opened.wait()
        return self.srv.mint(ttl_s=self.ttl_s)


def host(srv: ServerHandle, room: str = ROOM) -> RoomHost:
    return srv.server.rooms.hosts[room]


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with running_server(tmp_path) as handle:
        yield handle


async def open_client(srv: ServerHandle, **kwargs: Any) -> RoomClient:
    kwargs.setdefault("backoff", FAST)
    client = await asyncio.wait_for(connect(srv.url, kwargs.pop("room", ROOM), **kwargs), 10)
    await client.wait_synced(10)
    return client


# -- basics --------------------------------------------------------------------------------


def test_ws_url() -> None:
    assert ws_url("http://h:1", "r") == "ws://h:1/ws/r"
    assert ws_url("https://h/base/", "r") == "wss://h/base/ws/r"
    assert ws_url("ws://h:1/ws/r", "r") == "ws://h:1/ws/r"
    assert ws_url("wss://h:1", "r") == "wss://h:1/ws/r"
    with pytest.raises(ValueError):
        ws_url("ftp://h", "r")
    with pytest.raises(Exception, match="invalid room id"):
        ws_url("http://h", "bad room")


def test_backoff_is_jittered_and_capped() -> None:
    backoff = Backoff(base=0.1, factor=2, max=1.0)
    rng = random.Random(5)
    for attempt in range(10):
        cap = min(1.0, 0.1 * 2**attempt)
        delay = backoff.delay(attempt, rng)
        assert cap / 2 <= delay <= cap
    assert Backoff(base=0).delay(3, rng) == 0
    with pytest.raises(ValueError):
        Backoff(factor=0.5)


async def test_set_get_across_two_clients(srv: ServerHandle) -> None:
    a = await open_client(srv, actor="alice")
    b = await open_client(srv, actor="bob")
    try:
        stream = b.changes()
        change = a.set("/todos/1", b"milk")
        assert a.get("/todos/1") == b"milk"
        a.set_json("/todos/2", {"title": "eggs", "done": False})
        got = await asyncio.wait_for(stream.__anext__(), 5)
        assert got == change.with_seq(got.seq) and got.seq is not None
        await wait_until(lambda: b.get_json("/todos/2") is not None, timeout=5)
        assert b.get_json("/todos/2") == {"title": "eggs", "done": False}
        assert b.get("/todos/1") == b"milk"
        assert dict(b.items("/todos")) == dict(a.items())
        assert b.entry("/todos/1") is not None
        await a.flush(5)
        assert a.root == b.root == host(srv).state.root == await b.server_root()
        assert a.cursor == b.cursor == host(srv).state.head == 2
        assert a.session_info is not None and a.session_info.room == ROOM
        assert "write" in a.caps and a.pending == 0
        await stream.aclose()
    finally:
        await a.close()
        await b.close()


async def test_writes_of_one_turn_share_a_pack(srv: ServerHandle) -> None:
    a = await open_client(srv)
    try:
        before = (
            srv.server.metrics.registry.get_sample_value(
                "roomsync_messages_total", {"direction": "in", "type": "pack"}
            )
            or 0
        )
        for i in range(50):
            a.set(f"/k/{i}", b"v")
        await a.flush(5)
        after = srv.server.metrics.registry.get_sample_value(
            "roomsync_messages_total", {"direction": "in", "type": "pack"}
        )
        assert after == before + 1
        assert len(host(srv).state.entries) == 50
    finally:
        await a.close()


async def test_delete_propagates(srv: ServerHandle) -> None:
    a = await open_client(srv)
    b = await open_client(srv)
    try:
        seen: list[Change] = []
        b.on_change(seen.append)
        a.set("/x", b"1")
        await wait_until(lambda: b.get("/x") == b"1", timeout=5)
        a.delete("/x")
        assert a.get("/x") is None
        await wait_until(lambda: b.get("/x") is None, timeout=5)
        assert [c.value for c in seen] == [b"1", None]
        await a.flush(5)
        assert a.root == b.root == host(srv).state.root == build_root([])
    finally:
        await a.close()
        await b.close()


async def test_subscribe_filters_and_extends(srv: ServerHandle) -> None:
    a = await open_client(srv)
    b = await open_client(srv, subscribe=["/a"])
    try:
        a.set("/b/1", b"hidden")
        a.set("/a/1", b"shown")
        await a.flush(5)
        a.set("/a/2", b"last")
        await wait_until(lambda: b.get("/a/2") == b"last", timeout=5)
        assert b.get("/a/1") == b"shown"
        assert b.get("/b/1") is None
        await asyncio.wait_for(b.subscribe(["/a", "/b"]), 5)
        assert b.get("/b/1") == b"hidden"
        a.set("/b/2", b"live")
        await wait_until(lambda: b.get("/b/2") == b"live", timeout=5)
        await a.flush(5)
        await wait_until(lambda: b.root == a.root, timeout=5)
    finally:
        await a.close()
        await b.close()


async def test_flush_waits_for_every_ack(srv: ServerHandle) -> None:
    a = await open_client(srv)
    try:
        for i in range(20):
            a.set(f"/n/{i}", str(i).encode())
            await asyncio.sleep(0)  # several turns: several packs, one in flight at a time
        assert a.pending > 0
        await a.flush(5)
        assert a.pending == 0
        state = host(srv).state
        assert {p: c.value for p, c in state.entries.items()} == dict(a.items())
        assert a.cursor == state.head
    finally:
        await a.close()


async def test_refusals_are_surfaced_and_rolled_back(tmp_path: Path) -> None:
    async with running_server(tmp_path, policy__max_value_bytes=100) as srv:
        a = await open_client(srv)
        try:
            refused: list[RefusedChange] = []
            a.on_refused(refused.append)
            events: list[Change] = []
            a.on_change(events.append)
            a.set("/ok", b"small")
            big = a.set("/big", b"x" * 200)
            assert a.get("/big") == b"x" * 200  # optimistic
            await a.flush(5)
            assert [(r.change, r.code) for r in refused] == [(big, "too-large")]
            assert a.refused == refused
            assert a.get("/big") is None and a.get("/ok") == b"small"
            assert events[-1].path == "/big" and events[-1].value is None
            assert a.root == host(srv).state.root
        finally:
            await a.close()


async def test_rate_limited_packs_are_sent_again(tmp_path: Path) -> None:
    async with running_server(
        tmp_path,
        policy__rate_messages_per_s=5,
        policy__rate_burst_messages=3,
        policy__rate_grace_ms=60_000,
    ) as srv:
        a = await open_client(srv)
        try:
            for i in range(5):
                a.set(f"/r/{i}", b"v")
                await a.flush(10)  # one pack each
            assert a.refused == []
            assert srv.server.metrics.registry.get_sample_value("roomsync_rate_limited_total")
            assert {p for p, _ in a.items()} == {f"/r/{i}" for i in range(5)}
            assert a.root == host(srv).state.root and a.stats.welcomes == 1
        finally:
            await a.close()


async def test_heartbeat_pings_when_idle(tmp_path: Path) -> None:
    async with running_server(tmp_path, server__heartbeat_ms=100) as srv:
        a = await open_client(srv)
        try:

            def pings() -> float:
                value = srv.server.metrics.registry.get_sample_value(
                    "roomsync_messages_total", {"direction": "in", "type": "ping"}
                )
                return value or 0

            await wait_until(lambda: pings() >= 3, timeout=5)
            assert a.stats.welcomes == 1 and a.connected.is_set()
        finally:
            await a.close()


async def test_close_ends_change_streams_and_calls_on_close(srv: ServerHandle) -> None:
    a = await open_client(srv)
    closed: list[ConnectionClosed] = []
    a.on_close(closed.append)
    stream = a.changes()
    a.set("/x", b"1")
    await a.close()
    assert [c.path async for c in stream] == ["/x"]
    assert [c.close_code for c in closed] == [1000]
    with pytest.raises(ConnectionClosed):
        a.set("/y", b"2")
    await a.close()  # idempotent


async def test_wss_with_an_ssl_context(tmp_path: Path, tls: TlsFiles) -> None:
    ctx = tls.client_ctx
    async with running_server(
        tmp_path, server__tls_cert=str(tls.cert), server__tls_key=str(tls.key)
    ) as srv:
        assert srv.url.startswith("https://")
        a = await open_client(srv, ssl=ctx)
        b = await open_client(srv, ssl=ctx)
        try:
            assert a.url.startswith("wss://")
            a.disconnect()
            a.set("/secure", b"1")
            await a.flush(10)
            await wait_until(lambda: b.get("/secure") == b"1", timeout=5)
            assert a.stats.welcomes == 2
        finally:
            await a.close()
            await b.close()


# -- connecting to a server that is not there ---------------------------------------------------


def free_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def retry_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "roomsync.client" and "cannot connect to" in r.getMessage()
    ]


async def test_connect_to_nothing_fails_within_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="roomsync.client")
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws/my-room"
    closed: list[ConnectionClosed] = []
    started = time.monotonic()
    with pytest.raises(ConnectError) as exc:
        # The outer bound only keeps a regression from hanging the suite.
        await asyncio.wait_for(
            connect(f"http://127.0.0.1:{port}", "my-room", backoff=FAST, connect_timeout_s=0.5),
            10,
        )
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3
    error = exc.value
    assert str(error).startswith(f"cannot connect to {url}: connection refused")
    assert (error.url, error.cause) == (url, "connection refused")
    assert error.attempts >= 2 and error.close_code == 1006
    assert isinstance(error, ConnectionClosed)  # `except ConnectionClosed` still catches it
    assert "running" in error.next_action and url in error.next_action
    logs = retry_logs(caplog)
    assert len(logs) >= 2
    assert all(r.levelno == logging.WARNING for r in logs)
    first = logs[0].getMessage()
    assert first.startswith(f"cannot connect to {url}: connection refused; retry 1 in ")
    assert first.endswith(" s")
    assert "retry 2 in " in logs[1].getMessage()
    assert not closed


async def test_connect_without_reconnect_fails_at_the_first_attempt() -> None:
    port = free_port()
    client = RoomClient(f"http://127.0.0.1:{port}", ROOM, reconnect=False)
    closed: list[ConnectionClosed] = []
    client.on_close(closed.append)
    with pytest.raises(ConnectError) as exc:
        await asyncio.wait_for(client.start(), 10)
    assert exc.value.attempts == 1 and "connection refused" in str(exc.value)
    assert client.stats.attempts == 1
    assert [type(c) for c in closed] == [ConnectError]  # on_close hears the same story
    with pytest.raises(ConnectError):
        client.set("/x", b"1")


def test_connect_timeout_is_validated() -> None:
    with pytest.raises(ValueError, match="connect_timeout_s"):
        RoomClient("http://127.0.0.1:1", ROOM, connect_timeout_s=0)


async def test_connect_keeps_trying_until_the_server_is_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="roomsync.client")
    port = free_port()
    client = RoomClient(f"http://127.0.0.1:{port}", ROOM, backoff=FAST, connect_timeout_s=30)
    task = asyncio.create_task(client.start())
    server = RoomsyncServer(kit.test_settings(tmp_path))
    try:
        await wait_until(lambda: len(retry_logs(caplog)) >= 2, timeout=10)
        assert not task.done()
        await server.start("127.0.0.1", port)
        await asyncio.wait_for(task, 10)
        assert client.stats.welcomes == 1 and client.stats.attempts >= 3
    finally:
        await client.close()
        await server.stop()


async def test_a_wrong_url_is_named_in_the_error(srv: ServerHandle) -> None:
    with pytest.raises(ConnectError) as exc:
        await asyncio.wait_for(connect(srv.url + "/nope", ROOM, connect_timeout_s=0.3), 10)
    assert exc.value.url == f"ws://127.0.0.1:{srv.port}/nope/ws/{ROOM}"
    assert exc.value.cause.startswith("HTTP 404 on the WebSocket upgrade")


async def test_an_untrusted_certificate_is_named_in_the_error(
    tmp_path: Path, tls: TlsFiles
) -> None:
    async with running_server(
        tmp_path, server__tls_cert=str(tls.cert), server__tls_key=str(tls.key)
    ) as srv:
        with pytest.raises(ConnectError) as exc:  # no ssl= context: the test CA is unknown
            await asyncio.wait_for(connect(srv.url, ROOM, connect_timeout_s=0.3), 10)
        assert exc.value.url.startswith("wss://")
        assert exc.value.cause.startswith("TLS certificate rejected: ")


async def test_a_server_refusing_every_attempt_is_named_in_the_error(tmp_path: Path) -> None:
    async with running_server(tmp_path, server__max_connections=1) as srv:
        a = await open_client(srv)
        try:
            with pytest.raises(ConnectError) as exc:
                await asyncio.wait_for(
                    connect(srv.url, ROOM, backoff=FAST, connect_timeout_s=0.5), 10
                )
            assert exc.value.close_code == 1011 and exc.value.error_code == "overload"
            assert exc.value.cause.startswith("closed before welcome with code 1011 (overload: ")
        finally:
            await a.close()


# -- reconnect, resume, offline -----------------------------------------------------------------


async def test_reconnects_after_the_server_drops_the_socket(srv: ServerHandle) -> None:
    a = await open_client(srv)
    b = await open_client(srv)
    try:
        a.set("/before", b"1")
        await a.flush(5)
        for conn in list(srv.server.connections):
            conn.close(
                int(CloseCode.RESTARTING),
                {"type": "error", "code": "draining", "message": "test restart"},
            )
        await wait_until(lambda: a.stats.welcomes == 2 and b.stats.welcomes == 2, timeout=10)
        await a.wait_synced(5)
        a.set("/after", b"2")
        await wait_until(lambda: b.get("/after") == b"2", timeout=5)
        assert (1012, "draining") in a.stats.closes
        assert a.stats.waits[0].close_code == 1012
    finally:
        await a.close()
        await b.close()


async def test_offline_writes_are_sent_after_reconnect(srv: ServerHandle) -> None:
    gate = Gate(srv)
    a = await open_client(srv, token_provider=gate)
    b = await open_client(srv)
    try:
        gate.close()
        a.disconnect()
        await asyncio.wait_for(gate.waiting.wait(), 5)
        assert not a.connected.is_set()
        first = a.set("/offline/1", b"1")
        a.set("/offline/2", b"2")
        a.delete("/offline/1")
        assert a.pending == 2  # the delete replaced the unsent write of /offline/1
        assert a.get("/offline/1") is None and first.value == b"1"
        gate.opened.set()
        await a.flush(10)
        await wait_until(lambda: b.get("/offline/2") == b"2", timeout=5)
        assert b.get("/offline/1") is None
        assert gate.calls >= 2
    finally:
        await a.close()
        await b.close()


async def test_resume_from_cursor_receives_only_missed_changes(srv: ServerHandle) -> None:
    gate = Gate(srv)
    a = await open_client(srv)
    b = await open_client(srv, token_provider=gate)
    try:
        for i in range(10):
            a.set(f"/old/{i}", b"o")
        await a.flush(5)
        await wait_until(lambda: b.cursor == 10, timeout=5)
        gate.close()
        b.disconnect()
        await asyncio.wait_for(gate.waiting.wait(), 5)
        a.set("/new/1", b"n")
        a.set("/old/3", b"changed")
        a.delete("/old/4")
        await a.flush(5)
        gate.opened.set()
        await wait_until(lambda: b.stats.welcomes == 2, timeout=5)
        await b.wait_synced(5)
        assert b.stats.last_catchup_changes == 3
        assert b.get("/new/1") == b"n" and b.get("/old/3") == b"changed"
        assert b.get("/old/4") is None
        assert b.root == a.root and b.cursor == 13
    finally:
        await a.close()
        await b.close()


async def test_restart_on_the_same_port_and_data_dir(tmp_path: Path) -> None:
    settings = kit.test_settings(tmp_path)
    server = RoomsyncServer(settings)
    await server.start("127.0.0.1", 0)
    port = server.port
    url = f"http://127.0.0.1:{port}"
    a = await asyncio.wait_for(connect(url, ROOM, backoff=FAST), 10)
    try:
        a.set("/x", b"1")
        await a.flush(5)
        await server.stop()
        await wait_until(lambda: not a.connected.is_set(), timeout=5)
        a.set("/while-down", b"2")  # offline queue
        server = RoomsyncServer(kit.test_settings(tmp_path))
        await server.start("127.0.0.1", port)
        await a.flush(15)
        assert a.stats.welcomes == 2 and a.cursor == 2
        assert server.rooms.hosts[ROOM].state.root == a.root
    finally:
        await a.close()
        await server.stop()


async def test_after_a_welcome_reconnecting_outlasts_the_connect_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="roomsync.client")
    server = RoomsyncServer(kit.test_settings(tmp_path))
    await server.start("127.0.0.1", 0)
    port = server.port
    a = await asyncio.wait_for(
        connect(f"http://127.0.0.1:{port}", ROOM, backoff=FAST, connect_timeout_s=0.2), 10
    )
    stopped: list[ConnectionClosed] = []
    a.on_close(stopped.append)
    try:
        await server.stop()
        down = time.monotonic()
        # Down for longer than connect_timeout_s, with several failed attempts.
        await wait_until(
            lambda: time.monotonic() - down > 0.6 and len(a.stats.waits) >= 4, timeout=10
        )
        assert not stopped and not a.connected.is_set()  # still trying, not stopped
        retries = [
            r.getMessage()
            for r in caplog.records
            if r.name == "roomsync.client" and "reconnect attempt" in r.getMessage()
        ]
        assert len(retries) >= 4 and "reconnect attempt 2 in " in retries[1]
        a.set("/while-down", b"1")
        server = RoomsyncServer(kit.test_settings(tmp_path))
        await server.start("127.0.0.1", port)
        await a.flush(15)
        assert a.stats.welcomes == 2
        assert server.rooms.hosts[ROOM].state.entries["/while-down"].value == b"1"
    finally:
        await a.close()
        await server.stop()


# -- resync (4001) ------------------------------------------------------------------------------


@pytest.mark.parametrize("caps", [None, ("read", "write")], ids=["reconcile", "full-catchup"])
async def test_4001_full_resync(tmp_path: Path, caps: tuple[str, ...] | None) -> None:
    async with running_server(tmp_path, policy__retention_changes=1) as srv:
        gate = Gate(srv)
        a = await open_client(srv)
        b = await open_client(srv, token_provider=gate, caps=caps)
        try:
            a.set("/keep", b"1")
            for i in range(5):
                a.set(f"/del/{i}", b"d")
            await a.flush(5)
            await wait_until(lambda: b.cursor == 6, timeout=5)
            gate.close()
            b.disconnect()
            await asyncio.wait_for(gate.waiting.wait(), 5)
            b.set("/offline", b"b")  # an unacknowledged write must survive the resync
            a.set("/keep", b"2")
            for i in range(5):
                a.delete(f"/del/{i}")
            for i in range(1100):
                a.set(f"/fill/{i}", b"f")
            await a.flush(10)
            await wait_until(lambda: host(srv).state.compacted_through > b.cursor, timeout=10)
            assert not any(p.startswith("/del/") for p in host(srv).state.entries)
            gate.opened.set()
            await b.flush(10)
            await wait_until(
                lambda: (4001, "resync-required") in b.stats.closes and b.connected.is_set(),
                timeout=10,
            )
            await b.wait_synced(10)
            await a.flush(5)
            await wait_until(lambda: a.root == b.root == host(srv).state.root, timeout=10)
            assert (4001, "resync-required") in b.stats.closes
            assert b.stats.resyncs == 1
            assert b.stats.reconciles == (1 if caps is None else 0)
            assert b.get("/keep") == b"2" and a.get("/offline") == b"b"
            assert not any(p.startswith("/del/") for p, _ in b.items())
            assert b.cursor >= host(srv).state.compacted_through
        finally:
            await a.close()
            await b.close()


async def test_reconcile_on_demand(srv: ServerHandle) -> None:
    a = await open_client(srv)
    b = await open_client(srv, caps=["read", "write"])
    try:
        a.set("/x", b"1")
        await a.flush(5)
        result = await asyncio.wait_for(a.reconcile(), 5)
        assert result.complete and result.pull == () and result.push == ()
        with pytest.raises(RequestRefused) as refused:
            await asyncio.wait_for(b.reconcile(), 5)
        assert refused.value.error["code"] == "forbidden"
        assert b.connected.is_set()  # the session survives
    finally:
        await a.close()
        await b.close()


def _messages_in(srv: ServerHandle, type_: str) -> float:
    value = srv.server.metrics.registry.get_sample_value(
        "roomsync_messages_total", {"direction": "in", "type": type_}
    )
    return value or 0


def _diverge(client: RoomClient, paths: list[str]) -> None:
    """Make the client's confirmed entries of ``paths`` stale, behind the server's back."""
    replica = client._replica._replica
    for path in paths:
        entry = replica.entries[path]
        replica._set(Change(path, entry.ts - 1, 0, "stale", b"old", entry.seq))


async def test_reconcile_is_batched_by_default(srv: ServerHandle) -> None:
    a = await open_client(srv)
    try:
        for i in range(300):
            a.set(f"/k/{i}", f"v{i}".encode())
        await a.flush(5)
        _diverge(a, ["/k/7", "/k/150", "/k/299"])
        seen: list[str] = []
        a._replica.changed.add(lambda c: seen.append(c.path))
        probes, gets = _messages_in(srv, "mst-probe"), _messages_in(srv, "mst-get")
        result = await asyncio.wait_for(a.reconcile(), 5)
        assert result.complete and sorted(c.path for c in result.entries) == [
            "/k/150",
            "/k/299",
            "/k/7",
        ]
        assert a.root == host(srv).state.root and a.get("/k/7") == b"v7"
        assert sorted(seen) == ["/k/150", "/k/299", "/k/7"]  # listeners heard it
        assert _messages_in(srv, "mst-probe") > probes and _messages_in(srv, "mst-get") == gets
    finally:
        await a.close()


async def test_reconcile_falls_back_to_mst_get_on_an_older_server(
    srv: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from roomsync.core import codec

    parsers = dict(codec._CLIENT_PARSERS)
    del parsers["mst-probe"]  # the server answers unknown-type, as one before it would
    monkeypatch.setattr(codec, "_CLIENT_PARSERS", parsers)
    a = await open_client(srv)
    try:
        for i in range(50):
            a.set(f"/k/{i}", b"v")
        await a.flush(5)
        _diverge(a, ["/k/3"])
        result = await asyncio.wait_for(a.reconcile(), 5)
        assert result.complete and result.differing == ("/k/3",)
        assert a.root == host(srv).state.root and a.get("/k/3") == b"v"
        assert a._reconciler.batched is False and a.connected.is_set()
    finally:
        await a.close()


# -- auth and terminal closes ---------------------------------------------------------------


async def test_4002_calls_the_token_provider_and_reconnects(srv: ServerHandle) -> None:
    gate = Gate(srv, ttl_s=1)
    a = await open_client(srv, token_provider=gate)
    try:
        await wait_until(lambda: a.stats.welcomes >= 2, timeout=5)
        assert (4002, "auth") in a.stats.closes
        assert gate.calls >= 2 and a.stats.token_refreshes == gate.calls
        await a.wait_synced(5)
        a.set("/still", b"works")
        await a.flush(5)
    finally:
        await a.close()


async def test_4002_without_provider_stops(srv: ServerHandle) -> None:
    closed: list[ConnectionClosed] = []
    a = await open_client(srv, token=srv.mint(ttl_s=2))  # expires in (1, 2] s
    a.on_close(closed.append)
    stream = a.changes()
    try:
        await wait_until(lambda: bool(closed), timeout=5)
        assert closed[0].close_code == 4002 and closed[0].error_code == "auth"
        with pytest.raises(ConnectionClosed) as exc:
            await asyncio.wait_for(stream.__anext__(), 5)
        assert exc.value.close_code == 4002
        with pytest.raises(ConnectionClosed):
            a.set("/x", b"1")
    finally:
        await a.close()


async def test_4003_forbidden_is_raised_by_connect(srv: ServerHandle) -> None:
    with pytest.raises(ConnectionClosed) as exc:
        await asyncio.wait_for(connect(srv.url, ROOM, token=srv.mint(room="other")), 10)
    assert exc.value.close_code == 4003
    assert exc.value.error_code == "auth"
    assert "not valid for room" in str(exc.value)
    assert "token" in exc.value.next_action


async def test_4004_room_closed_stops_and_fails_flush(srv: ServerHandle) -> None:
    a = await open_client(srv)
    closed: list[ConnectionClosed] = []
    a.on_close(closed.append)
    try:
        a.set("/x", b"1")  # still unsent when the room closes: flush cannot complete
        host(srv).close_all(CloseCode.ROOM_CLOSED, "room-closed", "room closed by the operator")
        with pytest.raises(ConnectionClosed) as exc:
            await a.flush(5)
        assert exc.value.close_code == 4004 and exc.value.error_code == "room-closed"
        assert [c.close_code for c in closed] == [4004]
        assert a.stats.attempts == 1
    finally:
        await a.close()


async def test_no_reconnect_stops_at_the_first_close(srv: ServerHandle) -> None:
    a = await open_client(srv, reconnect=False)
    closed: list[ConnectionClosed] = []
    a.on_close(closed.append)
    try:
        for conn in list(srv.server.connections):
            conn.close(int(CloseCode.RESTARTING), None)
        await wait_until(lambda: bool(closed), timeout=5)
        assert closed[0].close_code == 1012
        assert a.stats.attempts == 1
    finally:
        await a.close()


async def test_overload_retry_hint_is_honoured(tmp_path: Path) -> None:
    async with running_server(tmp_path, server__max_connections=1) as srv:
        a = await open_client(srv)
        tiny = Backoff(base=0.001, factor=1, max=0.001)
        b = RoomClient(srv.url, ROOM, backoff=tiny, rng=random.Random(1))
        started = time.monotonic()
        task = asyncio.create_task(b.start())
        try:
            await wait_until(lambda: len(b.stats.waits) >= 2, timeout=10)
            await a.close()
            await asyncio.wait_for(task, 10)
            elapsed = time.monotonic() - started
            overloads = [w for w in b.stats.waits if w.error_code == "overload"]
            assert len(overloads) >= 2
            for wait in overloads:
                assert wait.retry_after_ms is not None and wait.retry_after_ms >= 500
                assert wait.delay >= wait.retry_after_ms / 1000
                assert wait.close_code == 1011
            assert elapsed >= sum(w.retry_after_ms or 0 for w in overloads[:2]) / 1000
            assert b.connected.is_set()
        finally:
            await b.close()


# -- LWW against a future-stamped writer ---------------------------------------------------------


async def write_ahead(srv: ServerHandle, path: str, value: bytes, ahead_ms: int = 59_000) -> int:
    """A raw peer (no SDK) writes ``path`` stamped ``ahead_ms`` in the future; its seq."""
    async with aiohttp.ClientSession() as http:
        ws, _ = await wsclient.hello(http, srv.ws_url(ROOM))
        try:
            ts = int(time.time() * 1000) + ahead_ms
            change = Change(path, ts, 0, "ahead", value)
            await ws.send_json({"type": "pack", "data": pack_data([change])})
            ack = await wsclient.recv_type(ws, "ack")
        finally:
            await ws.close()
    seq = ack["seqs"][0]
    assert isinstance(seq, int), ack
    return seq


def server_value(srv: ServerHandle, path: str) -> bytes | None:
    return host(srv).state.entries[path].value


async def test_next_write_after_a_future_stamped_one_wins(srv: ServerHandle) -> None:
    await write_ahead(srv, "/x", b"ahead")
    a = await open_client(srv)  # its catch-up carries the future-stamped entry
    watcher = await open_client(srv)
    try:
        assert a.get("/x") == b"ahead"
        mine = a.set("/x", b"honest")
        await a.flush(5)
        assert server_value(srv, "/x") == b"honest"
        assert mine.ts >= host(srv).state.entries["/x"].ts
        await wait_until(lambda: watcher.get("/x") == b"honest", timeout=5)
        assert a.root == host(srv).state.root == watcher.root
        assert a.stats.superseded == 0
    finally:
        await a.close()
        await watcher.close()


async def test_next_write_after_a_future_stamped_broadcast_wins(srv: ServerHandle) -> None:
    a = await open_client(srv)
    try:
        await write_ahead(srv, "/x", b"ahead")
        await wait_until(lambda: a.get("/x") == b"ahead", timeout=5)
        a.set("/x", b"honest")
        await a.flush(5)
        assert server_value(srv, "/x") == b"honest" and a.root == host(srv).state.root
    finally:
        await a.close()


async def test_a_write_lost_to_a_future_stamp_is_reported_and_converges(
    srv: ServerHandle,
) -> None:
    """Written offline, before the future-stamped write was seen: it loses LWW. The SDK
    says so, shows the server's entry, and the next write wins."""
    gate = Gate(srv)
    a = await open_client(srv, token_provider=gate)
    try:
        lost: list[SupersededChange] = []
        a.on_superseded(lost.append)
        gate.close()
        a.disconnect()
        await asyncio.wait_for(gate.waiting.wait(), 5)
        mine = a.set("/x", b"honest")  # stamped now: before the other write
        seq = await write_ahead(srv, "/x", b"ahead")
        gate.opened.set()
        await a.flush(10)
        assert lost == [SupersededChange(mine, seq)] and a.stats.superseded == 1
        assert a.get("/x") == b"ahead" == server_value(srv, "/x")
        assert a.root == host(srv).state.root
        a.set("/x", b"honest again")
        await a.flush(5)
        assert server_value(srv, "/x") == b"honest again" and a.stats.superseded == 1
    finally:
        await a.close()


async def test_a_write_outside_the_subscription_converges_to_its_winner(
    srv: ServerHandle,
) -> None:
    """No broadcast or catch-up brings the winner of a path outside the subscription:
    the SDK fetches it, so the replica shows the server's entry and its clock moves."""
    seq = await write_ahead(srv, "/x", b"ahead")
    a = await open_client(srv, subscribe=["/mine"])
    try:
        assert a.entry("/x") is None
        a.set("/x", b"honest")
        await a.flush(5)
        assert a.stats.superseded == 1
        entry = a.entry("/x")
        assert entry is not None and (entry.value, entry.seq) == (b"ahead", seq)
        a.set("/x", b"honest again")
        await a.flush(5)
        assert server_value(srv, "/x") == b"honest again"
        assert a.get("/x") == b"honest again"
    finally:
        await a.close()
