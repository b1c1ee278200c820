"""Blobs in the SDK against a real server (SPEC §4): inline, direct (filesystem and S3),
upload-denied fallback, blob-available, not-found, rejections, concurrent calls."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import roomsync.client.blobs as blobs_module
from roomsync.client import (
    Backoff,
    BlobInfo,
    BlobNotFound,
    BlobRejected,
    RoomClient,
    connect,
)
from roomsync.core import blobflow
from roomsync.core.blobflow import HttpPut
from roomsync.testing.moto_server import s3_blob_settings
from roomsync.testing.server import ServerHandle, running_server, wait_until

ROOM = "blob-room"
FAST = Backoff(base=0.01, factor=2, max=0.05)
TIMEOUT = 10.0
INLINE_CAPS = ["read", "write", "blob"]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ops(srv: ServerHandle, op: str, outcome: str) -> float:
    value = srv.server.metrics.registry.get_sample_value(
        "roomsync_blob_ops_total", {"op": op, "outcome": outcome}
    )
    return value or 0.0


_open: list[RoomClient] = []


async def close_all() -> None:
    """Close every client the test opened (also when it failed halfway)."""
    while _open:
        await _open.pop().close()


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, **overrides: Any) -> AsyncIterator[ServerHandle]:
    """``running_server`` that closes the test's clients before the server stops."""
    async with running_server(tmp_path, **overrides) as handle:
        try:
            yield handle
        finally:
            await close_all()


async def open_client(srv: ServerHandle, **kwargs: Any) -> RoomClient:
    kwargs.setdefault("backoff", FAST)
    client = await asyncio.wait_for(connect(srv.url, ROOM, **kwargs), TIMEOUT)
    _open.append(client)
    return client


@pytest.fixture(params=["filesystem", "s3"])
async def bsrv(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServerHandle]:
    """conftest's ``bsrv``, through ``serve`` so the test's clients close first."""
    overrides: dict[str, Any] = {"policy__blob_max_bytes": 1 << 20}
    if request.param == "s3":
        overrides.update(
            s3_blob_settings(
                request.getfixturevalue("moto_endpoint"), request.getfixturevalue("bucket")
            )
        )
    async with serve(tmp_path, **overrides) as handle:
        yield handle


