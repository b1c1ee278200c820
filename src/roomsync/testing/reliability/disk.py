"""A full disk over real sockets: the data dir of a ``roomsync serve`` on a small tmpfs,
filled to ENOSPC while a writer writes and readers read (issue 9's probe, issue 16).

``tests/storage/test_sqlite_disk_full.py`` proves the store and ``/readyz`` in-process;
this drives the shipped server: the write that does not fit is refused in its ack and the
writer is told to retry (``overload`` + ``retry_after_ms``, 1011); nothing acked is
missing from the disk and no reader saw a change that was not acked; ``/readyz`` says
``disk is full`` while it is; hellos are still welcomed and writes refused the same way;
once the filler is deleted the same process acks writes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from ...client import Backoff, connect
from ...core.codec import pack_data, unpack_data
from ...core.entries import Change
from ...storage.sqlite import SqliteStore
from ..wsclient import closed, hello, recv
from .durability import replay_cli
from .harness import DOCUMENTED_CLOSES, Context, Node, Probes
from .scorecard import Outcome

DISK = "8m"
FILLER_BYTES = 5 << 20
ROOM = "full-disk"


@contextlib.contextmanager
def mounted_tmpfs(where: Path, size: str) -> Any:
    """A ``size`` tmpfs on the new directory ``where`` for the block, unmounted after."""
    where.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        check=True,
        timeout=30,
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


def change(path: str, value: bytes, actor: str = "w") -> Change:
    return Change(path, int(time.time() * 1000), 0, actor, value)


class Reader:
    """A peer that reads every broadcast until its connection ends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: dict[int, bytes | None] = {}
        self.close_code: int | None = None
        self.errors: list[dict[str, Any]] = []

    async def run(self) -> None:
        seen, self.close_code = await closed(self.ws, timeout=120)
        for msg in seen:
            if msg["type"] == "pack":
                for c in unpack_data(msg["data"]):
                    self.received[c.seq or 0] = c.value
            elif msg["type"] == "error":
                self.errors.append(msg)


async def write_until_refused(
    http: aiohttp.ClientSession, node: Node, acked: dict[int, tuple[str, bytes]], start: int
) -> tuple[int, list[dict[str, Any]], int | None]:
    """One writer, 1 KiB per pack, until an ack refuses; (next index, the frames from the
    refusal on, the close code)."""
    ws, _ = await hello(http, node.ws_url(ROOM), actor="w", catchup=False)
    i = start
    try:
        while i < start + 50_000:
            value = (b"%07d" % i) * 146  # ~1 KiB
            await ws.send_json({"type": "pack", "data": pack_data([change(f"/k/{i}", value)])})
            while (msg := await recv(ws, timeout=60))["type"] != "ack":
                pass
            if msg["seqs"] == [None]:
                rest, code = await closed(ws, timeout=30)
                return i + 1, [msg, *rest], code
            acked[msg["seqs"][0]] = (f"/k/{i}", value)
            i += 1
        return i, [], None
    finally:
        await ws.close()


