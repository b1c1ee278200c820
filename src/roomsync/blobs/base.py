"""What the server needs from a blob store (SPEC §4): content-addressed bytes, verified.

Implementations: :mod:`.memory` (tests, ``--blobs memory``), :mod:`.filesystem` (the
default; the server serves signed ``/v1/uploads/...`` and ``/v1/blobs/...`` URLs for it)
and :mod:`.s3` (S3-compatible object storage with presigned URLs).
:mod:`roomsync.testing.blob_contract` holds the one contract suite that
``tests/blobs/test_contract.py`` runs against each.

Errors (under :class:`roomsync.core.errors.InternalError`: a peer never sees their
message, only ``internal``; the server's handlers turn the ones a peer should know about
into ``upload-rejected``/``upload-denied`` reasons or errors of their own)::

    BlobStoreError            .reason: a short machine reason (metrics label, reject reason)
     ├── BlobMissing          "missing": no object stored under that hash (or no staged
     │                        upload under that upload id)
     ├── BlobVerifyFailed     "hash-mismatch" / "size-mismatch" (a put was refused, nothing
     │                        stored; or ``verify`` was given the wrong size of a good
     │                        object, which is kept) or "verify-failed" (a staged upload or
     │                        a corrupt stored object was bad and deleted)
     └── BlobBackendError     "permission-denied", "missing-bucket", "unavailable",
                              "no-space", "backend-error": the store itself cannot work;
                              the message names the directory or bucket and the cause

Direct uploads are staged. A grant (:meth:`BlobStore.upload_url`) names a fresh *upload
id*, and the client's PUT lands under that staging name, never under a content address.
:meth:`BlobStore.commit_upload` then re-hashes the staged bytes and only verified bytes
move to ``sha256:<hex>``; :meth:`BlobStore.discard_upload` drops a staged object. So
whoever holds an upload URL can write to their own staging name and nothing else.

Invariants every store keeps:

- an object is stored under ``sha256:<hex>`` only if its bytes hash to that value: ``put``
  and ``put_stream`` hash while they write, ``commit_upload`` hashes the staged bytes, and
  both make the object visible only after the hash and size matched (a temp file renamed
  into place, a multipart upload completed, a verified copy);
- a refused put leaves nothing stored and raises :class:`BlobVerifyFailed`;
- no upload, good or bad, replaces or deletes an object already stored under a content
  address: a failed commit deletes only its own staged object, and a verified commit of
  bytes that are already stored just drops the staged copy (racing a concurrent put of the
  same hash, it may rewrite the object with the identical, verified bytes);
- staged objects are not blobs: ``stat``, ``read``, ``list_hashes`` and :func:`gc` never see
  them;
- storage failures are never swallowed: they raise :class:`BlobBackendError` (SPEC §4
  "storage permission errors surface as clear errors and metrics, never as silent loss").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from ..core.errors import InternalError
from ..core.types import BLOB_HASH_RE

HASH_PREFIX = "sha256:"
#: Upload ids are URL- and path-safe: no ``/``, ``.`` or ``%``, so a staging name can never
#: leave its directory or prefix, nor collide with a store's own work names.
UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")


class BlobStoreError(InternalError):
    """Root of every blob store error. ``reason`` is short and stable; the message is for
    humans (operators: it may name directories and buckets)."""

    default_reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else self.default_reason

    @property
    def next_action(self) -> str:
        return f"see the reason {self.reason!r}: a bad request or URL, or a failing backend"


class BlobMissing(BlobStoreError):
    """No object is stored under the hash. The client may upload it again."""

    default_reason = "missing"

    @property
    def next_action(self) -> str:
        return "upload the blob again"


class BlobVerifyFailed(BlobStoreError):
    """The bytes do not match the hash or size. Nothing bad is left stored."""

    default_reason = "verify-failed"

    @property
    def next_action(self) -> str:
        return "send bytes that match the announced hash and size"


class BlobBackendError(BlobStoreError):
    """The store cannot work (permissions, missing bucket, unreachable). An operator must act."""

    default_reason = "backend-error"

    @property
    def next_action(self) -> str:
        return "an operator must fix the blob backend (permissions, bucket, space, network)"


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

    Every method raises :class:`BlobStoreError` with reason ``bad-hash`` for a malformed hash and
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
        """Re-hash the stored object (an integrity scrub). Raises :class:`BlobMissing`.

        When its bytes do not hash to ``hash`` the object is corrupt: it is deleted and
        :class:`BlobVerifyFailed` ``verify-failed`` is raised. When they do but ``size`` is
        not their length, :class:`BlobVerifyFailed` ``size-mismatch`` is raised and the
        object is kept: it is good, the caller's expectation is wrong. So ``verify`` never
        deletes an object whose bytes match its address.
        """

    async def delete(self, hash: str) -> bool:
        """Remove the object. True when it existed."""

    def list_hashes(self) -> AsyncIterator[str]:
        """An async generator of every stored hash (order unspecified); never a staged
        upload."""

    def can_grant_urls(self) -> bool:
        """True when :meth:`upload_url` and :meth:`download_url` return grants."""

    def upload_url(
        self, hash: str, size: int, *, upload_id: str, now_ms: int, ttl_s: int
    ) -> UrlGrant | None:
        """A signed PUT URL, valid for ``ttl_s`` seconds, that writes the staged object of
        ``upload_id``; None when this store cannot grant.

        The URL is bound to ``upload_id`` (and, where the store can make the far end check
        them, to ``hash`` and ``size``): it cannot be pointed at another staging name or at
        a content address. The caller picks a fresh, unguessable ``upload_id`` per grant
        (:data:`UPLOAD_ID_RE`; :class:`BlobStoreError` ``bad-upload-id`` otherwise) and later
        calls :meth:`commit_upload` or :meth:`discard_upload` with it.
        """

    async def commit_upload(self, upload_id: str, hash: str, size: int) -> None:
        """Verify the staged object of ``upload_id`` and move it to ``hash``.

        The staged bytes are first taken out of reach of the upload URL (renamed or copied
        to a private name), then hashed. When they are exactly ``size`` bytes hashing to
        ``hash`` they become the object of ``hash``; when that object already exists the
        staged copy is dropped instead (same bytes). Otherwise the staged object is deleted
        and :class:`BlobVerifyFailed` ``verify-failed`` is raised; the object stored under
        ``hash``, if any, is never touched. Raises :class:`BlobMissing` when nothing is
        staged under ``upload_id`` (the PUT has not happened or was already committed).
        Either way nothing is left staged under ``upload_id`` once it returns or raises
        (a PUT that lands later stages a new object).
        """

    async def discard_upload(self, upload_id: str) -> bool:
        """Delete the staged object of ``upload_id``, never a content-addressed object.
        True when one existed."""

    def download_url(self, hash: str, *, now_ms: int, ttl_s: int) -> UrlGrant | None:
        """A signed GET URL valid for ``ttl_s`` seconds, or None when this store cannot grant.

        May raise :class:`BlobMissing` when the store can tell locally that nothing is
        stored (filesystem); S3 grants regardless and the GET answers 404.
        """


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """The ``sha256:<hex>`` hash of ``data``."""
    return HASH_PREFIX + hashlib.sha256(data).hexdigest()


def hash_hex(hash: str) -> str:
    """The 64 hex digits of a valid blob hash; raise :class:`BlobStoreError` ``bad-hash`` otherwise.

    Stores call it before building a path or key from a hash, so a hash never escapes its
    directory or prefix.
    """
    if not isinstance(hash, str) or not BLOB_HASH_RE.fullmatch(hash):
        raise BlobStoreError(
            f"invalid blob hash {hash!r}: expected sha256:<64 lowercase hex>", reason="bad-hash"
        )
    return hash[len(HASH_PREFIX) :]


def check_upload_id(upload_id: str) -> str:
    """``upload_id`` if it matches :data:`UPLOAD_ID_RE`; :class:`BlobStoreError` ``bad-upload-id``
    otherwise. Stores call it before building a staging path or key."""
    if not isinstance(upload_id, str) or not UPLOAD_ID_RE.fullmatch(upload_id):
        raise BlobStoreError(
            f"invalid upload id {upload_id!r}: expected 16-128 of [A-Za-z0-9_-]",
            reason="bad-upload-id",
        )
    return upload_id


def check_size(size: int) -> int:
    """``size`` if it is a non-negative int; else :class:`BlobStoreError` ``bad-size``."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BlobStoreError(f"invalid blob size {size!r}: expected an int >= 0", reason="bad-size")
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


