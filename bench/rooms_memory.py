"""Room lifecycle memory: N rooms written once each, then idle-unloaded (issue 3).

Starts ``roomsync serve`` (SQLite, pinned to core 0 when possible), connects to N rooms
(``--concurrency`` at a time), writes ``--changes`` changes per room, disconnects, and
prints the server's RSS at baseline, with all rooms loaded, and after the idle unload.

    python -m bench.rooms_memory [--rooms 5000] [--changes 10] [--unload-ms 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.testing.server import server_process

from .common import proc_rss_kb


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    text = await (await http.get(url + "/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def fill(url: str, rooms: int, changes: int, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> None:
            async with sem:
                ws = await http.ws_connect(f"{url}/ws/room-{i}")
                await ws.send_json({"type": "hello", "v": 1, "actor": "bench", "catchup": False})
                await ws.receive()
                batch = [Change(f"/doc/{j}", j + 1, 0, "bench", b"x" * 64) for j in range(changes)]
                await ws.send_json({"type": "pack", "data": pack_data(batch)})
                while (await ws.receive_json())["type"] != "ack":
                    pass
                await ws.close()

        await asyncio.gather(*(one(i) for i in range(rooms)))


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="roomsync-bench-"))
    env = {
        "ROOMSYNC_SERVER_ROOM_IDLE_UNLOAD_MS": str(args.unload_ms),
        "ROOMSYNC_LOG_LEVEL": "warning",
        "ROOMSYNC_POLICY_RATE_MESSAGES_PER_S": "100000",
        "ROOMSYNC_SERVER_HEARTBEAT_MS": "1000",
        "ROOMSYNC_STORAGE_SQLITE_CACHE_KIB": str(args.sqlite_cache_kib),
    }
    with server_process(data_dir, extra_env=env) as proc:
        pid = proc.proc.pid
        try:
            os.sched_setaffinity(pid, {0})
            os.sched_setaffinity(0, {1})
        except (AttributeError, OSError):
            pass
        url = proc.url
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(0.5)
            base = proc_rss_kb(pid)
            t0 = time.perf_counter()
            # Keep rooms loaded while filling: a long unload timeout would do too, but
            # sampling right after the fill is what an operator sees at peak.
            await fill(url, args.rooms, args.changes, args.concurrency)
            fill_s = time.perf_counter() - t0
            peak = proc_rss_kb(pid)
            loaded = await metric(http, url, "roomsync_rooms_loaded")
            deadline = time.monotonic() + args.unload_ms / 1000 + 30
            while await metric(http, url, "roomsync_rooms_loaded") > 0:
                if time.monotonic() > deadline:
                    raise SystemExit("rooms did not unload")
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.5)  # a heartbeat or two: the server trims its heap then
            after = proc_rss_kb(pid)
            unloads = await metric(http, url, "roomsync_room_unloads_total")
        proc.terminate()
    growth = peak - base
    print(f"command: {' '.join([sys.executable, '-m', 'bench.rooms_memory', *sys.argv[1:]])}")
    print(f"machine: {os.cpu_count()} cores")
    print(
        f"rooms={args.rooms} changes/room={args.changes} fill={fill_s:.1f}s "
        f"({args.rooms / fill_s:.0f} rooms/s)"
    )
    print(f"rooms loaded right after the fill: {loaded:.0f}; unloaded later: {unloads:.0f}")
    print(
        f"RSS baseline {base / 1024:.1f} MiB, after fill {peak / 1024:.1f} MiB "
        f"(+{growth / 1024:.1f} MiB, {growth / max(loaded, 1):.2f} KiB per loaded room), "
        f"after idle unload {after / 1024:.1f} MiB (+{(after - base) / 1024:.1f} MiB, "
        f"{100 * (after - base) / max(growth, 1):.0f}% of the peak growth kept)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=5000)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--unload-ms", type=int, default=2000)
    parser.add_argument("--sqlite-cache-kib", type=int, default=8192)
    asyncio.run(main(parser.parse_args()))
