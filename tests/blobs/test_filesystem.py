"""Filesystem-specific guarantees: layout, clear permission errors, no temp file left behind.

The tests run as root, where ``chmod`` does not stop writes, so unwritable storage is made
with paths that fail for root too: a blob root below a regular file (ENOTDIR), and a
directory under /sys (EPERM on Linux sysfs).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from roomsync.blobs import (
    BlobBackendError,
    BlobMissing,
    BlobVerifyFailed,
    FilesystemBlobStore,
    UrlSigner,
    sha256_hex,
)
from roomsync.testing.blob_contract import chunked, large_chunks, large_hash

DATA = b"filesystem blob"
HASH = sha256_hex(DATA)
NOW = 1_700_000_000_000
UPLOAD = "fs-upload-0123456789"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FilesystemBlobStore]:
    s = FilesystemBlobStore(tmp_path / "blobs")
    await s.open()
    yield s
    await s.close()


def _temp_files(store: FilesystemBlobStore) -> list[Path]:
    return list((store.root / ".tmp").iterdir())


async def test_layout(store: FilesystemBlobStore) -> None:
    await store.put(HASH, DATA)
    hex_ = HASH.removeprefix("sha256:")
    path = store.root / hex_[:2] / hex_[2:4] / hex_
    assert store.path_for(HASH) == path
    assert path.read_bytes() == DATA
    assert _temp_files(store) == []


async def test_list_ignores_foreign_files(store: FilesystemBlobStore) -> None:
    await store.put(HASH, DATA)
    hex_ = HASH.removeprefix("sha256:")
    (store.root / "README").write_text("not a blob")
    (store.root / hex_[:2] / hex_[2:4] / "notes.txt").write_text("x")
    (store.root / "zz").mkdir()
    # A correctly named file in the wrong directory is not the blob it claims to be.
    (store.root / hex_[:2] / "00").mkdir()
    (store.root / hex_[:2] / "00" / hex_).write_bytes(DATA)
    assert [h async for h in store.list_hashes()] == [HASH]


async def test_staging_layout_and_commit(store: FilesystemBlobStore) -> None:
    await store.put_upload_stream(UPLOAD, HASH, len(DATA), chunked(DATA, 4))
    staged = store.root / ".staging" / UPLOAD
    assert store.staging_path_for(UPLOAD) == staged and staged.read_bytes() == DATA
    assert [h async for h in store.list_hashes()] == []
    assert _temp_files(store) == []
    await store.commit_upload(UPLOAD, HASH, len(DATA))
    assert not staged.exists()
    assert store.path_for(HASH).read_bytes() == DATA
    assert _temp_files(store) == []


async def test_staged_put_verifies_while_streaming(store: FilesystemBlobStore) -> None:
    attempts = ((b"x" * len(DATA), len(DATA)), (DATA, len(DATA) - 1), (DATA + b"!", len(DATA)))
    for body, size in attempts:
        with pytest.raises(BlobVerifyFailed):
            await store.put_upload_stream(UPLOAD, HASH, size, chunked(body, 4))
        assert not store.staging_path_for(UPLOAD).exists()
    assert _temp_files(store) == []


async def test_staged_put_replaces_an_earlier_put_to_the_same_url(
    store: FilesystemBlobStore,
) -> None:
    store.staging_path_for(UPLOAD).write_bytes(b"left by an interrupted attempt")
    await store.put_upload_stream(UPLOAD, HASH, len(DATA), chunked(DATA, 4))
    await store.commit_upload(UPLOAD, HASH, len(DATA))
    assert await store.read(HASH) == DATA


async def test_failed_commit_leaves_no_files(store: FilesystemBlobStore) -> None:
    await store.put(HASH, DATA)
    store.staging_path_for(UPLOAD).write_bytes(b"y" * len(DATA))
    with pytest.raises(BlobVerifyFailed):
        await store.commit_upload(UPLOAD, HASH, len(DATA))
    assert list((store.root / ".staging").iterdir()) == []
    assert _temp_files(store) == []
    assert store.path_for(HASH).read_bytes() == DATA


async def test_root_below_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("I am not a directory")
    store = FilesystemBlobStore(blocker / "blobs")
    with pytest.raises(BlobBackendError) as exc:
        await store.open()
    assert exc.value.reason == "permission-denied"
    assert str(blocker / "blobs") in str(exc.value)
    assert "Not a directory" in str(exc.value)


@pytest.mark.skipif(sys.platform != "linux", reason="sysfs refuses mkdir only on Linux")
async def test_permission_denied_for_root_too() -> None:
    root = Path("/sys/roomsync-blobs-test")
    if root.exists():
        pytest.skip("unexpected: /sys accepted a directory")
    store = FilesystemBlobStore(root)
    try:
        await store.open()
    except BlobBackendError as exc:
        assert exc.reason == "permission-denied"
        assert str(root) in str(exc)
    else:
        root.rmdir()
        pytest.skip("this kernel lets root create directories in /sys")


async def test_storage_broken_after_open(store: FilesystemBlobStore) -> None:
    tmp = store.root / ".tmp"
    tmp.rmdir()
    tmp.write_text("an operator put a file here")
    with pytest.raises(BlobBackendError) as exc:
        await store.put(HASH, DATA)
    assert exc.value.reason == "permission-denied"
    assert str(store.root) in str(exc.value)
    with pytest.raises(BlobBackendError):
        await store.check()
    assert await store.stat(HASH) is None


async def test_unwritable_shard_directory(store: FilesystemBlobStore) -> None:
    hex_ = HASH.removeprefix("sha256:")
    (store.root / hex_[:2]).write_text("blocks the shard directory")
    with pytest.raises(BlobBackendError) as exc:
        await store.put(HASH, DATA)
    assert exc.value.reason == "permission-denied"
    assert _temp_files(store) == []


async def test_failed_puts_leave_no_temp_files(store: FilesystemBlobStore) -> None:
    with pytest.raises(BlobVerifyFailed):
        await store.put_stream(HASH, len(DATA), chunked(b"x" * len(DATA), 4))
    with pytest.raises(BlobVerifyFailed):
        await store.put_stream(HASH, len(DATA) - 1, chunked(DATA, 4))
    with pytest.raises(BlobVerifyFailed):
        await store.put_stream(sha256_hex(b"big"), 5_000_000, large_chunks(5_000_000))
    assert _temp_files(store) == []
    assert await store.stat(HASH) is None


async def test_cancelled_put_leaves_no_temp_file(store: FilesystemBlobStore) -> None:
    started = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield DATA[:4]
        started.set()
        await asyncio.Event().wait()  # a client that stops sending
        yield DATA[4:]

    task = asyncio.create_task(store.put_stream(HASH, len(DATA), stalled()))
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(0)
    assert len(_temp_files(store)) == 1  # the upload in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _temp_files(store) == []
    assert await store.stat(HASH) is None


async def test_small_write_buffer_streams_to_disk(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path, write_buffer=1000, fsync=False)
    await store.open()
    h = await large_hash(300_000)
    await store.put_stream(h, 300_000, large_chunks(300_000))
    await store.verify(h, 300_000)


async def test_no_grants_without_signer(store: FilesystemBlobStore) -> None:
    assert not store.can_grant_urls()
    assert store.upload_url(HASH, 1, upload_id=UPLOAD, now_ms=NOW, ttl_s=60) is None
    assert store.download_url(HASH, now_ms=NOW, ttl_s=60) is None


async def test_signed_grants(tmp_path: Path) -> None:
    signer = UrlSigner(b"filesystem-test-secret-123456")
    store = FilesystemBlobStore(tmp_path, signer=signer, public_base_url="http://h:8080/")
    await store.open()
    assert store.can_grant_urls()
    up = store.upload_url(HASH, len(DATA), upload_id=UPLOAD, now_ms=NOW, ttl_s=60)
    assert up is not None and up.method == "PUT" and up.expires_ms == NOW + 60_000
    assert up.url.startswith(f"http://h:8080/v1/uploads/{UPLOAD}?")
    query = dict(parse_qsl(urlsplit(up.url).query))
    ticket = signer.check_upload(UPLOAD, query, now_ms=NOW)
    assert (ticket.hash, ticket.size, ticket.expires_ms) == (HASH, len(DATA), NOW + 60_000)
    with pytest.raises(BlobMissing):
        store.download_url(HASH, now_ms=NOW, ttl_s=60)
    await store.put(HASH, DATA)
    down = store.download_url(HASH, now_ms=NOW, ttl_s=60)
    assert down is not None and down.method == "GET"
    query = dict(parse_qsl(urlsplit(down.url).query))
    assert signer.check_query("GET", HASH, query, now_ms=NOW) == len(DATA)
