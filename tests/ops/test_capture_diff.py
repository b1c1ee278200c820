"""``roomsync capture diff`` (issue 12): the pure alignment of two peers' captured
streams, the receivers a broadcast record names, and a planted divergence found on a
real server (a peer whose subscription filtered a broadcast), through the CLI too."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roomsync.cli.main import main
from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.ops.capture_diff import diff, render, resolve_peer
from roomsync.server.capture import MAX_RECEIVER_IDS
from roomsync.testing.server import ServerHandle, running_server
from roomsync.testing.wsclient import hello, recv_type

# -- the pure alignment -------------------------------------------------------------------


def rec(at: int, dir: str, peer: str, type: str, **meta: Any) -> dict[str, Any]:
    return {"at": at, "dir": dir, "peer": peer, "type": type, "bytes": 10, **meta}


def joined(at: int, peer: str, actor: str, paths: int = 1) -> list[dict[str, Any]]:
    """A peer's hello, welcome and (empty) catch-up."""
    return [
        rec(at, "in", peer, "hello", v=1, actor=actor, paths=paths, anonymous=True),
        rec(at, "out", peer, "welcome", room="r", caps=["read", "write"], head=0),
        rec(at, "out", peer, "pack", changes=0, answer=True, done=True),
    ]


def broadcast(at: int, head: int, to: list[str], changes: int = 1) -> dict[str, Any]:
    return rec(at, "out", "*", "pack", changes=changes, head=head, receivers=len(to), to=to)


def test_identical_streams_do_not_diverge() -> None:
    records = [
        *joined(1, "p-a", "alice"),
        *joined(2, "p-b", "bob"),
        broadcast(10, 1, ["p-a", "p-b"]),
        rec(11, "in", "p-a", "request", since=0),
        rec(12, "out", "p-a", "pack", changes=1, answer=True, done=True),
        broadcast(13, 3, ["p-b", "p-a"], changes=2),
    ]
    result = diff(records, "alice", "bob", room="r")
    assert result.first is None and not result.diverged
    assert result.receivers_named and result.broadcasts == 2
    a, b = result.to_json()["peers"]
    assert (a["peer"], a["actor"], a["last_head"], a["broadcasts_received"]) == (
        "p-a", "alice", 3, 2,
    )  # fmt: skip
    assert (a["requests"], a["answered"], a["unanswered"]) == (1, 1, 0)
    assert b["broadcasts_missed"] == 0 and b["first_missing_seq"] is None
    assert "no divergence" in render(result)


def test_a_missed_broadcast_gives_the_first_missing_seq() -> None:
    records = [
        *joined(1, "p-a", "alice", paths=1),
        *joined(2, "p-b", "bob", paths=2),
        broadcast(10, 1, ["p-a", "p-b"]),
        broadcast(20, 4, ["p-a"], changes=3),  # seqs 2..4, bob's subscription filtered them
        broadcast(30, 6, ["p-a"], changes=2),
        broadcast(40, 7, ["p-a", "p-b"]),
    ]
    result = diff(records, "p-a", "p-b")
    first = result.first
    assert first is not None
    assert (first.kind, first.peer, first.other, first.head, first.first_seq) == (
        "missed-broadcast", "p-b", "p-a", 4, 2,
    )  # fmt: skip
    assert "subscription" in first.detail and "(2 prefix(es) vs 1)" in first.detail
    assert [d.head for d in result.divergences] == [4, 6]
    b = result.b
    assert (b.broadcasts_received, b.broadcasts_missed, b.first_missing_seq, b.last_head) == (
        2, 2, 2, 7,
    )  # fmt: skip
    text = render(result)
    assert "diverge at" in text and "seqs 2..4" in text and "first missing seq 2" in text


def test_no_divergence_before_a_peer_joined_or_after_it_left() -> None:
    records = [
        *joined(1, "p-a", "alice"),
        broadcast(5, 1, ["p-a"]),  # bob not there yet
        *joined(6, "p-b", "bob"),
        rec(7, "in", "p-b", "close", code=1000, bytes=2),
        broadcast(8, 2, ["p-a"]),  # bob gone
    ]
    result = diff(records, "alice", "bob")
    assert not result.diverged, result.divergences
    assert result.b.close == {"code": 1000, "by": "peer"}


