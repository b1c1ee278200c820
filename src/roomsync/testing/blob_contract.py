"""The contract every :class:`~roomsync.blobs.BlobStore` keeps, as runner-agnostic checks.

Each check is ``async def check_*(backend: BlobBackendUnderTest) -> None`` and raises
``AssertionError`` (or the store's error) on a violation. ``tests/blobs/test_contract.py``
runs every check in :data:`BLOB_CONTRACT` against the memory, filesystem and S3 stores; a
new backend passes the same list. Give each check a freshly opened, empty store.

``BlobBackendUnderTest.tamper`` overwrites the stored bytes of a hash behind the store's
back (a bit flip on disk, a foreign write to the bucket), so the suite can prove that
``verify`` catches and deletes a bad object. ``BlobBackendUnderTest.stage`` writes bytes
under an upload id's staging name without any check, as a hostile client's PUT to an
upload URL would on an endpoint that enforces nothing (moto), so the suite can prove that
``commit_upload`` verifies and that no upload touches a stored object.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from ..blobs.base import (
    BlobMissing,
    BlobStore,
    BlobStoreError,
    BlobVerifyFailed,
    gc,
    sha256_hex,
)

#: Size of the "large" blob: above S3's 5 MiB minimum part, so S3 stores go multipart
#: when their ``part_size`` is 5 MiB.
LARGE_SIZE = 5 * 1024 * 1024 + 512 * 1024 + 7
LARGE_CHUNK = 64 * 1024
NOW_MS = 1_700_000_000_000


@dataclass(frozen=True)
class BlobBackendUnderTest:
    """An open, empty store, a way to corrupt what it stores (``tamper(hash, data)``) and a
    way to put unchecked bytes under a staging name (``stage(upload_id, data)``)."""

    store: BlobStore
    tamper: Callable[[str, bytes], Awaitable[None]]
    stage: Callable[[str, bytes], Awaitable[None]]


Check = Callable[[BlobBackendUnderTest], Awaitable[None]]


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    """``data`` as an async stream of ``size``-byte chunks, yielding to the loop between."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


async def failing_stream(data: bytes, error: Exception) -> AsyncIterator[bytes]:
    """Yield ``data`` and then raise ``error`` (a client that disconnects mid-upload)."""
    yield data
    raise error


def _large_chunk(index: int) -> bytes:
    seed = hashlib.sha256(index.to_bytes(8, "big")).digest()
    return (seed * (LARGE_CHUNK // len(seed) + 1))[:LARGE_CHUNK]


def large_chunks(total: int = LARGE_SIZE) -> AsyncIterator[bytes]:
    """A deterministic stream of ``total`` bytes made on the fly (never all in memory)."""

    async def gen() -> AsyncIterator[bytes]:
        sent, index = 0, 0
        while sent < total:
            chunk = _large_chunk(index)[: total - sent]
            sent += len(chunk)
            index += 1
            yield chunk

    return gen()


async def large_hash(total: int = LARGE_SIZE) -> str:
    """The hash of :func:`large_chunks` ``(total)``."""
    digest = hashlib.sha256()
    async for chunk in large_chunks(total):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


async def _collect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in it])


async def _hashes(store: BlobStore) -> set[str]:
    return {h async for h in store.list_hashes()}


async def _assert_missing(store: BlobStore, hash: str) -> None:
    assert await store.stat(hash) is None, f"{hash} should not be stored"
    assert hash not in await _hashes(store)


# -- the checks ------------------------------------------------------------------------------


async def check_put_read_stat(b: BlobBackendUnderTest) -> None:
    data = b"hello, blobs"
    h = sha256_hex(data)
    await b.store.put(h, data)
    assert await b.store.stat(h) == len(data)
    assert await b.store.read(h) == data
    assert await _collect(b.store.read_stream(h, chunk_size=5)) == data
    await b.store.verify(h, len(data))
    assert await _hashes(b.store) == {h}


async def check_put_again_is_harmless(b: BlobBackendUnderTest) -> None:
    data = b"same bytes twice"
    h = sha256_hex(data)
    await b.store.put(h, data)
    await b.store.put_stream(h, len(data), chunked(data, 4))
    assert await b.store.read(h) == data
    assert await _hashes(b.store) == {h}