@pytest.fixture
async def srv_fs(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with serve(tmp_path, policy__blob_max_bytes=4096) as handle:
        yield handle


async def test_inline_put_and_get(tmp_path: Path) -> None:
    async with serve(tmp_path) as srv:
        up = await open_client(srv, caps=INLINE_CAPS)
        other = await open_client(srv, caps=INLINE_CAPS)
        assert "blob-direct" not in up.caps
        available: list[BlobInfo] = []
        other.on_blob_available(available.append)
        data = b"hello blob " * 300

        hash = await up.put_blob(data, timeout=TIMEOUT)
        assert hash == digest(data)
        assert await other.get_blob(hash, timeout=TIMEOUT) == data
        await wait_until(lambda: available == [BlobInfo(hash, len(data))], timeout=TIMEOUT)
        assert ops(srv, "upload", "uploaded") == 1 and ops(srv, "grant", "granted") == 0
        # Uploading the same bytes again is harmless: same address.
        assert await up.put_blob(bytearray(data), timeout=TIMEOUT) == hash
        with pytest.raises(TypeError):
            await up.put_blob("text")  # type: ignore[arg-type]


async def test_direct_put_and_get(bsrv: ServerHandle) -> None:
    up = await open_client(bsrv)
    other = await open_client(bsrv)
    assert "blob-direct" in up.caps
    available: list[BlobInfo] = []
    other.on_blob_available(available.append)
    data = bytes(range(256)) * 400  # 100 KiB

    hash = await up.put_blob(data, timeout=TIMEOUT)
    assert hash == digest(data)
    assert ops(bsrv, "grant", "granted") == 1 and ops(bsrv, "confirm", "uploaded") == 1
    assert ops(bsrv, "upload", "uploaded") == 0  # nothing went inline
    await wait_until(lambda: available == [BlobInfo(hash, len(data))], timeout=TIMEOUT)
    assert await other.get_blob(hash, timeout=TIMEOUT) == data
    if bsrv.server.blobs.store.name == "filesystem":
        # Fetched through the signed URL (counted once the response is written).
        await wait_until(lambda: ops(bsrv, "get", "served") == 1, timeout=TIMEOUT)
    # A client without blob-direct still gets it, inline.
    inline = await open_client(bsrv, caps=INLINE_CAPS)
    assert await inline.get_blob(hash, timeout=TIMEOUT) == data


async def test_concurrent_calls_are_matched_by_hash(bsrv: ServerHandle) -> None:
    direct = await open_client(bsrv)
    inline = await open_client(bsrv, caps=INLINE_CAPS)
    blobs = [bytes([i]) * (1000 + 997 * i) for i in range(6)]
    hashes = await asyncio.wait_for(
        asyncio.gather(
            *(direct.put_blob(b) for b in blobs[:3]),
            *(inline.put_blob(b) for b in blobs[3:]),
            direct.put_blob(blobs[0]),  # the same blob twice at once
        ),
        TIMEOUT,
    )
    assert hashes == [digest(b) for b in blobs] + [digest(blobs[0])]
    unknown = digest(b"never uploaded")
    for client in (direct, inline):
        results = await asyncio.wait_for(
            asyncio.gather(
                *(client.get_blob(h) for h in reversed(hashes[:6])),
                client.get_blob(unknown),
                return_exceptions=True,
            ),
            TIMEOUT,
        )
        assert results[:6] == list(reversed(blobs))
        assert isinstance(results[6], BlobNotFound) and results[6].hash == unknown


async def test_upload_denied_falls_back_to_inline(tmp_path: Path) -> None:
    async with serve(tmp_path, blobs__backend="memory") as srv:
        up = await open_client(srv)
        other = await open_client(srv, caps=INLINE_CAPS)
        assert "blob-direct" in up.caps
        available: list[BlobInfo] = []
        other.on_blob_available(available.append)
        data = b"memory backend: no URL grants" * 10
        hash = await up.put_blob(data, timeout=TIMEOUT)
        assert ops(srv, "grant", "denied") == 1 and ops(srv, "upload", "uploaded") == 1
        assert await up.get_blob(hash, timeout=TIMEOUT) == data  # inline answer too
        assert await other.get_blob(hash, timeout=TIMEOUT) == data
        await wait_until(lambda: BlobInfo(hash, len(data)) in available, timeout=TIMEOUT)


async def test_unknown_hash_raises_blob_not_found(srv_fs: ServerHandle) -> None:
    client = await open_client(srv_fs)
    hash = digest(b"nobody uploaded this")
    with pytest.raises(BlobNotFound) as info:
        await client.get_blob(hash, timeout=TIMEOUT)
    assert info.value.hash == hash and info.value.reason.startswith("not-found")
    with pytest.raises(ValueError, match="sha256"):
        await client.get_blob("sha256:XYZ")
    # The session goes on.
    data = b"after the miss"
    assert await client.get_blob(await client.put_blob(data), timeout=TIMEOUT) == data


async def test_too_large_blob_is_rejected(srv_fs: ServerHandle) -> None:
    direct = await open_client(srv_fs)
    inline = await open_client(srv_fs, caps=INLINE_CAPS)
    big = b"x" * 5000
    # Direct: the server denies the grant as too large; no inline retry would help.
    with pytest.raises(BlobRejected) as info:
        await direct.put_blob(big, timeout=TIMEOUT)
    assert info.value.reason.startswith("too-large") and info.value.hash == digest(big)
    assert ops(srv_fs, "grant", "denied") == 1
    # Inline: refused before sending, with the server's wording.
    with pytest.raises(BlobRejected, match="too-large: 5000 > blob_max_bytes 4096"):
        await inline.put_blob(big, timeout=TIMEOUT)
    assert await srv_fs.server.blobs.store.stat(digest(big)) is None
    # Both sessions go on.
    assert await inline.put_blob(b"small", timeout=TIMEOUT) == digest(b"small")
    assert await direct.put_blob(b"small too", timeout=TIMEOUT) == digest(b"small too")


async def test_blob_larger_than_a_frame_needs_direct(tmp_path: Path) -> None:
    async with serve(tmp_path, server__max_frame_bytes=4096) as srv:
        inline = await open_client(srv, caps=INLINE_CAPS)
        direct = await open_client(srv)
        data = b"y" * 10_000
        with pytest.raises(BlobRejected, match="do not fit a 4096-byte frame"):
            await inline.put_blob(data, timeout=TIMEOUT)
        hash = await direct.put_blob(data, timeout=TIMEOUT)
        assert await direct.get_blob(hash, timeout=TIMEOUT) == data
        assert inline.stats.welcomes == 1  # no 1009: nothing too big was sent


async def test_failed_verification_surfaces_blob_rejected(
    tmp_path: Path, moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 (moto) accepts other bytes at the presigned URL; the server's verification does not."""
    real_put = blobs_module.http_put

    async def tampering_put(
        http: Any, step: HttpPut, ssl: Any
    ) -> blobflow.HttpResponse | blobflow.HttpFailure:
        return await real_put(http, dataclasses.replace(step, body=b"X" * len(step.body)), ssl)

    monkeypatch.setattr(blobs_module, "http_put", tampering_put)
    async with serve(tmp_path, **s3_blob_settings(moto_endpoint, bucket)) as srv:
        client = await open_client(srv)
        data = b"the real bytes" * 50
        with pytest.raises(BlobRejected) as info:
            await client.put_blob(data, timeout=TIMEOUT)
        assert info.value.reason == "verify-failed"
        assert ops(srv, "confirm", "verify-failed") == 1
        assert await srv.server.blobs.store.stat(digest(data)) is None
        with pytest.raises(BlobNotFound):
            await client.get_blob(digest(data), timeout=TIMEOUT)