def scrub_verdict(
    hash: str, size: int, actual_size: int, actual_hash: str
) -> BlobVerifyFailed | None:
    """What :meth:`BlobStore.verify` reports for a stored object of ``actual_size`` bytes
    hashing to ``actual_hash``: None when it is the expected object, else the error to
    raise. Its ``reason`` says whether the object must be deleted (``verify-failed``: the
    bytes do not match their address) or kept (``size-mismatch``: only ``size`` was wrong).
    """
    if actual_hash != hash:
        return BlobVerifyFailed(
            f"stored blob {hash} failed verification and was deleted: {actual_size} bytes "
            f"hashing to {actual_hash}",
            reason="verify-failed",
        )
    if actual_size != size:
        return BlobVerifyFailed(
            f"stored blob {hash} has {actual_size} bytes, not the expected {size}; "
            "the object is good and was kept",
            reason="size-mismatch",
        )
    return None


def staged_verdict(
    upload_id: str, hash: str, size: int, actual_size: int, actual_hash: str
) -> BlobVerifyFailed | None:
    """What :meth:`BlobStore.commit_upload` raises for staged bytes of ``actual_size`` bytes
    hashing to ``actual_hash``, or None when they are ``size`` bytes of ``hash``."""
    if actual_size == size and actual_hash == hash:
        return None
    return BlobVerifyFailed(
        f"upload {upload_id} for blob {hash} failed verification and was discarded: "
        f"{actual_size} bytes hashing to {actual_hash}, expected {size} bytes",
        reason="verify-failed",
    )


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """An async stream of ``data`` in one chunk; lets ``put`` reuse ``put_stream``."""
    yield data


async def gc(store: BlobStore, referenced: set[str]) -> list[str]:
    """Delete every stored blob whose hash is not in ``referenced``; return the deleted hashes.

    Staged uploads are not listed, so they are never collected here. The caller must
    include the hashes of uploads being committed in ``referenced``: between
    :meth:`BlobStore.commit_upload` and the room's reference being written, the object is
    stored but not yet referenced.
    """
    stored = [h async for h in store.list_hashes()]
    deleted: list[str] = []
    for h in stored:
        if h not in referenced and await store.delete(h):
            deleted.append(h)
    return deleted
