"""SIGTERM: stop accepting, close peers with 1012, flush the store, exit 0 (SPEC §2)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.storage.sqlite import SqliteStore
from roomsync.testing.server import server_process
from roomsync.testing.wsclient import closed, hello, recv


async def test_sigterm_closes_peers_1012_and_exits_cleanly(tmp_path: Path) -> None:
    with server_process(tmp_path) as proc:
        async with aiohttp.ClientSession() as http:
            peers = [(await hello(http, proc.ws_url("r")))[0] for _ in range(3)]
            await peers[0].send_json(
                {"type": "pack", "data": pack_data([Change("/k", 1, 0, "a", b"v")])}
            )
            assert (await recv(peers[0]))["seqs"] == [1]
            proc.proc.send_signal(signal.SIGTERM)
            for ws in peers:
                seen, code = await closed(ws)
                assert code == 1012
                assert seen[-1]["code"] == "draining"
            rc = await asyncio.get_running_loop().run_in_executor(None, proc.proc.wait, 15)
            assert rc == 0
    store = SqliteStore(tmp_path / "roomsync.db")
    await store.open()
    loaded = await store.load_room("r", now_ms=0)
    assert [c.path for c in loaded.entries] == ["/k"]
    await store.close()
