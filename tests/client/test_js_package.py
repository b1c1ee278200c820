"""``npm pack`` of clients/js gives a tarball that installs and works on its own.

The tarball is packed (its ``prepack`` builds ``dist`` from an empty folder), installed
into an empty npm project outside the repository next to ``ws`` (from npm's cache when
``npm ci`` has filled it, else the registry), and a script in that project imports
``roomsync-client`` by its package name, connects to a real server, writes, flushes and
prints its canonical root, which must equal the server's and the Python SDK's view of the
write. The package's ``exports`` map and its type declarations are checked too.
Skipped only when node or npm is missing (and failed instead under ``CI=true``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from roomsync.client import connect
from roomsync.testing.server import ServerHandle

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
NODE, NPM = shutil.which("node"), shutil.which("npm")
TIMEOUT = 60.0

if (NODE is None or NPM is None) and os.environ.get("CI") == "true":
    raise RuntimeError("node and npm are required under CI=true (tests/client/test_js_package.py)")
pytestmark = pytest.mark.skipif(NODE is None or NPM is None, reason="node or npm is missing")

SCRIPT = """
import WebSocket from "ws";
import { connect, PROTOCOL_VERSION } from "roomsync-client";
const [url, room] = process.argv.slice(2);
const client = await connect({ url, room, WebSocket, logger: null, actor: "packed" });
try {
  await client.waitSynced(20000);
  client.setJSON("/packed/a", { from: "tarball" });
  client.setText("/packed/b", "hello");
  await client.flush(20000);
  const server = await client.serverRoot();
  process.stdout.write(JSON.stringify({
    root: client.root, server, version: PROTOCOL_VERSION, binary: client.caps.includes("binary"),
  }) + "\\n");
} finally {
  await client.close();
}
"""


def npm(*args: str, cwd: Path) -> str:
    assert NPM is not None
    done = subprocess.run(
        [NPM, *args, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"npm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tarball, installed with ``ws`` into a fresh project; returns the project."""
    if not (JS / "node_modules").exists():
        npm("ci", cwd=JS)
    out = tmp_path_factory.mktemp("pack")
    listing = json.loads(npm("pack", "--json", "--pack-destination", str(out), cwd=JS))
    tarball = out / listing[0]["filename"]
    assert tarball.is_file()
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for needed in ("index.js", "index.d.ts", "react.js", "react.d.ts"):
        assert f"package/dist/{needed}" in names, f"{needed} missing from {tarball.name}"
    assert "package/package.json" in names
    assert not any("/test/" in n or "node_modules" in n for n in names), "tests or deps packed"

    project = tmp_path_factory.mktemp("app")
    (project / "package.json").write_text(
        json.dumps({"name": "app", "version": "1.0.0", "private": True, "type": "module"})
    )
    ws_version = json.loads((JS / "package.json").read_text())["devDependencies"]["ws"]
    npm("install", "--prefer-offline", str(tarball), f"ws@{ws_version}", cwd=project)
    (project / "main.mjs").write_text(SCRIPT)
    return project


def test_the_tarball_exports_what_package_json_declares(packed: Path) -> None:
    installed = packed / "node_modules" / "roomsync-client"
    manifest = json.loads((installed / "package.json").read_text())
    for entry, paths in manifest["exports"].items():
        if entry == "./package.json":
            continue
        for path in (paths["import"], paths["types"]):
            assert (installed / path).is_file(), f"exports[{entry!r}] -> {path} is missing"
    assert manifest["peerDependencies"]["react"], "React stays a peer dependency"
    assert "react" not in manifest.get("dependencies", {})


async def test_the_installed_tarball_syncs_with_a_real_server(
    packed: Path, srv: ServerHandle
) -> None:
    assert NODE is not None
    room = "js-package"
    proc = await asyncio.create_subprocess_exec(
        NODE,
        "main.mjs",
        srv.url,
        room,
        cwd=packed,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    assert out["binary"] is True
    assert out["version"] == 1
    async with await connect(srv.url, room, actor="py-check") as py:
        await py.wait_synced(TIMEOUT)
        assert py.get_json("/packed/a") == {"from": "tarball"}
        assert py.get("/packed/b") == b"hello"
        assert out["root"] == out["server"] == py.root == await py.server_root()