def test_the_author_of_a_change_is_a_note_not_a_divergence() -> None:
    records = [
        *joined(1, "p-a", "alice"),
        *joined(2, "p-b", "bob"),
        rec(10, "in", "p-b", "pack", changes=1),
        broadcast(11, 1, ["p-a"]),  # bob wrote it: authors are not echoed
        rec(12, "out", "p-b", "ack", seqs=1),
    ]
    result = diff(records, "alice", "bob")
    assert not result.diverged
    assert any("own change" in n for n in result.notes)
    assert (result.b.packs_sent, result.b.changes_sent, result.b.acks) == (1, 1, 1)


def test_unanswered_requests_errors_refusals_and_closes() -> None:
    records = [
        *joined(1, "p-a", "alice"),
        *joined(2, "p-b", "bob"),
        rec(10, "in", "p-b", "request", paths=2),  # never answered
        rec(11, "in", "p-b", "mst-get", hashes=3),
        rec(12, "out", "p-b", "mst-nodes", nodes=3),
        rec(13, "in", "p-b", "blob-request", hash="sha256:aa"),
        rec(14, "out", "p-b", "error", code="not-found", ref="blob-request", hash="sha256:aa"),
        rec(15, "in", "p-a", "pack", changes=2),
        rec(16, "out", "p-a", "error", code="malformed-pack", ref="pack"),
        rec(17, "out", "p-a", "ack", seqs=0, refused=1),
        rec(18, "out", "p-b", "error", code="resync-required"),
        rec(19, "out", "p-b", "close", code=4001, error="resync-required", bytes=4),
    ]
    result = diff(records, "alice", "bob")
    kinds = [(d.kind, d.peer) for d in result.divergences]
    assert kinds == [
        ("unanswered", "p-b"),  # the request at 10, reported at its own time
        ("error", "p-b"),
        ("error", "p-a"),
        ("refused", "p-a"),
        ("error", "p-b"),
        ("close", "p-b"),
    ]
    unanswered = result.divergences[0]
    assert unanswered.type == "request" and "before it closed" in unanswered.detail
    assert (result.b.requests, result.b.answered, result.b.unanswered) == (3, 2, 1)
    assert result.b.errors == ["not-found", "resync-required"]
    assert result.b.close == {"code": 4001, "by": "server", "error": "resync-required"}
    assert (result.a.acks, result.a.refused, result.a.unanswered) == (1, 1, 0)  # acked
    assert result.to_json()["first"]["kind"] == "unanswered"


def test_broadcasts_without_named_receivers_are_not_guessed() -> None:
    records = [
        *joined(1, "p-a", "alice"),
        *joined(2, "p-b", "bob"),
        rec(10, "out", "*", "pack", changes=1, head=1, receivers=40),  # a big room
    ]
    result = diff(records, "alice", "bob")
    assert not result.diverged and not result.receivers_named
    assert any("do not name their receivers" in n for n in result.notes)


def test_resolve_peer_by_id_or_actor() -> None:
    records = [*joined(1, "p-1", "alice"), *joined(2, "p-2", "alice"), *joined(3, "p-3", "bob")]
    assert resolve_peer(records, "p-3") == ("p-3", [])
    peer, notes = resolve_peer(records, "alice")
    assert peer == "p-2" and "2 sessions" in notes[0]
    peer, notes = resolve_peer(records, "nobody")
    assert peer == "nobody" and "no peer id" in notes[0]
    result = diff(records, "alice", "nobody")
    assert result.b.records == 0 and "no records" in render(result)


# -- a real server: the receivers a broadcast names, a planted divergence -----------------


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with running_server(tmp_path, server__control_burst=1000) as handle:
        yield handle


