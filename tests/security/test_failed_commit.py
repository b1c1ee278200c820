"""A failed commit leaks nothing (issue 9, items 2 and 8; SPEC §2 "acked = durable").

Invariant under test: no peer ever receives a change the store does not hold, and no seq
is ever given to two different changes. Before the fix, broadcast went out before the
commit: a reader held the failed change with its seq, and after the store recovered that
seq went to another change, which the reader (resuming from its cursor) never received.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from roomsync.core.codec import pack_data, unpack_data
from roomsync.core.entries import Change
from roomsync.storage.sqlite import SqliteStore
from roomsync.testing.faults import FaultyStore
from roomsync.testing.rawws import RawWebSocket
from roomsync.testing.server import running_server, wait_until
from roomsync.testing.server import test_settings as settings_for
from roomsync.testing.wsclient import closed, hello, recv_type


def ch(path: str, value: bytes, actor: str = "w", counter: int = 0) -> Change:
    return Change(path, int(time.time() * 1000), counter, actor, value)


async def test_failed_commit_is_never_broadcast_and_its_seq_is_not_reused_silently(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    faulty = FaultyStore(SqliteStore(tmp_path / "roomsync.db"))
    async with running_server(tmp_path, store=faulty.as_store()) as srv:
        writer, _ = await hello(http, srv.ws_url("r"), actor="w")
        reader, _ = await hello(http, srv.ws_url("r"), actor="r")
        await writer.send_json({"type": "pack", "data": pack_data([ch("/a", b"1")])})
        assert (await recv_type(writer, "ack"))["seqs"] == [1]
        first = await recv_type(reader, "pack")
        assert [c.seq for c in unpack_data(first["data"])] == [1]

        faulty.fail_appends(1)
        await writer.send_json({"type": "pack", "data": pack_data([ch("/phantom", b"x")])})
        seen_w, code_w = await closed(writer)
        seen_r, code_r = await closed(reader)
        ack = next(m for m in seen_w if m["type"] == "ack")
        assert ack["seqs"] == [None] and ack["refused"][0]["code"] == "internal"
        assert code_w == 1011 and code_r == 1011
        # The reader got the error (retryable overload), never the phantom change.
        assert [m["type"] for m in seen_r] == ["error"]
        assert seen_r[0]["code"] == "overload" and "retry_after_ms" in seen_r[0]

        # The store works again; the next change takes seq 2, which no peer ever saw.
        again, welcome = await hello(http, srv.ws_url("r"), actor="w", cursor=1)
        assert welcome["head"] == 1
        await again.send_json({"type": "pack", "data": pack_data([ch("/real", b"2")])})
        assert (await recv_type(again, "ack"))["seqs"] == [2]
        back, _ = await hello(http, srv.ws_url("r"), actor="r", catchup=False, cursor=1)
        await back.send_json({"type": "request", "since": 1})
        answer = await recv_type(back, "pack")
        assert [(c.path, c.seq) for c in unpack_data(answer["data"])] == [("/real", 2)]
        loaded = await srv.server.store.load_room("r", now_ms=0)
        assert sorted(c.path for c in loaded.entries) == ["/a", "/real"]


async def test_a_peer_joining_during_a_failing_commit_never_sees_it(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Catch-up, request and subscribe answers read the durable view: a change that is
    applied but not committed is in none of them."""
    faulty = FaultyStore(SqliteStore(tmp_path / "roomsync.db"))
    async with running_server(tmp_path, store=faulty.as_store()) as srv:
        writer, _ = await hello(http, srv.ws_url("r"), actor="w")
        await writer.send_json({"type": "pack", "data": pack_data([ch("/a", b"1")])})
        await recv_type(writer, "ack")
        host = srv.server.rooms.hosts["r"]
        # Hold the next commit open: the change is applied (pending) but not durable.
        gate = faulty.hold_appends()
        faulty.fail_appends(1)
        await writer.send_json(
            {"type": "pack", "data": pack_data([ch("/a", b"pending", counter=1)])}
        )
        await wait_until(lambda: host.state.pending, timeout=5)
        joiner, welcome = await hello(http, srv.ws_url("r"), actor="j")
        assert welcome["head"] == 1  # the durable head, not the pending one
        await joiner.send_json({"type": "request", "paths": ["/a"]})
        answer = await recv_type(joiner, "pack")
        assert [(c.seq, c.value) for c in unpack_data(answer["data"])] == [(1, b"1")]
        gate.set()
        seen, code = await closed(joiner)
        assert code == 1011 and all(m["type"] != "pack" for m in seen)


