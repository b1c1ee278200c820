"""Backend faults on one node: the S3 endpoint goes away and comes back; the blob
directory turns read-only and writable again (SPEC §4 "never silent loss", §7 readyz).

In both the node keeps serving room state (writes acked, reads answered), ``/readyz``
names the blob fault (``checks.blobs.reason``), blob calls fail with an error the SDK
raises (``BlobRejected`` / ``BlobFetchFailed``) and the session survives; when the backend
is back, the next ``/readyz`` passes and blobs work again with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from typing import Any

import aiohttp

from ...client import Backoff, BlobError, RoomClient, connect
from ..server import free_port, running_server
from .disk import mounted_tmpfs
from .harness import Context, Probes
from .scorecard import Outcome


async def readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url + "/readyz") as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def ready_within(http: aiohttp.ClientSession, url: str, seconds: float) -> float | None:
    """Seconds until ``/readyz`` answers 200 (polled), or None when it did not in time."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if (await readyz(http, url))[0] == 200:
            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    return None


async def writes_acked(client: RoomClient, prefix: str, n: int, out: Outcome, when: str) -> None:
    """``n`` room writes during the fault: all acked (the node keeps serving state)."""
    refused = len(client.refused) if hasattr(client, "refused") else 0
    for i in range(n):
        client.set(f"{prefix}/{i}", b"%d" % i)
    await client.flush(timeout=20)
    now = len(client.refused) if hasattr(client, "refused") else 0
    out.check(now == refused, f"{when}: {now - refused} room writes refused")


async def blob_faulted(
    client: RoomClient, stored: str, out: Outcome, when: str
) -> tuple[str | None, str | None]:
    """Upload and fetch during the fault: both must fail with a BlobError (not hang, not
    succeed silently); the reasons."""
    put_reason = get_reason = None
    try:
        await client.put_blob(os.urandom(2048), timeout=20)
        out.check(False, f"{when}: put_blob succeeded during the fault")
    except BlobError as exc:
        put_reason = exc.reason
    try:
        await client.get_blob(stored, timeout=20)
        get_reason = "served"
    except BlobError as exc:
        get_reason = exc.reason
    return put_reason, get_reason


async def run_s3(ctx: Context, out: Outcome) -> None:
    from moto.server import ThreadedMotoServer

    from ..moto_server import create_bucket, s3_blob_settings

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    moto_up = True
    endpoint = f"http://127.0.0.1:{port}"
    try:
        bucket = f"roomsync-rel-{uuid.uuid4().hex[:12]}"
        create_bucket(endpoint, bucket)
        async with (
            running_server(ctx.workdir, **s3_blob_settings(endpoint, bucket)) as srv,
            aiohttp.ClientSession() as http,
            Probes(out, srv.url).running(),
        ):
            client = await connect(
                srv.url, "s3-room", actor="a", backoff=Backoff(base=0.05, max=0.5)
            )
            try:
                stored = await client.put_blob(b"kept across the outage " * 50, timeout=20)
                moto.stop()
                moto_up = False
                out.faults += 1
                status, report = await readyz(http, srv.url)
                blobs = report.get("checks", {}).get("blobs", {})
                out.figures["readyz_during"] = status
                out.figures["readyz_reason"] = blobs.get("reason")
                out.check(
                    status == 503 and blobs.get("ok") is False and bool(blobs.get("reason")),
                    f"/readyz during the S3 outage: {status} {report}",
                )
                await writes_acked(client, "/during-s3", 50, out, "S3 down")
                put_reason, get_reason = await blob_faulted(client, stored, out, "S3 down")
                out.figures["put_error"] = put_reason
                out.figures["get_error"] = get_reason
                moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
                moto.start()
                moto_up = True
                back = await ready_within(http, srv.url, 15)
                out.check(back is not None, "/readyz did not pass again after S3 came back")
                out.figures["ready_again_s"] = None if back is None else round(back, 2)
                again = await client.put_blob(os.urandom(4096), timeout=20)
                out.check(bool(again), "put_blob failed after S3 came back")
                data = await client.get_blob(stored, timeout=20)
                out.check(data == b"kept across the outage " * 50, "stored blob changed")
                out.check(client.connected.is_set(), "the SDK session did not survive the outage")
                server_root = await client.server_root()
                out.check(client.root == server_root, "client and server roots differ")
            finally:
                await client.close()
    finally:
        if moto_up:
            moto.stop()
    out.load.update({"room_writes_during_fault": 50, "blob_calls_during_fault": 2})


async def run_read_only(ctx: Context, out: Outcome) -> None:
    with mounted_tmpfs(ctx.workdir / "blobs", "16m") as blob_dir:
        async with (
            running_server(ctx.workdir / "data", blobs__dir=str(blob_dir)) as srv,
            aiohttp.ClientSession() as http,
            Probes(out, srv.url).running(),
        ):
            client = await connect(srv.url, "ro-room", actor="a", backoff=Backoff(0.05, 2, 0.5))
            remounted = False
            try:
                stored = await client.put_blob(b"written before the remount " * 40, timeout=20)
                await asyncio.to_thread(_remount, blob_dir, "ro")
                remounted = True
                out.faults += 1
                status, report = await readyz(http, srv.url)
                blobs = report.get("checks", {}).get("blobs", {})
                out.figures["readyz_during"] = status
                out.figures["readyz_reason"] = blobs.get("reason")
                out.check(
                    status == 503 and bool(blobs.get("reason")),
                    f"/readyz with a read-only blob dir: {status} {report}",
                )
                await writes_acked(client, "/during-ro", 50, out, "blob dir read-only")
                put_reason, get_reason = await blob_faulted(client, stored, out, "read-only")
                out.figures["put_error"] = put_reason
                out.figures["get_during"] = get_reason
                out.check(get_reason == "served", f"a stored blob was not served: {get_reason}")
                await asyncio.to_thread(_remount, blob_dir, "rw")
                remounted = False
                back = await ready_within(http, srv.url, 15)
                out.check(back is not None, "/readyz did not pass after the remount rw")
                out.figures["ready_again_s"] = None if back is None else round(back, 2)
                await client.put_blob(os.urandom(4096), timeout=20)
                out.check(client.connected.is_set(), "the SDK session did not survive the fault")
            finally:
                if remounted:
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(_remount, blob_dir, "rw")
                await client.close()
    out.load.update({"room_writes_during_fault": 50, "blob_calls_during_fault": 2})


def _remount(where: os.PathLike[str], mode: str) -> None:
    import subprocess

    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True, timeout=30)
