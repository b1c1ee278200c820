"""``/metrics`` cardinality stays bounded (SPEC §7, §8): no label carries a room, a peer or
anything else a client chooses, so the number of series does not grow with rooms.

A real server gets the same traffic in 1 room, then in 200 more rooms held open at once
(writers, readers, packs with a refused change, broadcasts, presence, a blob, a request,
an unknown message type, a stale cursor closed with 4001, control requests ok and
refused); its scrapes must list the very same series. A hostile client that invents
message types and close codes adds one ``invalid`` and one ``other`` series, not one per
value.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.testing.server import ServerHandle, running_server, wait_until
from roomsync.testing.wsclient import closed, connect, hello, recv_type

Series = frozenset[tuple[str, tuple[tuple[str, str], ...]]]


@pytest.fixture
async def busy(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    """A dev server whose control plane takes 10,000 requests in a burst (two per room
    here, and ``rate-limited`` would be a new outcome label)."""
    async with running_server(tmp_path, server__control_burst=10_000) as handle:
        yield handle


async def scrape(srv: ServerHandle, http: aiohttp.ClientSession) -> tuple[Series, str]:
    async with http.get(srv.url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    series = frozenset(
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )
    return series, text


def sample_value(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"{name} not exported")


def blob_upload(data: bytes) -> dict[str, object]:
    return {
        "type": "blob-upload",
        "hash": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "data": base64.b64encode(data).decode(),
    }


async def room_traffic(
    srv: ServerHandle, http: aiohttp.ClientSession, room: str, operator: str, narrow: str
) -> aiohttp.ClientWebSocketResponse:
    """One of each kind of traffic in ``room``; returns its reader, still connected."""
    writer, _ = await hello(http, srv.ws_url(room), actor="writer")
    reader, _ = await hello(http, srv.ws_url(room), actor="reader")
    now = int(time.time() * 1000)
    changes = [
        Change("/doc/title", now, 0, "writer", room.encode()),
        Change("/doc/later", now + 10**9, 0, "writer", b"x"),  # refused: clock-skew
    ]
    await writer.send_json({"type": "pack", "data": pack_data(changes)})
    ack = await recv_type(writer, "ack")
    assert ack["refused"] and ack["refused"][0]["code"] == "clock-skew"
    await recv_type(reader, "pack")  # the broadcast
    await writer.send_json({"type": "presence", "state": {"cursor": 1}})
    await recv_type(reader, "presence")
    await writer.send_json(blob_upload(b"blob of " + room.encode()))
    await recv_type(writer, "blob-uploaded")
    await recv_type(reader, "blob-available")
    await reader.send_json({"type": "request", "since": 0})
    while not (await recv_type(reader, "pack")).get("done"):
        pass
    await writer.send_json({"type": "no-such-type"})
    assert (await recv_type(writer, "error"))["code"] == "unknown-type"
    stale = await connect(http, srv.ws_url(room))
    await stale.send_json({"type": "hello", "v": 1, "cursor": 10**6})  # ahead of head
    _, code = await closed(stale)
    assert code == 4001
    for token, status in ((operator, 200), (narrow, 403)):
        async with http.post(
            f"{srv.url}/v1/control/room/get",
            json={"room": room},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == status, await resp.text()
    await writer.close()
    await recv_type(reader, "presence-leave")
    return reader


async def traffic(
    srv: ServerHandle, http: aiohttp.ClientSession, rooms: list[str]
) -> list[aiohttp.ClientWebSocketResponse]:
    operator = srv.mint("*", ("*",), actor="ops")
    narrow = srv.mint("*", ("tick:get",), actor="ops")
    gate = asyncio.Semaphore(25)

    async def one(room: str) -> aiohttp.ClientWebSocketResponse:
        async with gate:
            return await room_traffic(srv, http, room, operator, narrow)

    return list(await asyncio.gather(*(one(room) for room in rooms)))


def diff(before: Series, after: Series) -> str:
    added = sorted(after - before)[:20]
    removed = sorted(before - after)[:20]
    return f"added: {added}\nremoved: {removed}"


async def test_series_do_not_grow_with_rooms(busy: ServerHandle) -> None:
    # No pool limit: the 201 readers stay connected (aiohttp's default pool holds 100).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        first = await traffic(busy, http, ["room-0"])
        one_room, _ = await scrape(busy, http)
        many = await traffic(busy, http, [f"room-{i}" for i in range(1, 201)])
        await wait_until(lambda: len(busy.server.rooms.hosts) == 201)
        many_rooms, text = await scrape(busy, http)
        assert sample_value(text, "roomsync_rooms_loaded") == 201
        assert sample_value(text, "roomsync_connections") == 201
        assert many_rooms == one_room, diff(one_room, many_rooms)
        # Nothing that names a room, a peer or an actor ever became a label value.
        values = {value for _, labels in many_rooms for _, value in labels}
        assert not {v for v in values if v.startswith("room-") or v in ("writer", "reader")}
        for ws in first + many:
            await ws.close()


async def test_peer_chosen_types_and_close_codes_fold_into_one_series(
    srv: ServerHandle,
) -> None:
    async with aiohttp.ClientSession() as http:

        async def hostile(n: int) -> None:
            for i in range(n):
                ws, _ = await hello(http, srv.ws_url("hostile"))
                await ws.send_json({"type": f"made-up-{i}"})
                await recv_type(ws, "error")
                await ws.close(code=4100 + i)  # an application close code

        await hostile(1)
        await wait_until(lambda: not srv.server.connections)
        before, _ = await scrape(srv, http)
        await hostile(30)
        await wait_until(lambda: not srv.server.connections)
        after, text = await scrape(srv, http)
        assert after == before, diff(before, after)
        assert 'roomsync_messages_total{direction="in",type="invalid"} 31.0' in text
        assert 'roomsync_closes_total{code="other"} 31.0' in text


async def test_outbound_queue_bytes_is_read_at_scrape_time(srv: ServerHandle) -> None:
    """Read from the connections' outboxes when scraped, not a heartbeat's old sample."""
    async with aiohttp.ClientSession() as http:
        ws, _ = await hello(http, srv.ws_url("queue"))
        (conn,) = srv.server.connections
        conn.out.held_bytes = 12345  # as if frames were held behind a streaming answer
        try:
            _, text = await scrape(srv, http)
            assert sample_value(text, "roomsync_outbound_queue_bytes") >= 12345
        finally:
            conn.out.held_bytes = 0
        _, text = await scrape(srv, http)
        assert sample_value(text, "roomsync_outbound_queue_bytes") < 12345
        await ws.close()
