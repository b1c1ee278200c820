"""Hostile input that used to get past the envelope checks (issue 9, items 9 and 11).

- JSON nested past the decoder's depth raised an uncaught ``RecursionError``: ``internal``
  + 1011 and a traceback per frame. Now: ``expected-hello`` (first frame) or
  ``malformed-envelope``, 1002.
- A change's ``actor`` was not tied to the token: a token for ``alice`` wrote changes
  readers saw as ``bob``. Now a session with a token writes as its ``sub`` or
  ``sub#<suffix>``; anything else is refused ``forbidden``.
- A change that loses LWW to a newer entry is acked with the winner's seq and listed in
  ``superseded``, so the writer knows plainly that it lost.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from roomsync.core.codec import pack_data, unpack_data
from roomsync.core.entries import Change
from roomsync.testing.server import ServerHandle, running_server
from roomsync.testing.wsclient import closed, connect, hello, recv_type

DEEP = b"[" * 1100 + b"]" * 1100


async def test_deeply_nested_first_frame_is_expected_hello(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws = await connect(http, srv.ws_url("r"))
    await ws.send_str(b'{"type":"hello","v":1,"x":'.decode() + DEEP.decode() + "}")
    seen, code = await closed(ws)
    assert code == 1002 and seen[-1]["code"] == "expected-hello"


@pytest.mark.parametrize(
    "frame", [DEEP, b'{"type":"presence","state":' + DEEP + b"}"], ids=["bare", "presence"]
)
async def test_deeply_nested_frame_after_welcome_is_malformed_envelope(
    srv: ServerHandle, http: aiohttp.ClientSession, frame: bytes
) -> None:
    ws, _ = await hello(http, srv.ws_url("r"))
    await ws.send_str(frame.decode())
    seen, code = await closed(ws)
    assert code == 1002 and seen[-1]["code"] == "malformed-envelope"
    closes = srv.server.metrics.registry.get_sample_value
    assert closes("roomsync_closes_total", {"code": "1002"}) == 1  # the close is counted
    assert closes("roomsync_closes_total", {"code": "1011"}) is None  # and no 1011 ever


async def test_nested_within_the_limit_is_a_plain_presence(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, srv.ws_url("r"))
    nested = "[" * 500 + "]" * 500
    await ws.send_str('{"type":"presence","state":' + nested + "}")
    await ws.send_json({"type": "ping"})
    assert (await recv_type(ws, "pong"))["type"] == "pong"


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_token_sessions_write_only_as_their_sub(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, dev=False) as srv:
        token = srv.mint("doc", ("read", "write"), actor="alice")
        ws, welcome = await hello(http, srv.ws_url("doc"), token=token, actor="alice#tab-1")
        assert welcome["actor"] == "alice#tab-1"
        await ws.send_json(
            {"type": "pack", "data": pack_data([Change("/x", now_ms(), 0, "bob", b"1")])}
        )
        error = await recv_type(ws, "error")  # the error goes out at once, the ack in order
        assert error["code"] == "forbidden" and "'bob'" in error["message"]
        ack = await recv_type(ws, "ack")
        assert ack["seqs"] == [] and ack["refused"][0]["code"] == "forbidden"
        for actor in ("alice", "alice#tab-1", "alice#phone"):
            await ws.send_json(
                {"type": "pack", "data": pack_data([Change(f"/{actor}", now_ms(), 0, actor, b"1")])}
            )
            assert None not in (await recv_type(ws, "ack"))["seqs"]
        for impostor in ("alicex", "alic", "bob#alice"):
            await ws.send_json(
                {"type": "pack", "data": pack_data([Change("/y", now_ms(), 0, impostor, b"1")])}
            )
            assert (await recv_type(ws, "ack"))["refused"][0]["code"] == "forbidden"
        # A hello asking for someone else's actor gets its sub instead.
        _, welcome = await hello(http, srv.ws_url("doc"), token=token, actor="mallory")
        assert welcome["actor"] == "alice"
        loaded = await srv.server.store.load_room("doc", now_ms=0)
        assert {c.actor for c in loaded.entries} == {"alice", "alice#tab-1", "alice#phone"}


async def test_a_write_that_loses_to_a_future_stamp_is_acked_as_superseded(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    cheat, _ = await hello(http, srv.ws_url("r"), actor="cheat")
    honest, _ = await hello(http, srv.ws_url("r"), actor="honest")
    await cheat.send_json(
        {"type": "pack", "data": pack_data([Change("/x", now_ms() + 59_000, 0, "cheat", b"c")])}
    )
    assert (await recv_type(cheat, "ack"))["seqs"] == [1]
    await recv_type(honest, "pack")
    change = Change("/x", now_ms(), 0, "honest", b"h")
    await honest.send_json({"type": "pack", "data": pack_data([change, change])})
    ack = await recv_type(honest, "ack")
    # Both copies lost to seq 1 (neither is the winning write itself): both are listed.
    assert ack["seqs"] == [1, 1]
    assert ack["superseded"] == [{"index": 0, "seq": 1}, {"index": 1, "seq": 1}]
    # Repeating the winning write itself is idempotent, not a loss.
    winner = unpack_data((await _request_paths(honest, ["/x"]))["data"])[0]
    await cheat.send_json({"type": "pack", "data": pack_data([winner.with_seq(None)])})
    ack = await recv_type(cheat, "ack")
    assert ack["seqs"] == [1] and "superseded" not in ack


async def _request_paths(ws: aiohttp.ClientWebSocketResponse, paths: list[str]) -> dict:
    await ws.send_json({"type": "request", "paths": paths})
    return await recv_type(ws, "pack")
