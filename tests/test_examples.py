"""The worked example of docs/hooks.md (examples/todo) runs as documented: its config
loads, its app validates and authorizes, its receiver verifies every webhook."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web

from roomsync.config import load_settings
from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.testing.server import TEST_KEYS, free_port, running_server, wait_until
from roomsync.testing.wsclient import closed, connect, recv, recv_type

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "todo"


async def test_the_todo_example(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import receiver  # examples/todo/receiver.py

    port = free_port()
    app = receiver.make_app()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    example = load_settings(EXAMPLE / "roomsync.toml", env={})
    hooks = [
        {**h, "url": f"http://127.0.0.1:{port}/hooks"}
        for h in msgspec.to_builtins(example.policy.webhooks)
    ]
    settings = load_settings(
        EXAMPLE / "roomsync.toml",
        env={},
        overrides={
            "server.data_dir": str(tmp_path),
            "auth.keys": dict(TEST_KEYS),
            "server.dev": True,
            "policy.webhooks": hooks,
            "webhooks.debounce_ms": 50,
        },
    )
    try:
        async with running_server(tmp_path, settings=settings) as srv:
            url = srv.ws_url("groceries")
            nobody = await connect(http, url)
            await nobody.send_json({"type": "hello", "v": 1})
            seen, code = await closed(nobody)
            assert code == 4003 and "hello.user" in seen[-1]["message"]

            ann = await connect(http, url)
            await ann.send_json({"type": "hello", "v": 1, "user": "ann"})
            welcome = await recv(ann)
            assert welcome["actor"] == "ann" and "write" in welcome["caps"]
            todos = [
                Change("/todos/1", 1, 0, "ann", json.dumps({"title": "milk"}).encode()),
                Change("/todos/2", 2, 0, "ann", json.dumps({"title": ""}).encode()),
            ]
            await ann.send_json({"type": "pack", "data": pack_data(todos)})
            ack = await recv_type(ann, "ack")
            assert ack["seqs"] == [1, None] and ack["refused"][0]["code"] == "invalid-value"

            guest = await connect(http, url)
            await guest.send_json({"type": "hello", "v": 1, "user": "gus"})
            assert "write" not in (await recv(guest))["caps"]
            await guest.close()
            await ann.close()
            seen_events = app[receiver.SEEN]
            await wait_until(
                lambda: (
                    sorted(e["type"] for e in seen_events.values())
                    == ["changes.committed", "peer.joined", "peer.joined", "peer.left", "peer.left"]
                ),
                timeout=10,
            )
            committed = next(e for e in seen_events.values() if e["type"] == "changes.committed")
            assert committed["data"]["paths"] == ["/todos/1"]
    finally:
        await runner.cleanup()