async def test_after_a_store_failure_new_hellos_are_welcome_not_room_closed(
    tmp_path: Path,
) -> None:
    """Item 8: a peer that never answers our CLOSE used to keep the failed room loaded
    for 5 s, and every new hello got 4004 room-closed (which the SDK treats as final)."""
    faulty = FaultyStore(SqliteStore(tmp_path / "roomsync.db"))
    async with running_server(tmp_path, store=faulty.as_store()) as srv:
        silent = await RawWebSocket.open(srv.host, srv.port, "/ws/r")
        await silent.send_json({"type": "hello", "v": 1, "actor": "s"})
        assert (await silent.read_frame()).json()["type"] == "welcome"
        writer = await RawWebSocket.open(srv.host, srv.port, "/ws/r")
        await writer.send_json({"type": "hello", "v": 1, "actor": "w"})
        assert (await writer.read_frame()).json()["type"] == "welcome"
        faulty.fail_appends(1)
        await writer.send_json({"type": "pack", "data": pack_data([ch("/x", b"1")])})
        _, code = await writer.until_close()
        assert code == 1011
        # `silent` never reads nor answers its CLOSE; a new peer is welcome at once.
        async with aiohttp.ClientSession() as http:
            fresh, welcome = await hello(http, srv.ws_url("r"), actor="n")
            assert welcome["type"] == "welcome"
            await fresh.send_json({"type": "pack", "data": pack_data([ch("/y", b"2")])})
            assert (await recv_type(fresh, "ack"))["seqs"] == [1]
        await silent.close()
        await writer.close()


async def test_full_disk_on_tmpfs_leaks_no_phantom(
    tmp_path: Path, http: aiohttp.ClientSession, small_tmpfs: Path
) -> None:
    """The probe's scenario on a real full disk: 1 KB values until the store refuses."""
    settings = settings_for(small_tmpfs)
    async with running_server(small_tmpfs, settings=settings) as srv:
        writer, _ = await hello(http, srv.ws_url("r"), actor="w")
        reader, _ = await hello(http, srv.ws_url("r"), actor="r")
        received: dict[int, Change] = {}
        acked: dict[int, Change] = {}
        refused = False
        for i in range(20_000):
            value = (b"%05d" % i) * 205  # 1 KB
            await writer.send_json({"type": "pack", "data": pack_data([ch(f"/k/{i}", value)])})
            msg = await recv_type(writer, "ack", timeout=30)
            if msg["seqs"] == [None]:
                assert msg["refused"][0]["code"] == "internal"
                refused = True
                break
            acked[msg["seqs"][0]] = ch(f"/k/{i}", value)
        assert refused, "the 3 MiB tmpfs never filled up"
        # Everything the reader got before the close was acked (so it is stored).
        seen, _ = await closed(reader, timeout=30)
        for m in seen:
            if m["type"] == "pack":
                for c in unpack_data(m["data"]):
                    received[c.seq or 0] = c
        assert set(received) <= set(acked)
        loaded = await srv.server.store.changes_since("r", 0, limit=1_000_000)
        stored = {c.seq: c.path for c in loaded}
        assert {s: c.path for s, c in received.items()} == {s: stored[s] for s in received}


async def test_a_store_failure_in_a_blob_path_is_logged_and_retryable(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """StoreError is an InternalError now: the peer gets overload + retry_after_ms (never
    the store's message, which may name files), the log gets the cause."""
    import base64
    import hashlib
    import logging

    caplog.set_level(logging.ERROR, logger="roomsync")
    faulty = FaultyStore(SqliteStore(tmp_path / "roomsync.db"))
    async with running_server(tmp_path, store=faulty.as_store()) as srv:
        ws, _ = await hello(http, srv.ws_url("r"), actor="u")
        data = b"blob bytes"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        faulty.fail_method("add_blob_ref", message="disk I/O error at /var/secret/db")
        await ws.send_json(
            {
                "type": "blob-upload",
                "hash": digest,
                "size": len(data),
                "data": base64.b64encode(data).decode(),
            }
        )
        seen, code = await closed(ws)
        error = seen[-1]
        assert code == 1011 and error["code"] == "overload" and "retry_after_ms" in error
        assert "/var/secret" not in error["message"]
        assert any(
            "disk I/O error" in r.getMessage() or "disk I/O error" in str(getattr(r, "fields", ""))
            for r in caplog.records
        )


async def test_an_sdk_write_refused_by_a_failed_commit_is_sent_again(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The refusal of a failed commit carries ``retry_after_ms`` and the SDK sends the
    write again after reconnecting, instead of rolling it back (found by the reliability
    suite's full-disk scenario: every SDK write of that moment was lost)."""
    from roomsync.client import Backoff, connect

    faulty = FaultyStore(SqliteStore(tmp_path / "roomsync.db"))
    async with running_server(tmp_path, store=faulty.as_store()) as srv:
        raw, _ = await hello(http, srv.ws_url("r"), actor="raw")
        faulty.fail_appends(1)
        await raw.send_json({"type": "pack", "data": pack_data([ch("/raw", b"x", actor="raw")])})
        seen, _ = await closed(raw)
        ack = next(m for m in seen if m["type"] == "ack")
        assert ack["refused"][0]["code"] == "internal"
        assert ack["refused"][0]["retry_after_ms"] > 0
        client = await connect(srv.url, "r", actor="app", backoff=Backoff(0.01, 2, 0.1))
        try:
            faulty.fail_appends(1)
            client.set("/doc", b"kept")
            await client.flush(timeout=20)
            assert client.refused == [] and client.get("/doc") == b"kept"
            assert faulty.failed_appends == 2
            loaded = await srv.server.store.load_room("r", now_ms=0)
            assert {c.path: c.value for c in loaded.entries} == {"/doc": b"kept"}
        finally:
            await client.close()
