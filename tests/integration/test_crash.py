"""kill -9 mid-stream: every acknowledged change survives the restart (SPEC §2, issue 3)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from roomsync.testing.server import free_port, server_process
from roomsync.testing.wsclient import hello, recv_type, write_until_closed


async def write_until_killed(url: str, acked: dict[str, int], kill: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as http:
        ws, _ = await hello(http, url)
        await write_until_closed(ws, acked, on_acked=lambda n: kill.set() if n >= 2000 else None)


async def test_acked_changes_survive_kill_9(tmp_path: Path) -> None:
    port = free_port()
    acked: dict[str, int] = {}
    with server_process(tmp_path, port=port) as proc:
        kill = asyncio.Event()
        writer = asyncio.create_task(write_until_killed(proc.ws_url("crash"), acked, kill))
        await asyncio.wait_for(kill.wait(), 60)
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait(10)
        await asyncio.wait_for(writer, 30)
    assert len(acked) >= 2000
    with server_process(tmp_path, port=port) as proc:
        async with aiohttp.ClientSession() as http:
            ws, welcome = await hello(http, proc.ws_url("crash"), catchup=False)
            await ws.send_json({"type": "request", "paths": sorted(acked)})
            found: dict[str, int] = {}
            from roomsync.core.codec import unpack_data

            while True:
                msg = await recv_type(ws, "pack")
                for c in unpack_data(msg["data"]):
                    found[c.path] = c.seq or 0
                if msg.get("done"):
                    break
            missing = set(acked) - set(found)
            assert not missing, f"{len(missing)} acknowledged changes lost"
            assert all(found[p] == acked[p] for p in acked)
            assert welcome["head"] >= max(acked.values())
        proc.terminate()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "roomsync.cli.main",
            "replay",
            "--data-dir",
            str(tmp_path),
            "--room",
            "crash",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["match"] is True and report["head"] >= len(acked)
