"""What the server needs from a blob store (SPEC §4): content-addressed bytes, verified.

Implementations: :mod:`.memory` (tests, ``--blobs memory``), :mod:`.filesystem` (the
default; the server serves signed ``/v1/blobs/...`` URLs for it) and :mod:`.s3`
(S3-compatible object storage with presigned URLs). :mod:`roomsync.testing.blob_contract`
holds the one contract suite that ``tests/blobs/test_contract.py`` runs against each.

Errors::

    BlobError                 .reason: a short machine reason (metrics label, reject reason)
     ├── BlobMissing          "missing": no object stored under that hash
     ├── BlobVerifyFailed     "hash-mismatch" / "size-mismatch" (a put was refused, nothing
     │                        stored) or "verify-failed" (a stored object was bad and deleted)
     └── BlobBackendError     "permission-denied", "missing-bucket", "unavailable",
                              "no-space", "backend-error": the store itself cannot work;
                              the message names the directory or bucket and the cause

Invariants every store keeps:

- an object is stored under ``sha256:<hex>`` only if its bytes hash to that value: ``put``
  and ``put_stream`` hash while they write and make the object visible only after the hash
  and size matched (a temp file renamed into place, or a multipart upload completed);
- a refused put leaves nothing stored and raises :class:`BlobVerifyFailed`;
- storage failures are never swallowed: they raise :class:`BlobBackendError` (SPEC §4
  "storage permission errors surface as clear errors and metrics, never as silent loss").
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from ..core.types import BLOB_HASH_RE

HASH_PREFIX = "sha256:"


class BlobError(Exception):
    """Root of every blob error. ``reason`` is short and stable; the message is for humans."""

    default_reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason if reason is not None else self.default_reason


class BlobMissing(BlobError):
    """No object is stored under the hash. The client may upload it again."""

    default_reason = "missing"


class BlobVerifyFailed(BlobError):
    """The bytes do not match the hash or size. Nothing bad is left stored."""

    default_reason = "verify-failed"


class BlobBackendError(BlobError):
    """The store cannot work (permissions, missing bucket, unreachable). An operator must act."""

    default_reason = "backend-error"


@dataclass(frozen=True)
class UrlGrant:
    """A signed, expiring URL the client uses to move the bytes without the socket.

    The client sends ``method`` to ``url`` with every header in ``headers``; for a PUT the
    body must be exactly the announced size. ``expires_ms`` is the server-clock instant
    after which the URL is refused.
    """

    url: str
    method: str
    expires_ms: int
    headers: dict[str, str] = field(default_factory=dict)


class BlobStore(Protocol):
    """A content-addressed blob store. Hashes are ``sha256:<64 lowercase hex>``.

    Every method raises :class:`BlobError` with reason ``bad-hash`` for a malformed hash and
    :class:`BlobBackendError` when the storage fails.
    """

    name: str  # "filesystem" | "s3" | "memory"

    async def open(self) -> None:
        """Create the directory / check the bucket exists. Raise :class:`BlobBackendError`."""

    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def check(self) -> None:
        """readyz probe: write, read back and delete a probe object, else BlobBackendError."""

    async def put_stream(self, hash: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        """Store the bytes of ``chunks``, hashing while streaming; never buffers the whole blob.

        When the stream does not have exactly ``size`` bytes hashing to ``hash``, nothing is
        stored and :class:`BlobVerifyFailed` (``size-mismatch`` / ``hash-mismatch``) is raised.
        The object becomes visible atomically once verified. Storing an existing hash again
        is harmless (same bytes).
        """

    async def put(self, hash: str, data: bytes) -> None:
        """:meth:`put_stream` for bytes already in memory (the inline ``blob-upload`` path)."""

    async def stat(self, hash: str) -> int | None:
        """The stored size, or None when nothing is stored under ``hash``."""

    def read_stream(self, hash: str, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
        """An async generator of the stored bytes: ``async for chunk in store.read_stream(h)``.

        Raises :class:`BlobMissing` on the first iteration, before yielding anything.
        """

    async def read(self, hash: str) -> bytes:
        """The whole stored object (small blobs only). Raises :class:`BlobMissing`."""

    async def verify(self, hash: str, size: int) -> None:
        """Re-hash the stored object; on a hash or size mismatch delete it and raise
        :class:`BlobVerifyFailed` (``verify-failed``). Raises :class:`BlobMissing`.

        Call it after a direct upload (``blob-uploaded``) before announcing ``blob-available``.
        """

    async def delete(self, hash: str) -> bool:
        """Remove the object. True when it existed."""

    def list_hashes(self) -> AsyncIterator[str]:
        """An async generator of every stored hash (order unspecified)."""

    def can_grant_urls(self) -> bool:
        """True when :meth:`upload_url` and :meth:`download_url` return grants."""

    def upload_url(self, hash: str, size: int, *, now_ms: int, ttl_s: int) -> UrlGrant | None:
        """A signed PUT URL valid for ``ttl_s`` seconds, or None when this store cannot grant."""

    def download_url(self, hash: str, *, now_ms: int, ttl_s: int) -> UrlGrant | None:
        """A signed GET URL valid for ``ttl_s`` seconds, or None when this store cannot grant.

        May raise :class:`BlobMissing` when the store can tell locally that nothing is
        stored (filesystem); S3 grants regardless and the GET answers 404.
        """


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """The ``sha256:<hex>`` hash of ``data``."""
    return HASH_PREFIX + hashlib.sha256(data).hexdigest()


def hash_hex(hash: str) -> str:
    """The 64 hex digits of a valid blob hash; raise :class:`BlobError` ``bad-hash`` otherwise.

    Stores call it before building a path or key from a hash, so a hash never escapes its
    directory or prefix.
    """
    if not isinstance(hash, str) or not BLOB_HASH_RE.fullmatch(hash):
        raise BlobError(
            f"invalid blob hash {hash!r}: expected sha256:<64 lowercase hex>", reason="bad-hash"
        )
    return hash[len(HASH_PREFIX) :]


def check_size(size: int) -> int:
    """``size`` if it is a non-negative int; raise :class:`BlobError` ``bad-size`` otherwise."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BlobError(f"invalid blob size {size!r}: expected an int >= 0", reason="bad-size")
    return size