async def capture(http: aiohttp.ClientSession, srv: ServerHandle, room: str) -> Any:
    token = srv.mint("*", ("room:capture",), actor="ops")
    async with http.post(
        f"{srv.url}/v1/control/room/capture",
        json={"room": room, "limit": 1000},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 200
        return (await resp.json())["result"]["envelopes"]


def write(path: str, ts: int) -> dict[str, Any]:
    return {"type": "pack", "data": pack_data([Change(path, ts, 0, "writer", b'"v"')])}


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


async def test_a_peer_whose_subscription_filtered_a_broadcast_is_found(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    healthy, wh = await hello(http, srv.ws_url("div"), actor="alice", subscribe=["/"])
    failing, wf = await hello(http, srv.ws_url("div"), actor="bob", subscribe=["/todos/"])
    writer, _ = await hello(http, srv.ws_url("div"), actor="writer")
    for ts, path in enumerate(["/todos/1", "/notes/1", "/todos/2"], start=1):
        await writer.send_json(write(path, ts))
        await recv_type(writer, "ack")
        assert (await recv_type(healthy, "pack"))["head"] == ts
    assert (await recv_type(failing, "pack"))["head"] == 1
    assert (await recv_type(failing, "pack"))["head"] == 3  # /notes/1 never came

    envelopes = await capture(http, srv, "div")
    # One record per subscription group's frame, each naming its receivers.
    received: dict[int, set[str]] = {}
    for e in envelopes:
        if e["peer"] == "*" and e["type"] == "pack":
            assert e["receivers"] == len(e["to"]) == 1
            received.setdefault(e["head"], set()).update(e["to"])
    both = {wh["peer"], wf["peer"]}
    assert received == {1: both, 2: {wh["peer"]}, 3: both}
    result = diff(envelopes, "alice", "bob", room="div")
    first = result.first
    assert first is not None, render(result)
    assert (first.kind, first.peer, first.head, first.first_seq) == (
        "missed-broadcast", wf["peer"], 2, 2,
    )  # fmt: skip
    assert len(result.divergences) == 1, result.divergences
    assert result.b.first_missing_seq == 2 and result.b.last_head == 3
    assert result.a.broadcasts_missed == 0

    token = srv.mint("*", ("room:capture",), actor="ops")
    args = ["capture", "diff", srv.url, "--room", "div", "--peer", "alice", "--peer", "bob"]
    code, out = await asyncio.to_thread(run_cli, *args, "--operator-token", token, "--json")
    assert code == 1
    body = json.loads(out)
    assert body["first"]["kind"] == "missed-broadcast" and body["first"]["first_seq"] == 2
    code, out = await asyncio.to_thread(run_cli, *args, "--operator-token", token)
    assert code == 1 and "diverge at" in out and "seqs 2..2" in out
    # two healthy peers agree
    code, out = await asyncio.to_thread(
        run_cli, "capture", "diff", srv.url, "--room", "div", "--peer", "alice",
        "--peer", "writer", "--operator-token", token,
    )  # fmt: skip
    assert code == 0, out
    # the cap is needed: forbidden's exit code, naming it
    code, _ = await asyncio.to_thread(
        run_cli, *args, "--operator-token", srv.mint("*", ("room:get",), actor="ops")
    )
    assert code == 4
    for ws in (healthy, failing, writer):
        await ws.close()


async def test_broadcasts_name_receivers_only_in_small_rooms(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    peers = [await hello(http, srv.ws_url("big"), actor=f"p{i}") for i in range(MAX_RECEIVER_IDS)]
    writer, _ = await hello(http, srv.ws_url("big"), actor="writer")
    await writer.send_json(write("/x", 1))  # 17 peers: the record only counts
    await recv_type(writer, "ack")
    (last, _) = peers[-1]
    await recv_type(last, "pack")
    envelopes = await capture(http, srv, "big")
    (bc,) = [e for e in envelopes if e["peer"] == "*" and e["type"] == "pack"]
    assert bc["receivers"] == MAX_RECEIVER_IDS and "to" not in bc
    for ws, _ in [*peers, (writer, None)]:
        await ws.close()