async def check_empty_blob(b: BlobBackendUnderTest) -> None:
    h = sha256_hex(b"")
    await b.store.put(h, b"")
    assert await b.store.stat(h) == 0
    assert await b.store.read(h) == b""
    assert await _collect(b.store.read_stream(h)) == b""
    await b.store.verify(h, 0)


async def check_put_stream_many_chunks(b: BlobBackendUnderTest) -> None:
    data = bytes(range(256)) * 40
    h = sha256_hex(data)
    await b.store.put_stream(h, len(data), chunked(data, 97))
    assert await b.store.read(h) == data
    await b.store.verify(h, len(data))


async def check_missing(b: BlobBackendUnderTest) -> None:
    h = sha256_hex(b"never stored")
    assert await b.store.stat(h) is None
    attempts: tuple[Callable[[], Awaitable[object]], ...] = (
        lambda: b.store.read(h),
        lambda: _collect(b.store.read_stream(h)),
        lambda: b.store.verify(h, 12),
    )
    for attempt in attempts:
        try:
            await attempt()
        except BlobMissing as exc:
            assert exc.reason == "missing"
        else:
            raise AssertionError("reading a missing blob must raise BlobMissing")
    assert await b.store.delete(h) is False


async def check_hash_mismatch_stores_nothing(b: BlobBackendUnderTest) -> None:
    claimed = sha256_hex(b"the announced bytes")
    try:
        await b.store.put_stream(claimed, 19, chunked(b"other bytes, len 19", 5))
    except BlobVerifyFailed as exc:
        assert exc.reason == "hash-mismatch", exc.reason
    else:
        raise AssertionError("a hash mismatch must raise BlobVerifyFailed")
    await _assert_missing(b.store, claimed)


async def check_size_mismatch_stores_nothing(b: BlobBackendUnderTest) -> None:
    data = b"twelve bytes"
    h = sha256_hex(data)
    for announced in (len(data) - 1, len(data) + 1):
        try:
            await b.store.put_stream(h, announced, chunked(data, 5))
        except BlobVerifyFailed as exc:
            assert exc.reason == "size-mismatch", exc.reason
        else:
            raise AssertionError(f"announcing {announced} bytes for 12 must fail")
        await _assert_missing(b.store, h)


async def check_failed_put_keeps_good_copy(b: BlobBackendUnderTest) -> None:
    data = b"the good copy"
    h = sha256_hex(data)
    await b.store.put(h, data)
    try:
        await b.store.put_stream(h, len(data), chunked(b"a bad copy!!!", 4))
    except BlobVerifyFailed:
        pass
    else:
        raise AssertionError("a mismatching put must fail")
    assert await b.store.read(h) == data


async def check_interrupted_stream_stores_nothing(b: BlobBackendUnderTest) -> None:
    data = b"half of an upload"
    h = sha256_hex(data + data)
    try:
        await b.store.put_stream(h, 2 * len(data), failing_stream(data, ConnectionResetError()))
    except ConnectionResetError:
        pass
    else:
        raise AssertionError("the stream's error must propagate")
    await _assert_missing(b.store, h)


async def check_bad_hash_refused(b: BlobBackendUnderTest) -> None:
    for bad in ("sha256:XYZ", "md5:" + "0" * 64, "sha256:" + "A" * 64, "../../etc/passwd"):
        try:
            await b.store.put(bad, b"x")
        except BlobStoreError as exc:
            assert exc.reason == "bad-hash", exc.reason
        else:
            raise AssertionError(f"{bad!r} must be refused")


async def check_tampered_object_fails_verify_and_is_deleted(b: BlobBackendUnderTest) -> None:
    data = b"original content"
    h = sha256_hex(data)
    await b.store.put(h, data)
    await b.tamper(h, b"tampered content")
    try:
        await b.store.verify(h, len(data))
    except BlobVerifyFailed as exc:
        assert exc.reason == "verify-failed", exc.reason
    else:
        raise AssertionError("verify must catch a tampered object")
    await _assert_missing(b.store, h)


