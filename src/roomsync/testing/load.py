"""Load for tests and the reliability suite: fill a room over a real socket, and time
``/healthz`` while something else runs.

::

    await fill(http, srv.ws_url("big"), 20_000)
    worst = await healthz_worst_s(http, srv.url, probes=20)
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from ..core.codec import pack_data
from ..core.entries import Change
from .wsclient import hello, recv_type

__all__ = ["fill", "healthz_worst_s"]


async def fill(http: aiohttp.ClientSession, ws_url: str, n: int, value: bytes = b'"item"') -> None:
    """Write ``n`` entries ``/items/<i:05d>/title`` = ``value`` into the room at
    ``ws_url``, in packs well under ``max_frame_bytes``; every one must be acked."""
    ws, _ = await hello(http, ws_url, actor="filler", catchup=False)
    now = int(time.time() * 1000)
    per_pack = 400_000 // (len(value) + 40)  # well under max_frame_bytes in base64
    try:
        for start in range(0, n, per_pack):
            changes = [
                Change(f"/items/{i:05d}/title", now, 0, "filler", value)
                for i in range(start, min(n, start + per_pack))
            ]
            await ws.send_json({"type": "pack", "data": pack_data(changes)})
            ack = await recv_type(ws, "ack", timeout=30)
            if None in ack["seqs"]:
                raise AssertionError(f"fill refused: {ack}")
    finally:
        await ws.close()


async def healthz_worst_s(http: aiohttp.ClientSession, url: str, probes: int) -> float:
    """The slowest of ``probes`` ``GET /healthz`` (20 ms apart), in seconds; each must be 200."""
    worst = 0.0
    for _ in range(probes):
        t0 = time.perf_counter()
        async with http.get(url + "/healthz") as resp:
            if resp.status != 200:
                raise AssertionError(f"/healthz answered {resp.status}")
        worst = max(worst, time.perf_counter() - t0)
        await asyncio.sleep(0.02)
    return worst
