"""The TypeScript client (clients/js, run by Node) and the Python SDK in one room.

Both write concurrently (their own paths and a shared range), each deletes paths the
other wrote, and each uploads a blob the other fetches and verifies; at the end the JS
client's canonical root, the Python client's and the server's (``mst-root``) are equal.
The JS side is ``clients/js/test/interop.mjs`` over the built package (``dist/``); when
``dist`` is missing the test builds it with ``npm ci && npm run build`` (bounded).
Skipped only when ``node`` is not installed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from roomsync.client import connect
from roomsync.testing.server import ServerHandle

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
NODE = shutil.which("node")
N, SHARED, DELETES = 200, 50, 20
TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


def built_package() -> Path:
    """``clients/js/dist``, built first when missing (npm ci from the lock file)."""
    dist = JS / "dist" / "index.js"
    if not dist.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("clients/js/dist is missing and npm is not installed to build it")
        if not (JS / "node_modules").exists():
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=300)
        subprocess.run([npm, "run", "build"], cwd=JS, check=True, timeout=300)
    return dist


async def until(predicate: object, what: str, timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_js_and_python_clients_converge(srv: ServerHandle) -> None:
    built_package()
    room = "js-interop"
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(JS / "test" / "interop.mjs"),
        srv.url,
        room,
        str(N),
        str(SHARED),
        str(DELETES),
        cwd=JS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with await connect(srv.url, room, actor="py-peer") as py:
            await py.wait_synced(TIMEOUT)
            for i in range(N):
                py.set_json(f"/py/{i}", {"from": "py", "i": i})
            for i in range(SHARED):
                py.set_json(f"/shared/{i}", {"from": "py", "i": i})
            blob = b"a blob from the Python client " * 500
            py_hash = await py.put_blob(blob, timeout=TIMEOUT)
            py.set("/py/blob", py_hash.encode())
            py.set("/py/ready", b"1")
            await py.flush(TIMEOUT)

            await until(lambda: py.get("/js/ready") is not None, "/js/ready")
            for i in range(DELETES):
                py.delete(f"/js/{i}")
            js_hash = (py.get("/js/blob") or b"").decode()
            js_blob = await py.get_blob(js_hash, timeout=TIMEOUT)
            assert js_blob.startswith(b"a blob from the JS client")
            py.set("/py/done", b"1")
            await py.flush(TIMEOUT)

            await until(lambda: py.get("/js/done") is not None, "/js/done")
            await py.flush(TIMEOUT)
            server_root = await py.server_root()
            await until(lambda: py.root == server_root, "the Python root to reach the server's")

            stdout, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
            assert proc.returncode == 0, stderr.decode()
            js = json.loads(stdout.decode().strip().splitlines()[-1])
            server_root = await py.server_root()
            assert js["root"] == js["server_root"] == py.root == server_root
            assert js["blob_ok"] is True
            assert js["binary"] is True
            assert js["deleted_seen"] is True
            # Every path but the deleted ones, and each side's blob hash and two markers.
            assert js["count"] == len(list(py.items())) == 2 * (N - DELETES) + SHARED + 6
            for i in range(DELETES):
                assert py.get(f"/py/{i}") is None
            shared = {py.get_json(f"/shared/{i}")["from"] for i in range(SHARED)}
            assert shared <= {"js", "py"}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