async def check_wrong_announced_size_fails_verify_and_keeps_object(
    b: BlobBackendUnderTest,
) -> None:
    data = b"sized content"
    h = sha256_hex(data)
    await b.store.put(h, data)
    for wrong in (len(data) + 1, 1):
        try:
            await b.store.verify(h, wrong)
        except BlobVerifyFailed as exc:
            assert exc.reason == "size-mismatch", exc.reason
        else:
            raise AssertionError("verify must compare the size")
    # The bytes match their address: a wrong expectation never deletes a good object.
    assert await b.store.read(h) == data


async def check_delete(b: BlobBackendUnderTest) -> None:
    data = b"to be deleted"
    h = sha256_hex(data)
    await b.store.put(h, data)
    assert await b.store.delete(h) is True
    await _assert_missing(b.store, h)
    assert await b.store.delete(h) is False


async def check_list_and_gc(b: BlobBackendUnderTest) -> None:
    blobs = {sha256_hex(d): d for d in (b"one", b"two", b"three")}
    for h, d in blobs.items():
        await b.store.put(h, d)
    assert await _hashes(b.store) == set(blobs)
    keep = sha256_hex(b"two")
    deleted = await gc(b.store, {keep, sha256_hex(b"referenced but absent")})
    assert sorted(deleted) == sorted(set(blobs) - {keep})
    assert await _hashes(b.store) == {keep}
    assert await b.store.read(keep) == b"two"


async def check_concurrent_put_same_hash(b: BlobBackendUnderTest) -> None:
    data = bytes(range(256)) * 64
    h = sha256_hex(data)
    await asyncio.gather(*(b.store.put_stream(h, len(data), chunked(data, 1000)) for _ in range(5)))
    assert await b.store.read(h) == data
    await b.store.verify(h, len(data))
    assert await _hashes(b.store) == {h}


async def check_large_stream(b: BlobBackendUnderTest) -> None:
    h = await large_hash()
    await b.store.put_stream(h, LARGE_SIZE, large_chunks())
    assert await b.store.stat(h) == LARGE_SIZE
    digest, total, chunks = hashlib.sha256(), 0, 0
    async for chunk in b.store.read_stream(h, chunk_size=LARGE_CHUNK):
        digest.update(chunk)
        total += len(chunk)
        chunks += 1
    assert total == LARGE_SIZE
    assert "sha256:" + digest.hexdigest() == h
    assert chunks > 1
    await b.store.verify(h, LARGE_SIZE)


async def check_large_stream_mismatch_stores_nothing(b: BlobBackendUnderTest) -> None:
    h = sha256_hex(b"not the large stream")
    try:
        await b.store.put_stream(h, LARGE_SIZE, large_chunks())
    except BlobVerifyFailed as exc:
        assert exc.reason == "hash-mismatch", exc.reason
    else:
        raise AssertionError("a large mismatching stream must fail")
    await _assert_missing(b.store, h)


async def check_probe(b: BlobBackendUnderTest) -> None:
    await b.store.check()
    assert await _hashes(b.store) == set(), "the readyz probe must not leave a blob"


async def check_url_grants(b: BlobBackendUnderTest) -> None:
    data = b"granted"
    h = sha256_hex(data)
    await b.store.put(h, data)
    up = b.store.upload_url(h, len(data), upload_id=UPLOAD_A, now_ms=NOW_MS, ttl_s=60)
    down = b.store.download_url(h, now_ms=NOW_MS, ttl_s=60)
    if not b.store.can_grant_urls():
        assert up is None and down is None
        return
    assert up is not None and down is not None
    assert up.method == "PUT" and down.method == "GET"
    assert up.expires_ms == down.expires_ms == NOW_MS + 60_000
    assert up.url.startswith(("http://", "https://")) and up.url != down.url
    # The upload URL names its upload id, not the content address.
    assert UPLOAD_A in up.url
    other = b.store.upload_url(h, len(data), upload_id=UPLOAD_B, now_ms=NOW_MS, ttl_s=60)
    assert other is not None and other.url != up.url


