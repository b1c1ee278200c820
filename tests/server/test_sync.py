"""The sync engine over real sockets: packs, acks, broadcast, request, subscribe, catch-up,
retention, stream budget, MST reconcile, room lifecycle (SPEC §1, §2)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiohttp
import pytest

from roomsync.core.codec import pack_data, unpack_data
from roomsync.core.entries import Change
from roomsync.core.mst import MerkleSearchTree, build_root
from roomsync.core.reconcile import (
    FetchNodes,
    ReconcileResult,
    SendProbes,
    reconcile,
    reconcile_batched,
)
from roomsync.core.sketch import Probe, ProbeRequest, encode_request
from roomsync.testing.server import ServerHandle, running_server, wait_until
from roomsync.testing.wsclient import closed, hello, recv, recv_type


def ch(path: str, ts: int, value: bytes | None = b"v", actor: str = "a") -> Change:
    return Change(path, ts, 0, actor, value)


async def send_pack(ws: aiohttp.ClientWebSocketResponse, changes: list[Change]) -> dict:
    await ws.send_json({"type": "pack", "data": pack_data(changes)})
    return await recv_type(ws, "ack")


async def collect(
    ws: aiohttp.ClientWebSocketResponse, until_done: bool = True
) -> tuple[list[Change], int]:
    """Changes of pack frames up to the one with done=true; returns (changes, head)."""
    out: list[Change] = []
    while True:
        msg = await recv_type(ws, "pack")
        out.extend(unpack_data(msg["data"]))
        if msg.get("done") or not until_done:
            return out, msg["head"]


async def test_broadcast_to_others_not_sender(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a, _ = await hello(http, srv.ws_url("r"))
    b, _ = await hello(http, srv.ws_url("r"))
    ack = await send_pack(a, [ch("/x", 1), ch("/y", 2, None)])
    assert ack["seqs"] == [1, 2]
    got, head = await collect(b, until_done=False)
    assert [(c.path, c.seq, c.deleted) for c in got] == [("/x", 1, False), ("/y", 2, True)]
    assert head == 2
    await a.send_json({"type": "ping"})
    assert await recv(a) == {"type": "pong"}  # no echo of its own pack arrived before


async def test_echo_to_sender_policy(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, policy__echo_to_sender=True) as srv:
        a, _ = await hello(http, srv.ws_url("r"))
        await a.send_json({"type": "pack", "data": pack_data([ch("/x", 1)])})
        msg = await recv(a)
        assert msg["type"] == "pack" and unpack_data(msg["data"])[0].seq == 1
        assert (await recv(a))["type"] == "ack"


async def test_lww_loser_is_acked_not_broadcast(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a, _ = await hello(http, srv.ws_url("r"))
    b, _ = await hello(http, srv.ws_url("r"))
    assert (await send_pack(a, [ch("/x", 10)]))["seqs"] == [1]
    await collect(b, until_done=False)
    assert (await send_pack(a, [ch("/x", 5, b"older")]))["seqs"] == [1]
    assert (await send_pack(a, [ch("/z", 11)]))["seqs"] == [2]
    got, _ = await collect(b, until_done=False)
    assert [c.path for c in got] == ["/z"]


async def test_per_change_refusals_in_ack(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, policy__max_value_bytes=8) as srv:
        a, _ = await hello(http, srv.ws_url("r"))
        ack = await send_pack(a, [ch("bad", 1), ch("/big", 1, b"x" * 9), ch("/ok", 1)])
        assert ack["seqs"] == [None, None, 1]
        assert [(r["index"], r["code"]) for r in ack["refused"]] == [
            (0, "invalid-path"),
            (1, "too-large"),
        ]


async def test_catchup_chunks_and_cursor_resume(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, policy__catchup_chunk=3) as srv:
        a, _ = await hello(http, srv.ws_url("r"))
        await send_pack(a, [ch(f"/k{i}", i + 1) for i in range(7)])
        b = await http.ws_connect(srv.ws_url("r"))
        await b.send_json({"type": "hello", "v": 1})
        welcome = await recv(b)
        assert welcome["head"] == 7
        heads = []
        got: list[Change] = []
        while True:
            msg = await recv_type(b, "pack")
            got.extend(unpack_data(msg["data"]))
            heads.append(msg["head"])
            if msg.get("done"):
                break
        assert heads == [3, 6, 7]
        assert [c.seq for c in got] == list(range(1, 8))
        await send_pack(a, [ch("/k0", 100), ch("/new", 101)])
        d = await http.ws_connect(srv.ws_url("r"))
        await d.send_json({"type": "hello", "v": 1, "cursor": 7})
        await recv(d)
        missed, head = await collect(d)
        assert [(x.path, x.seq) for x in missed] == [("/k0", 8), ("/new", 9)] and head == 9


async def test_cursor_older_than_retention_is_4001(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, policy__retention_changes=10) as srv:
        a, _ = await hello(http, srv.ws_url("r"))
        for batch in range(12):
            await send_pack(a, [ch(f"/p{batch}-{i}", batch * 100 + i + 1) for i in range(100)])
        host = srv.server.rooms.hosts["r"]
        await wait_until(lambda: host.state.compacted_through > 0)
        b = await http.ws_connect(srv.ws_url("r"))
        await b.send_json({"type": "hello", "v": 1, "cursor": 5})
        seen, code = await closed(b)
        assert code == 4001
        assert seen[-1]["code"] == "resync-required" and "retention" in seen[-1]["message"]
        await a.send_json({"type": "request", "since": 1})
        seen, code = await closed(a)
        assert code == 4001


async def test_cursor_ahead_of_head_is_4001(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    b = await http.ws_connect(srv.ws_url("fresh"))
    await b.send_json({"type": "hello", "v": 1, "cursor": 50})
    seen, code = await closed(b)
    assert code == 4001 and "ahead" in seen[-1]["message"]


async def test_request_since_and_paths(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    a, _ = await hello(http, srv.ws_url("r"))
    await send_pack(a, [ch("/a", 1), ch("/b", 2), ch("/c", 3, None)])
    await a.send_json({"type": "request", "since": 1})
    got, head = await collect(a)
    assert [(c.path, c.seq) for c in got] == [("/b", 2), ("/c", 3)] and head == 3
    await a.send_json({"type": "request", "paths": ["/c", "/a", "/missing"]})
    got, _ = await collect(a)
    assert [(c.path, c.deleted) for c in got] == [("/a", False), ("/c", True)]


async def test_subscription_filters_and_resubscribe_sends_new_scope(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    w, _ = await hello(http, srv.ws_url("r"))
    await send_pack(w, [ch("/todos/1", 1), ch("/notes/1", 2)])
    s = await http.ws_connect(srv.ws_url("r"))
    await s.send_json({"type": "hello", "v": 1, "subscribe": ["/todos"]})
    await recv(s)
    got, _ = await collect(s)
    assert [c.path for c in got] == ["/todos/1"]
    await send_pack(w, [ch("/notes/2", 3), ch("/todos/2", 4), ch("/todosX", 5)])
    got, _ = await collect(s, until_done=False)
    assert [c.path for c in got] == ["/todos/2"]
    await s.send_json({"type": "subscribe", "paths": ["/todos", "/notes"]})
    got, _ = await collect(s)
    assert sorted(c.path for c in got) == ["/notes/1", "/notes/2"]


async def test_catchup_false_skips_state(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    a, _ = await hello(http, srv.ws_url("r"))
    await send_pack(a, [ch("/a", 1)])
    b, welcome = await hello(http, srv.ws_url("r"), catchup=False)
    assert welcome["head"] == 1
    await b.send_json({"type": "ping"})
    assert await recv(b) == {"type": "pong"}


async def test_mst_reconcile_over_the_wire(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    a, _ = await hello(http, srv.ws_url("r"))
    server_side = [ch(f"/doc/{i}", i + 1, f"v{i}".encode()) for i in range(300)]
    await send_pack(a, server_side)
    local = {c.path: c for c in server_side}
    local["/doc/7"] = ch("/doc/7", 1000, b"local edit")
    del local["/doc/8"]
    local["/doc/local-only"] = ch("/doc/local-only", 5)
    tree = MerkleSearchTree(local.values())
    b, welcome = await hello(http, srv.ws_url("r"), catchup=False)
    await b.send_json({"type": "mst-root"})
    root = await recv_type(b, "mst-root")
    assert root["root"] == welcome["root"] and root["count"] == 300
    flow = reconcile(tree, bytes.fromhex(root["root"]))
    step = next(flow)
    rounds = 0
    try:
        while True:
            assert isinstance(step, FetchNodes)
            rounds += 1
            await b.send_json({"type": "mst-get", "hashes": [h.hex() for h in step.hashes]})
            nodes = await recv_type(b, "mst-nodes")
            step = flow.send(
                {bytes.fromhex(n["hash"]): base64.b64decode(n["data"]) for n in nodes["nodes"]}
            )
    except StopIteration as stop:
        result = stop.value
    assert result.complete and rounds <= 6
    assert set(result.differing) == {"/doc/7", "/doc/8", "/doc/local-only"}
    await b.send_json({"type": "request", "paths": list(result.differing)})
    got, _ = await collect(b)
    assert {c.path for c in got} == {"/doc/7", "/doc/8"}
    ack = await send_pack(b, [local[p] for p in result.differing if p in local])
    assert all(s is not None for s in ack["seqs"])
    for c in got:
        if c.key > local.get(c.path, ch(c.path, 0)).key:
            local[c.path] = c
    await b.send_json({"type": "mst-root"})
    final = await recv_type(b, "mst-root")
    assert final["root"] == build_root(local.values())


async def _batched_over(
    ws: aiohttp.ClientWebSocketResponse, tree: MerkleSearchTree, remote: bytes
) -> tuple[ReconcileResult, int]:
    """Drive the batched flow over ``ws``: every round's mst-probe frames go out together."""
    flow = reconcile_batched(tree, remote)
    rounds = 0
    try:
        step = next(flow)
        while True:
            assert isinstance(step, SendProbes)
            rounds += 1
            for data in step.requests:
                await ws.send_json({"type": "mst-probe", "data": base64.b64encode(data).decode()})
            answers = [await recv_type(ws, "mst-sketch") for _ in step.requests]
            step = flow.send([base64.b64decode(a["data"]) for a in answers])
    except StopIteration as stop:
        result: ReconcileResult = stop.value
    return result, rounds