async def readyz(http: aiohttp.ClientSession, node: Node) -> tuple[int, dict[str, Any]]:
    async with http.get(node.url + "/readyz") as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def run(ctx: Context, out: Outcome) -> None:
    with mounted_tmpfs(ctx.workdir / "disk", DISK) as disk:
        filler = disk / "filler"
        filler.write_bytes(os.urandom(FILLER_BYTES))
        node = Node(disk / "data")
        node.log_path = ctx.workdir / "node.log"
        acked: dict[int, tuple[str, bytes]] = {}
        sdk_written: dict[str, bytes] = {}
        readers: list[Reader] = []
        with node.running():
            timeout = aiohttp.ClientTimeout(total=60)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                Probes(out, node.url, node).running(),
            ):
                status, _ = await readyz(http, node)
                out.check(status == 200, f"/readyz {status} before the disk filled")
                for k in range(2):
                    ws, _ = await hello(http, node.ws_url(ROOM), actor=f"reader{k}")
                    readers.append(Reader(ws))
                reading = [asyncio.create_task(r.run()) for r in readers]
                app = await connect(
                    node.url, ROOM, actor="app", backoff=Backoff(0.05, 2, 0.5), binary=False
                )
                nxt, frames, code = await write_until_refused(http, node, acked, 0)
                out.check(bool(frames), "the disk never filled up")
                if frames:
                    await check_refusal(out, frames, code, "first refusal")
                    out.faults += 1
                await asyncio.wait_for(asyncio.gather(*reading), 60)
                for r in readers:
                    out.check(
                        r.close_code in DOCUMENTED_CLOSES,
                        f"a reader was closed with {r.close_code}",
                    )
                    phantom = {s for s in r.received if s not in acked}
                    out.check(not phantom, f"readers received unacked seqs {sorted(phantom)[:5]}")
                status, report = await readyz(http, node)
                store_error = str(report.get("checks", {}).get("store", {}).get("error", ""))
                out.check(
                    status == 503 and "full" in store_error,
                    f"/readyz while full: {status} {report}",
                )
                # An SDK client writes while the disk is full: told to retry, it keeps its
                # writes (nothing rolled back) and they are stored once there is room.
                app_writes = {f"/app/{i}": b"app:%d" % i for i in range(20)}
                for path, value in app_writes.items():
                    app.set(path, value)
                with contextlib.suppress(TimeoutError):
                    await app.flush(timeout=3)
                # While full: still welcomed, and every write refused the same way.
                retries = 0
                for _ in range(3):
                    nxt, frames, code = await write_until_refused(http, node, acked, nxt)
                    if frames:
                        retries += 1
                        await check_refusal(out, frames, code, "refusal while full")
                out.figures["refused_while_full"] = retries
                filler.unlink()
                t0 = time.monotonic()
                while (await readyz(http, node))[0] != 200 and time.monotonic() - t0 < 15:
                    await asyncio.sleep(0.1)
                status, report = await readyz(http, node)
                out.check(status == 200, f"/readyz after space was freed: {status} {report}")
                out.figures["ready_again_s"] = round(time.monotonic() - t0, 2)
                ws, _ = await hello(http, node.ws_url(ROOM), actor="w", catchup=False)
                resumed = 0
                for i in range(nxt, nxt + 200):
                    value = b"after:%d" % i
                    await ws.send_json(
                        {"type": "pack", "data": pack_data([change(f"/k/{i}", value)])}
                    )
                    while (msg := await recv(ws, timeout=30))["type"] != "ack":
                        pass
                    if msg["seqs"] != [None]:
                        acked[msg["seqs"][0]] = (f"/k/{i}", value)
                        resumed += 1
                await ws.close()
                out.check(resumed == 200, f"only {resumed}/200 writes acked after space was freed")
                await app.flush(timeout=30)
                out.figures["sdk_refused"] = sorted({r.code for r in app.refused})
                out.check(
                    not app.refused,
                    f"the SDK dropped {len(app.refused)} writes the server said to retry: "
                    f"{app.refused[0].code if app.refused else ''}",
                )
                kept = {p for p, v in app_writes.items() if app.get(p) == v}
                out.check(
                    kept == set(app_writes), f"the SDK lost {len(app_writes) - len(kept)} writes"
                )
                sdk_written = app_writes
                await app.close()
                out.faults += 1
            out.crashes += len(node.log_events("session.internal_error"))
            code = node.kill(15)
            out.check(code == 0, f"SIGTERM exit status {code}")
        lost = await stored_check(node, acked, out, sdk_written)
        out.lost += lost
        report = await replay_cli(ROOM, data_dir=node.data_dir)
        out.check(report.get("match") is True, f"roomsync replay does not match: {report}")
        out.load.update({"disk": DISK, "readers": len(readers), "acked_changes": len(acked)})


async def check_refusal(
    out: Outcome, frames: list[dict[str, Any]], code: int | None, when: str
) -> None:
    ack = frames[0]
    refused = ack.get("refused") or [{}]
    out.figures.setdefault("refusal_code", refused[0].get("code"))
    errors = [f for f in frames if f["type"] == "error"]
    out.figures.setdefault("error_code", errors[0]["code"] if errors else None)
    out.figures.setdefault("close_code", code)
    retryable = (
        bool(errors) and errors[-1].get("code") == "overload" and ("retry_after_ms" in errors[-1])
    )
    out.check(retryable, f"{when}: not told to retry: {frames}")
    out.check(code in (1011, None) or code == 1011, f"{when}: closed with {code}")


async def stored_check(
    node: Node, acked: dict[int, tuple[str, bytes]], out: Outcome, sdk: dict[str, bytes]
) -> int:
    store = SqliteStore(node.data_dir / "roomsync.db")
    await store.open()
    try:
        log = await store.changes_since(ROOM, 0, limit=10_000_000)
    finally:
        await store.close()
    stored = {c.seq or 0: (c.path, c.value) for c in log}
    seqs = sorted(stored)
    out.check(seqs == list(range(1, len(seqs) + 1)), "stored seqs are not gap-free")
    missing = [s for s, pv in acked.items() if stored.get(s) != pv]
    out.check(not missing, f"{len(missing)} acked changes are not stored: {missing[:5]}")
    latest = {path: value for path, value in stored.values()}
    unstored = [p for p, v in sdk.items() if latest.get(p) != v]
    out.check(not unstored, f"{len(unstored)} SDK writes are not stored: {unstored[:5]}")
    return len(missing)