# -- staged uploads --------------------------------------------------------------------------

UPLOAD_A = "contract-upload-aaaaaaaa"
UPLOAD_B = "contract-upload-bbbbbbbb"


async def _assert_nothing_staged(store: BlobStore, upload_id: str) -> None:
    assert await store.discard_upload(upload_id) is False, f"{upload_id} is still staged"


async def check_commit_upload_moves_verified_bytes_into_place(b: BlobBackendUnderTest) -> None:
    data = b"bytes a client PUT to its upload URL"
    h = sha256_hex(data)
    await b.stage(UPLOAD_A, data)
    await b.store.commit_upload(UPLOAD_A, h, len(data))
    assert await b.store.read(h) == data
    assert await b.store.stat(h) == len(data)
    assert await _hashes(b.store) == {h}
    await _assert_nothing_staged(b.store, UPLOAD_A)


async def check_commit_of_stored_bytes_dedupes(b: BlobBackendUnderTest) -> None:
    data = b"uploaded by two rooms"
    h = sha256_hex(data)
    await b.store.put(h, data)
    await b.stage(UPLOAD_A, data)
    await b.store.commit_upload(UPLOAD_A, h, len(data))
    assert await b.store.read(h) == data
    assert await _hashes(b.store) == {h}
    await _assert_nothing_staged(b.store, UPLOAD_A)


async def check_failed_commit_never_touches_stored_object(b: BlobBackendUnderTest) -> None:
    good = b"the good copy, stored by room A"
    h = sha256_hex(good)
    await b.store.put(h, good)
    attempts = (
        ("other bytes, same size", b"X" * len(good), len(good)),
        ("the right bytes, a wrong size", good, 1),
        ("a prefix", good[:5], 5),
        ("one byte", b"!", 1),
    )
    for what, staged, size in attempts:
        await b.stage(UPLOAD_A, staged)
        try:
            await b.store.commit_upload(UPLOAD_A, h, size)
        except BlobVerifyFailed as exc:
            assert exc.reason == "verify-failed", (what, exc.reason)
        else:
            raise AssertionError(f"committing {what} must fail")
        assert await b.store.read(h) == good, what
        assert await b.store.stat(h) == len(good), what
        await _assert_nothing_staged(b.store, UPLOAD_A)
    assert await _hashes(b.store) == {h}


async def check_failed_commit_stores_nothing(b: BlobBackendUnderTest) -> None:
    claimed = sha256_hex(b"the announced bytes")
    await b.stage(UPLOAD_A, b"other bytes, len 19")
    try:
        await b.store.commit_upload(UPLOAD_A, claimed, 19)
    except BlobVerifyFailed as exc:
        assert exc.reason == "verify-failed", exc.reason
    else:
        raise AssertionError("a hash mismatch must fail the commit")
    await _assert_missing(b.store, claimed)
    await _assert_nothing_staged(b.store, UPLOAD_A)


async def check_commit_without_staged_bytes_is_missing(b: BlobBackendUnderTest) -> None:
    data = b"never PUT"
    h = sha256_hex(data)
    await b.store.put(h, data)
    for upload_id in (UPLOAD_A, UPLOAD_B):
        try:
            await b.store.commit_upload(upload_id, h, len(data))
        except BlobMissing as exc:
            assert exc.reason == "missing"
        else:
            raise AssertionError("committing an upload that never landed must raise BlobMissing")
    assert await b.store.read(h) == data
    # Committed uploads are gone: a second commit finds nothing.
    await b.stage(UPLOAD_A, data)
    await b.store.commit_upload(UPLOAD_A, h, len(data))
    try:
        await b.store.commit_upload(UPLOAD_A, h, len(data))
    except BlobMissing:
        pass
    else:
        raise AssertionError("an upload commits once")


