"""/healthz, /readyz, /metrics (SPEC §7)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from roomsync.storage.sqlite import SqliteStore
from roomsync.testing.server import ServerHandle, running_server
from roomsync.testing.wsclient import hello


async def test_healthz(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    resp = await http.get(srv.url + "/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["ok"] is True and body["draining"] is False
    assert body["node"] == srv.server.node_name


async def test_readyz_reports_each_check(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    resp = await http.get(srv.url + "/readyz")
    body = await resp.json()
    assert resp.status == 200
    assert body["checks"]["store"] == {"ok": True, "backend": "sqlite"}
    assert body["checks"]["blobs"] == {"ok": True, "backend": "filesystem"}
    assert body["checks"]["bus"] == {"ok": True, "backend": "memory"}  # in-process fan-out


async def test_readyz_fails_when_store_breaks(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path) as srv:
        store = srv.server.store
        assert isinstance(store, SqliteStore)
        db = tmp_path / "roomsync.db"
        assert db.exists()
        await store.close()  # a store that can no longer serve reads and writes
        resp = await http.get(srv.url + "/readyz")
        body = await resp.json()
        assert resp.status == 503
        assert body["checks"]["store"]["ok"] is False
        assert body["checks"]["store"]["error"]
        await store.open()


async def test_metrics_exposition(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    ws, _ = await hello(http, srv.ws_url("m-room"))
    await ws.send_json({"type": "nope"})
    await ws.receive()
    resp = await http.get(srv.url + "/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    for needle in (
        "roomsync_connections 1.0",
        "roomsync_rooms_loaded 1.0",
        'roomsync_messages_total{direction="in",type="hello"} 1.0',
        'roomsync_messages_total{direction="out",type="welcome"} 1.0',
        'roomsync_errors_total{code="unknown-type"} 1.0',
        'roomsync_auth_total{outcome="anonymous"} 1.0',
        'roomsync_handshakes_total{result="welcome"} 1.0',
        "roomsync_pack_apply_seconds_bucket",
        "roomsync_broadcast_seconds_bucket",
        "roomsync_outbound_queue_bytes",
        "roomsync_blob_ops_total",
    ):
        assert needle in text, needle
    await ws.close()
