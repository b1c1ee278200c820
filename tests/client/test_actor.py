"""The SDK writes as the actor its token allows (issue 9 item 11): ``sub`` or
``sub#<suffix>``, so a token client's writes are never refused as someone else's."""

from __future__ import annotations

from pathlib import Path

from roomsync.client import connect
from roomsync.core.types import session_actor
from roomsync.testing.server import running_server


def test_session_actor_rule() -> None:
    assert session_actor(None, "laptop", "c-1") == "laptop"
    assert session_actor(None, None, "c-1") == "c-1"
    assert session_actor("alice", "alice", "c-1") == "alice"
    assert session_actor("alice", "alice#tab", "c-1") == "alice#tab"
    assert session_actor("alice", "laptop", "c-1") == "alice#laptop"
    assert session_actor("alice", "alicex", "c-1") == "alice#alicex"
    assert session_actor("alice", None, "c-1") == "alice#c-1"


async def test_token_client_writes_as_its_sub(tmp_path: Path) -> None:
    async with running_server(tmp_path, dev=False) as srv:
        token = srv.mint("doc", ("read", "write"), actor="alice")
        async with await connect(srv.url, "doc", token=token, actor="laptop") as room:
            assert room.actor == "alice#laptop"
            room.set_json("/todo", {"t": 1})
            await room.flush()
            assert room.stats.superseded == 0
        loaded = await srv.server.store.load_room("doc", now_ms=0)
        assert [(c.path, c.actor) for c in loaded.entries] == [("/todo", "alice#laptop")]