async def check_discard_removes_only_the_staged_object(b: BlobBackendUnderTest) -> None:
    data = b"stored and staged"
    h = sha256_hex(data)
    await b.store.put(h, data)
    await b.stage(UPLOAD_A, data)
    await b.stage(UPLOAD_B, b"another upload")
    assert await b.store.discard_upload(UPLOAD_A) is True
    assert await b.store.discard_upload(UPLOAD_A) is False
    assert await b.store.read(h) == data
    # The other upload is untouched and still commits.
    await b.store.commit_upload(UPLOAD_B, sha256_hex(b"another upload"), 14)
    assert await _hashes(b.store) == {h, sha256_hex(b"another upload")}


async def check_staged_objects_are_not_blobs(b: BlobBackendUnderTest) -> None:
    data = b"staged, not yet verified"
    h = sha256_hex(data)
    await b.stage(UPLOAD_A, data)
    assert await _hashes(b.store) == set()
    assert await b.store.stat(h) is None
    try:
        await b.store.read(h)
    except BlobMissing:
        pass
    else:
        raise AssertionError("a staged upload must not be readable as a blob")
    assert await gc(b.store, set()) == []
    await b.store.commit_upload(UPLOAD_A, h, len(data))  # gc left it alone
    assert await _hashes(b.store) == {h}


async def check_large_commit(b: BlobBackendUnderTest) -> None:
    data = b"".join([chunk async for chunk in large_chunks()])
    h = sha256_hex(data)
    await b.stage(UPLOAD_A, data)
    await b.store.commit_upload(UPLOAD_A, h, len(data))
    assert await b.store.stat(h) == LARGE_SIZE
    await b.store.verify(h, LARGE_SIZE)
    await _assert_nothing_staged(b.store, UPLOAD_A)


async def _refused_upload_id(attempt: Awaitable[object], bad: str) -> None:
    try:
        await attempt
    except BlobStoreError as exc:
        assert exc.reason == "bad-upload-id", (bad, exc.reason)
    else:
        raise AssertionError(f"upload id {bad!r} must be refused")


async def check_bad_upload_id_refused(b: BlobBackendUnderTest) -> None:
    h = sha256_hex(b"x")
    for bad in ("../../etc/passwd", "", "short", "a.b" * 8, "x" * 129, "a/b" * 8):
        await _refused_upload_id(b.store.commit_upload(bad, h, 1), bad)
        await _refused_upload_id(b.store.discard_upload(bad), bad)
        if b.store.can_grant_urls():
            try:
                b.store.upload_url(h, 1, upload_id=bad, now_ms=NOW_MS, ttl_s=60)
            except BlobStoreError as exc:
                assert exc.reason == "bad-upload-id", (bad, exc.reason)
            else:
                raise AssertionError(f"upload id {bad!r} must not be granted")


#: Every check, in a stable order.
BLOB_CONTRACT: tuple[Check, ...] = (
    check_put_read_stat,
    check_put_again_is_harmless,
    check_empty_blob,
    check_put_stream_many_chunks,
    check_missing,
    check_hash_mismatch_stores_nothing,
    check_size_mismatch_stores_nothing,
    check_failed_put_keeps_good_copy,
    check_interrupted_stream_stores_nothing,
    check_bad_hash_refused,
    check_tampered_object_fails_verify_and_is_deleted,
    check_wrong_announced_size_fails_verify_and_keeps_object,
    check_delete,
    check_list_and_gc,
    check_concurrent_put_same_hash,
    check_large_stream,
    check_large_stream_mismatch_stores_nothing,
    check_probe,
    check_url_grants,
    check_commit_upload_moves_verified_bytes_into_place,
    check_commit_of_stored_bytes_dedupes,
    check_failed_commit_never_touches_stored_object,
    check_failed_commit_stores_nothing,
    check_commit_without_staged_bytes_is_missing,
    check_discard_removes_only_the_staged_object,
    check_staged_objects_are_not_blobs,
    check_large_commit,
    check_bad_upload_id_refused,
)


async def run_blob_contract(make: Callable[[], Awaitable[BlobBackendUnderTest]]) -> None:
    """Run every check, each against a fresh backend from ``make`` (outside pytest)."""
    for check in BLOB_CONTRACT:
        backend = await make()
        try:
            await check(backend)
        finally:
            await backend.store.close()
