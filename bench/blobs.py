"""Blob throughput and server memory: inline vs direct upload, 1 MB and 50 MB (issue 4).

Starts ``roomsync serve`` (filesystem blobs, pinned to core 0 when possible), uploads
blobs inline (``blob-upload`` over the WebSocket) and directly (``request-upload`` ->
HTTP PUT to the signed URL -> ``blob-uploaded``), and prints MB/s per path and size plus
the server's peak RSS (VmHWM) growth during the direct and the inline 50 MB uploads.

    python -m bench.blobs [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from roomsync.testing.server import server_process

from .common import proc_rss_kb

MB = 1_000_000


def peak_rss_kb(pid: int) -> int:
    """VmHWM: the highest RSS the process has had so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


async def until(ws: aiohttp.ClientWebSocketResponse, *types: str) -> dict[str, Any]:
    while True:
        msg = await ws.receive_json(timeout=120)
        if msg["type"] in types:
            return msg


async def upload_inline(ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    await ws.send_json(
        {
            "type": "blob-upload",
            "hash": digest,
            "size": len(data),
            "data": base64.b64encode(data).decode(),
        }
    )
    reply = await until(ws, "blob-uploaded", "upload-rejected", "error")
    assert reply["type"] == "blob-uploaded", reply


async def upload_direct(
    ws: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession, data: bytes
) -> None:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    await ws.send_json({"type": "request-upload", "hash": digest, "size": len(data)})
    grant = await until(ws, "upload-url", "upload-denied")
    assert grant["type"] == "upload-url", grant
    resp = await http.put(grant["url"], data=data, headers=grant.get("headers") or {})
    assert resp.status in (200, 201), await resp.text()
    await ws.send_json({"type": "blob-uploaded", "hash": digest})
    reply = await until(ws, "blob-uploaded", "upload-rejected")
    assert reply["type"] == "blob-uploaded", reply


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="roomsync-bench-blobs-"))
    env = {
        "ROOMSYNC_SERVER_MAX_FRAME_BYTES": str(80 * 1024 * 1024),
        "ROOMSYNC_POLICY_RATE_BYTES_PER_S": str(10**10),
        "ROOMSYNC_POLICY_RATE_BURST_BYTES": str(10**10),
        "ROOMSYNC_LOG_LEVEL": "warning",
    }
    rows: list[tuple[str, int, float]] = []
    with server_process(data_dir, extra_env=env) as proc:
        pid = proc.proc.pid
        try:
            os.sched_setaffinity(pid, {0})
            os.sched_setaffinity(0, {1})
        except (AttributeError, OSError):
            pass
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(proc.ws_url("blobs"), max_msg_size=0)
            await ws.send_json({"type": "hello", "v": 1, "catchup": False})
            await until(ws, "welcome")
            baseline = proc_rss_kb(pid)
            peaks: dict[str, int] = {}
            for path in ("direct", "inline"):
                for size in (1 * MB, 50 * MB):
                    blobs = [os.urandom(size) for _ in range(args.repeat if size == MB else 2)]
                    t0 = time.perf_counter()
                    for data in blobs:
                        if path == "direct":
                            await upload_direct(ws, http, data)
                        else:
                            await upload_inline(ws, data)
                    elapsed = time.perf_counter() - t0
                    rows.append((path, size, len(blobs) * size / MB / elapsed))
                peaks[path] = peak_rss_kb(pid)
            await ws.close()
        proc.terminate()
    print(f"command: {' '.join([sys.executable, '-m', 'bench.blobs', *sys.argv[1:]])}")
    print(
        f"machine: {os.cpu_count()} cores; server on core 0, client on core 1; "
        "filesystem backend with fsync"
    )
    for path, size, rate in rows:
        print(f"{path:6} upload {size // MB:>3} MB blobs: {rate:8.1f} MB/s")
    print(
        f"server RSS baseline {baseline / 1024:.1f} MiB; peak growth during direct uploads "
        f"+{(peaks['direct'] - baseline) / 1024:.1f} MiB (streamed), during inline uploads "
        f"+{(peaks['inline'] - baseline) / 1024:.1f} MiB (a 50 MB inline frame is held as "
        "base64 text, then as bytes)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="1 MB blobs per path")
    asyncio.run(main(parser.parse_args()))
