"""server.node.Node: the one owner of a node's connections, admission and drain."""

from __future__ import annotations

import ast
from pathlib import Path

import aiohttp

from roomsync.testing.server import running_server
from roomsync.testing.wsclient import closed, connect, hello

SERVER = Path(__file__).resolve().parents[2] / "src" / "roomsync" / "server"


async def test_drain_closes_peers_with_1012_and_keeps_serving_http(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path) as srv:
        ws, _ = await hello(http, srv.ws_url("r"))
        await srv.server.drain()
        seen, code = await closed(ws)
        assert code == 1012 and seen[-1]["code"] == "draining"
        async with http.get(srv.url + "/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["draining"] is True
        async with http.get(srv.url + "/readyz") as resp:
            assert resp.status == 503 and (await resp.json())["checks"]["draining"] is True
        late = await connect(http, srv.ws_url("r"))  # the same pooled session as above
        seen, code = await closed(late)
        assert code == 1012 and seen[-1]["code"] == "draining"
        assert srv.server.node.connections == set() or all(
            c.close_code is not None for c in srv.server.node.connections
        )


def test_server_modules_import_each_other_one_way() -> None:
    """No import cycles in server/ (TYPE_CHECKING imports included): app builds, ws and
    http depend on node, node on rooms/outbox, never back."""
    deps: dict[str, set[str]] = {}
    for path in SERVER.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
        deps[path.stem] = found

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in deps.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(m for m in deps if reaches(m, m, {m}))
    assert cycles == []


async def test_revoke_closes_matching_sessions_persists_and_refuses_reconnects(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, dev=False) as srv:
        mallory = srv.mint("r", ("read", "write"), actor="mallory")
        alice = srv.mint("r", ("read", "write"), actor="alice")
        m_ws, _ = await hello(http, srv.ws_url("r"), token=mallory)
        a_ws, _ = await hello(http, srv.ws_url("r"), token=alice)
        new, closed_n = await srv.server.node.revoke("sub", "mallory")
        assert (new, closed_n) == (True, 1)
        seen, code = await closed(m_ws)
        assert code == 4003 and seen[-1]["message"] == "auth: token revoked"
        await a_ws.send_json({"type": "ping"})  # alice is untouched
        assert (await a_ws.receive_json(timeout=5))["type"] == "pong"
        again = await connect(http, srv.ws_url("r"))
        await again.send_json({"type": "hello", "v": 1, "token": mallory})
        seen, code = await closed(again)
        assert code == 4003 and "revoked" in seen[-1]["message"]
        assert (await srv.server.node.revoke("sub", "mallory")) == (False, 0)
    # A restart on the same data dir still refuses the token: it was persisted.
    async with running_server(tmp_path, dev=False) as srv:
        ws = await connect(http, srv.ws_url("r"))
        await ws.send_json({"type": "hello", "v": 1, "token": mallory})
        seen, code = await closed(ws)
        assert code == 4003 and "revoked" in seen[-1]["message"]


async def test_room_records_change_through_the_node(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path) as srv:
        ws, _ = await hello(http, srv.ws_url("r"))  # anonymous (dev)
        record = await srv.server.node.set_room("r", locked=True)
        assert record.locked and (await srv.server.store.get_room("r")).locked  # type: ignore[union-attr]
        late = await connect(http, srv.ws_url("r"))
        await late.send_json({"type": "hello", "v": 1})
        seen, code = await closed(late)
        assert code == 4003 and "locked" in seen[-1]["message"]
        await srv.server.node.set_room("r", closed=True)
        seen, code = await closed(ws)
        assert code == 4004 and seen[-1]["code"] == "room-closed"
