"""An in-process blob store for tests and ``--blobs memory`` (SPEC §4). Grants no URLs.

:meth:`MemoryBlobStore.fail_with` makes every operation raise a given
:class:`~.base.BlobBackendError`, so server tests can check that storage failures surface
as errors and metrics. :meth:`MemoryBlobStore.stage` stands in for a client's PUT to an
upload URL (which this store never grants), so the staging contract runs here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from .base import (
    BlobBackendError,
    BlobMissing,
    StreamVerifier,
    UrlGrant,
    check_size,
    check_upload_id,
    hash_hex,
    one_chunk,
    scrub_verdict,
    sha256_hex,
    staged_verdict,
)


class MemoryBlobStore:
    """Blobs in a dict. ``put_stream`` keeps the chunks until the hash matched, then stores."""

    name = "memory"

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._staged: dict[str, bytes] = {}  # upload id -> bytes a client PUT there
        self._failure: BlobBackendError | None = None

    def fail_with(self, error: BlobBackendError | None) -> None:
        """Make every operation raise ``error`` (None: work again)."""
        self._failure = error

    def tamper(self, hash: str, data: bytes) -> None:
        """Replace the stored bytes under ``hash`` without checking (tests of ``verify``)."""
        hash_hex(hash)
        self._blobs[hash] = data

    def stage(self, upload_id: str, data: bytes) -> None:
        """Put ``data`` under the staging name of ``upload_id``, unchecked, as a client's PUT
        to an upload URL would (tests of :meth:`commit_upload`)."""
        self._staged[check_upload_id(upload_id)] = bytes(data)

    def _ok(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def open(self) -> None:
        self._ok()

    async def close(self) -> None:
        return None

    async def check(self) -> None:
        self._ok()

    async def put_stream(self, hash: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        verifier = StreamVerifier(hash, size)
        self._ok()
        parts: list[bytes] = []
        async for chunk in chunks:
            verifier.update(chunk)
            parts.append(bytes(chunk))
        verifier.finish()
        self._ok()
        self._blobs[hash] = b"".join(parts)

    async def put(self, hash: str, data: bytes) -> None:
        await self.put_stream(hash, len(data), one_chunk(data))

    async def stat(self, hash: str) -> int | None:
        hash_hex(hash)
        self._ok()
        data = self._blobs.get(hash)
        return None if data is None else len(data)

    async def read_stream(self, hash: str, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
        data = await self.read(hash)
        for start in range(0, len(data), max(1, chunk_size)):
            yield data[start : start + chunk_size]

    async def read(self, hash: str) -> bytes:
        hash_hex(hash)
        self._ok()
        try:
            return self._blobs[hash]
        except KeyError:
            raise BlobMissing(f"blob {hash} is not stored (memory)") from None

    async def verify(self, hash: str, size: int) -> None:
        check_size(size)
        data = await self.read(hash)
        error = scrub_verdict(hash, size, len(data), sha256_hex(data))
        if error is None:
            return
        if error.reason == "verify-failed" and self._blobs.get(hash) is data:
            del self._blobs[hash]
        raise error

    async def delete(self, hash: str) -> bool:
        hash_hex(hash)
        self._ok()
        return self._blobs.pop(hash, None) is not None

    async def list_hashes(self) -> AsyncIterator[str]:
        self._ok()
        for h in list(self._blobs):
            yield h

    def can_grant_urls(self) -> bool:
        return False

    def upload_url(
        self, hash: str, size: int, *, upload_id: str, now_ms: int, ttl_s: int
    ) -> UrlGrant | None:
        return None

    async def commit_upload(self, upload_id: str, hash: str, size: int) -> None:
        check_upload_id(upload_id)
        hash_hex(hash)
        check_size(size)
        self._ok()
        # Popped first: whatever happens next, the staged object is gone.
        data = self._staged.pop(upload_id, None)
        if data is None:
            raise BlobMissing(f"nothing is staged under upload {upload_id} (memory)")
        error = staged_verdict(upload_id, hash, size, len(data), sha256_hex(data))
        if error is not None:
            raise error
        self._blobs.setdefault(hash, data)

    async def discard_upload(self, upload_id: str) -> bool:
        check_upload_id(upload_id)
        self._ok()
        return self._staged.pop(upload_id, None) is not None

    def download_url(self, hash: str, *, now_ms: int, ttl_s: int) -> UrlGrant | None:
        return None