async def test_batched_mst_reconcile_over_the_wire(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a, _ = await hello(http, srv.ws_url("r"))
    server_side = [ch(f"/doc/{i}", i + 1, f"v{i}".encode()) for i in range(3000)]
    for start in range(0, 3000, 500):
        await send_pack(a, server_side[start : start + 500])
    await send_pack(a, [ch("/doc/8", 5000, None)])  # deleted on the server
    local = {c.path: c for c in server_side}
    for i in range(0, 3000, 97):
        local[f"/doc/{i}"] = ch(f"/doc/{i}", 1, b"stale")
    local["/doc/local-only"] = ch("/doc/local-only", 5)
    del local["/doc/9"]  # the server has it, we do not
    tree = MerkleSearchTree(local.values())
    b, welcome = await hello(http, srv.ws_url("r"), catchup=False)
    await send_pack(a, [ch("/other-room-is-untouched", 1)])  # noise in the same room
    result, rounds = await _batched_over(b, tree, bytes.fromhex(welcome["root"]))
    assert result.complete and rounds <= 5
    stale = {f"/doc/{i}" for i in range(0, 3000, 97)}
    assert stale | {"/doc/9", "/other-room-is-untouched"} <= {c.path for c in result.entries}
    assert {"/doc/8", "/doc/local-only"} <= set(result.to_request)
    for c in result.entries:
        local[c.path] = c
    await b.send_json({"type": "request", "paths": list(result.to_request)})
    got, _ = await collect(b)
    assert {c.path for c in got} == {"/doc/8"}  # the tombstone; local-only is unknown there
    for c in got:
        local[c.path] = c
    ack = await send_pack(b, [local["/doc/local-only"]])
    assert ack["seqs"][0] is not None
    await b.send_json({"type": "mst-root"})
    final = await recv_type(b, "mst-root")
    assert final["root"] == build_root(local.values())


async def test_batched_reconcile_of_an_empty_room_and_an_empty_client(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    b, welcome = await hello(http, srv.ws_url("empty"), catchup=False)
    mine = MerkleSearchTree([ch("/x", 1), ch("/y", 2)])
    result, rounds = await _batched_over(b, mine, bytes.fromhex(welcome["root"]))
    assert rounds == 0 and result.push == ("/x", "/y")
    a, _ = await hello(http, srv.ws_url("full"))
    await send_pack(a, [ch(f"/f/{i}", i + 1) for i in range(700)])
    c, welcome = await hello(http, srv.ws_url("full"), catchup=False)
    result, _ = await _batched_over(c, MerkleSearchTree(), bytes.fromhex(welcome["root"]))
    assert len(result.entries) == 700 and result.to_request == ()
    assert build_root(result.entries) == welcome["root"]


async def test_mst_probe_refusals_leave_the_session_up(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a, _ = await hello(http, srv.ws_url("r"))
    await send_pack(a, [ch(f"/k/{i}", i + 1) for i in range(50)])
    too_many = bytes([20, 6, 0, 0x81, 0x20]) + bytes([0, 1]) * 4097
    cases = [
        ("bad base64!", "malformed-envelope"),
        (base64.b64encode(bytes([20, 6, 0, 1, 0x30, 1])).decode(), "malformed-envelope"),
        (base64.b64encode(too_many).decode(), "too-large"),
    ]
    for data, code in cases:
        await a.send_json({"type": "mst-probe", "data": data})
        err = await recv_type(a, "error")
        assert (err["code"], err["ref"]) == (code, "mst-probe")
    await a.send_json({"type": "ping"})
    assert await recv(a) == {"type": "pong"}  # the session survived all of them
    plain, _ = await hello(http, srv.ws_url("r"), caps=["read", "write"])
    probe = encode_request(ProbeRequest(20, 6, 1024, (Probe(None, False, None, 8),)))
    await plain.send_json({"type": "mst-probe", "data": base64.b64encode(probe).decode()})
    err = await recv_type(plain, "error")
    assert (err["code"], err["ref"]) == ("forbidden", "mst-probe")
    await plain.send_json({"type": "ping"})
    assert await recv(plain) == {"type": "pong"}


async def test_slow_consumer_hits_stream_budget_4001(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(
        tmp_path,
        policy__stream_budget_bytes=256 * 1024,
        policy__rate_bytes_per_s=1e9,
        policy__rate_burst_bytes=10**9,
        server__max_frame_bytes=4 << 20,
    ) as srv:
        writer, _ = await hello(http, srv.ws_url("r"))
        lazy, _ = await hello(http, srv.ws_url("r"))  # it never reads from here on
        value = b"x" * 200_000
        budget_closed = False
        # Loopback autotuning lets the lazy socket absorb tcp_rmem max (32 MiB here) plus
        # tcp_wmem max (4 MiB) before our queue grows: allow well past that.
        for i in range(500):
            await send_pack(writer, [ch(f"/blob{i}", i + 1, value)])
            if any(c.close_code == 4001 for c in srv.server.connections):
                budget_closed = True
                break
        assert budget_closed, "the slow consumer was never closed"
        seen, code = await closed(lazy, timeout=30)
        assert code == 4001
        assert seen[-1]["code"] == "resync-required" and "stream budget" in seen[-1]["message"]
        metrics = await (await http.get(srv.url + "/metrics")).text()
        assert 'roomsync_resync_required_total{reason="stream-budget"} 1.0' in metrics
        # The writer and the room are unaffected.
        assert (await send_pack(writer, [ch("/after", 10_000)]))["seqs"][0] is not None


async def test_rooms_unload_when_idle_and_reload_from_store(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, server__room_idle_unload_ms=50) as srv:
        a, _ = await hello(http, srv.ws_url("r"))
        await send_pack(a, [ch("/a", 1)])
        await a.close()
        await wait_until(lambda: "r" not in srv.server.rooms.hosts)
        _b, welcome = await hello(http, srv.ws_url("r"))  # consumes catch-up
        assert welcome["head"] == 1
        assert welcome["root"] == build_root([ch("/a", 1)])


async def test_cold_room_join_storm_loads_once(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    results = await asyncio.gather(*(hello(http, srv.ws_url("storm")) for _ in range(50)))
    assert {w["room"] for _, w in results} == {"storm"}
    metrics = await (await http.get(srv.url + "/metrics")).text()
    assert "roomsync_room_loads_total 1.0" in metrics


async def test_large_catchup_to_a_slow_reader_streams_without_tripping_the_budget(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(
        tmp_path,
        policy__stream_budget_bytes=256 * 1024,
        policy__catchup_chunk=200,
        server__max_frame_bytes=4 << 20,
        policy__rate_bytes_per_s=1e9,
        policy__rate_burst_bytes=10**9,
        policy__rate_messages_per_s=1e5,
    ) as srv:
        w, _ = await hello(http, srv.ws_url("big"))
        value = b"v" * 2000
        for batch in range(20):  # 4,000 entries, about 8 MB of base64 catch-up
            await send_pack(
                w, [ch(f"/e/{batch}/{i}", batch * 1000 + i + 1, value) for i in range(200)]
            )
        slow = await http.ws_connect(srv.ws_url("big"), max_msg_size=0)
        await slow.send_json({"type": "hello", "v": 1})
        await recv(slow)  # welcome
        await send_pack(w, [ch("/during", 99_999)])  # a broadcast while it catches up
        await asyncio.sleep(1.0)  # the reader is slow: the server must wait, not give up
        got, head = await collect(slow)
        assert len(got) == 4000 and head == 4000
        later, _ = await collect(slow, until_done=False)
        assert [c.path for c in later] == ["/during"]  # held, then delivered after done


async def test_quiet_rooms_get_their_root_hashed_on_one_timer(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    """Small writes leave the MST root dirty (hashed lazily); once a room is quiet after
    QUIET_ROOT_CHANGES of them, the registry's single timer hashes it, so a later welcome
    does not pay for the burst."""
    from roomsync.server.rooms import QUIET_ROOT_CHANGES, ROOT_IDLE_S

    peers = [(await hello(http, srv.ws_url(f"quiet{i}")))[0] for i in range(3)]
    half = QUIET_ROOT_CHANGES // 2
    for i, ws in enumerate(peers):
        first = [ch(f"/q{i}/{k}", k + 1) for k in range(half)]
        assert (await send_pack(ws, first))["seqs"] == list(range(1, half + 1))
        rest = [ch(f"/q{i}/{k}", k + 1) for k in range(half, QUIET_ROOT_CHANGES)]
        assert (await send_pack(ws, rest))["seqs"][-1] == QUIET_ROOT_CHANGES
    hosts = [srv.server.rooms.hosts[f"quiet{i}"] for i in range(3)]
    quiet = srv.server.rooms.quiet
    assert all(h.quiet is quiet for h in hosts)
    assert not any(h.state.tree.hashed for h in hosts)
    # The timer fires ROOT_IDLE_S after the first write, then at most ROOT_IDLE_S / 2 later
    # for rooms not yet due: all are hashed within 2.5 windows.
    await wait_until(
        lambda: all(h.state.tree.hashed for h in hosts),
        timeout=ROOT_IDLE_S * 2.5,
    )
    assert quiet._timer is None and not quiet._due  # nothing left to do, no timer armed
    assert all(h.unhashed == 0 for h in hosts)


async def test_a_room_of_light_traffic_is_hashed_by_its_next_reader_not_per_write(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    """Fewer than QUIET_ROOT_CHANGES small writes arm no timer and hash nothing (no
    wake-up or re-hash per write of a light room); the next welcome hashes the root,
    exactly the canonical one."""
    from roomsync.server.rooms import QUIET_ROOT_CHANGES

    writer, _ = await hello(http, srv.ws_url("light"))
    written = [ch(f"/l/{k}", k + 1) for k in range(QUIET_ROOT_CHANGES - 1)]
    for change in written:
        await send_pack(writer, [change])
    host = srv.server.rooms.hosts["light"]
    quiet = srv.server.rooms.quiet
    assert host.unhashed == QUIET_ROOT_CHANGES - 1
    assert "light" not in quiet._due and not host.state.tree.hashed
    _, welcome = await hello(http, srv.ws_url("light"), catchup=False)
    assert welcome["root"] == build_root(written) and host.state.tree.hashed


async def test_a_large_quiet_room_has_its_full_catchup_encoded_ahead(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a large room is quiet, its full-state catch-up is encoded a few groups per
    loop turn; the next binary joiner's frames are those bytes, a copy, and hold the
    whole state at the head."""
    from roomsync.core.binpack import parse_server_frame
    from roomsync.server import rooms

    monkeypatch.setattr(rooms, "WARM_CATCHUP_ENTRIES", 1000)
    async with running_server(tmp_path, policy__catchup_chunk=50) as srv:
        w, _ = await hello(http, srv.ws_url("big"))
        written = [ch(f"/e/{i:05}", i + 1) for i in range(1200)]
        for k in range(0, len(written), 200):
            await send_pack(w, written[k : k + 200])
        host = srv.server.rooms.hosts["big"]
        key = (1200, ("/",))
        await wait_until(
            lambda: key in host._snapshots and host.unwarmed == 0,
            timeout=rooms.ROOT_IDLE_S * 10,
        )
        snap = host._snapshots[key]
        assert len(snap) == 24 and len(snap._binary) == 24  # every group's frame is built
        frames = list(snap._binary)

        joiner = await http.ws_connect(srv.ws_url("big"))
        await joiner.send_json({"type": "hello", "v": 1, "caps": ["*", "binary"]})
        assert (await recv(joiner))["type"] == "welcome"
        got: list[Change] = []
        for i in range(24):
            msg = await asyncio.wait_for(joiner.receive(), 10)
            assert msg.type is aiohttp.WSMsgType.BINARY
            assert frames[i].endswith(msg.data)  # the warmed frame, byte for byte
            pack = parse_server_frame(msg.data)
            got += unpack_data(pack.data)
        assert pack.done and pack.head == 1200
        assert sorted(c.path for c in got) == [c.path for c in written]
        await joiner.close()

        # Warming is sliced: on the next quiet moment it starts with a few groups only.
        await send_pack(w, [ch(f"/f/{i}", 5000 + i) for i in range(rooms.QUIET_ROOT_CHANGES)])
        host.on_quiet()
        warm = host._snapshots[(1200 + rooms.QUIET_ROOT_CHANGES, ("/",))]
        assert len(warm._binary) == rooms.WARM_GROUPS_PER_TURN < len(warm)
        await wait_until(lambda: len(warm._binary) == len(warm), timeout=5)
        await w.close()
