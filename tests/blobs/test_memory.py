"""The memory store's test hooks: injected failures and tampering."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from roomsync.blobs import BlobBackendError, MemoryBlobStore, sha256_hex

DATA = b"memory blob"
HASH = sha256_hex(DATA)
UPLOAD = "memory-upload-0001"


async def test_fail_with_makes_every_operation_fail() -> None:
    store = MemoryBlobStore()
    await store.open()
    await store.put(HASH, DATA)
    store.fail_with(BlobBackendError("disk on fire", reason="unavailable"))
    attempts: tuple[Callable[[], Awaitable[object]], ...] = (
        store.check,
        lambda: store.put(HASH, DATA),
        lambda: store.stat(HASH),
        lambda: store.read(HASH),
        lambda: store.delete(HASH),
        lambda: store.commit_upload(UPLOAD, HASH, len(DATA)),
        lambda: store.discard_upload(UPLOAD),
    )
    for attempt in attempts:
        with pytest.raises(BlobBackendError, match="disk on fire"):
            await attempt()
    with pytest.raises(BlobBackendError):
        await store.open()
    store.fail_with(None)
    assert await store.read(HASH) == DATA
    store.stage(UPLOAD, DATA)
    await store.commit_upload(UPLOAD, HASH, len(DATA))


async def test_no_url_grants() -> None:
    store = MemoryBlobStore()
    assert not store.can_grant_urls()
    assert store.upload_url(HASH, 1, upload_id=UPLOAD, now_ms=0, ttl_s=1) is None
    assert store.download_url(HASH, now_ms=0, ttl_s=1) is None