class StreamVerifier:
    """Hashes a stream as it passes and checks it against the announced hash and size.

    ``update`` raises ``size-mismatch`` as soon as the stream runs past ``size``, so a store
    can stop writing early; ``finish`` raises when the stream was short or hashed wrong.
    """

    def __init__(self, hash: str, size: int) -> None:
        self.hex = hash_hex(hash)
        self.hash = hash
        self.size = check_size(size)
        self.received = 0
        self._digest = hashlib.sha256()

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self.received += len(chunk)
        if self.received > self.size:
            raise BlobVerifyFailed(
                f"blob {self.hash}: got more than the announced {self.size} bytes",
                reason="size-mismatch",
            )
        self._digest.update(chunk)

    def digest(self) -> bytes:
        """The raw SHA-256 of what passed so far."""
        return self._digest.digest()

    def finish(self) -> None:
        """Raise :class:`BlobVerifyFailed` unless exactly ``size`` bytes hashing to ``hash``
        passed."""
        if self.received != self.size:
            raise BlobVerifyFailed(
                f"blob {self.hash}: got {self.received} bytes, announced {self.size}",
                reason="size-mismatch",
            )
        actual = self._digest.hexdigest()
        if actual != self.hex:
            raise BlobVerifyFailed(
                f"blob {self.hash}: bytes hash to {HASH_PREFIX}{actual}", reason="hash-mismatch"
            )


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """An async stream of ``data`` in one chunk; lets ``put`` reuse ``put_stream``."""
    yield data


async def gc(store: BlobStore, referenced: set[str]) -> list[str]:
    """Delete every stored blob whose hash is not in ``referenced``; return the deleted hashes.

    The caller must include blobs whose upload is still in flight (granted URLs not yet
    confirmed) in ``referenced``, or they are collected before they are announced.
    """
    stored = [h async for h in store.list_hashes()]
    deleted: list[str] = []
    for h in stored:
        if h not in referenced and await store.delete(h):
            deleted.append(h)
    return deleted
