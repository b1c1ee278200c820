"""Blob helpers of the SDK (SPEC §4): content hashes, the inline frame budget, and the
HTTP transfers of direct uploads and downloads (signed ``/v1/uploads`` and ``/v1/blobs``
URLs of the filesystem backend, presigned S3 URLs). An upload grant's URL, method and
headers are all the client needs: where the bytes are staged is the server's business."""

from __future__ import annotations

import hashlib
import ssl as ssl_module
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from ..core.errors import MalformedEnvelope
from ..core.types import validate_blob_hash
from .errors import BlobFetchFailed

#: Bytes of a ``blob-upload`` envelope besides its base64 data, with margin.
INLINE_OVERHEAD = 256
#: Socket timeouts of a direct transfer (the caller's ``timeout`` bounds the whole call).
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=60)
_BODY_EXCERPT = 200


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A blob stored and verified in the room (``blob-available{hash, size}``)."""

    hash: str
    size: int


def blob_hash(data: bytes) -> str:
    """The content address of ``data``: ``sha256:<64 lowercase hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_blob_hash(hash: str) -> str:
    """``hash`` if it is a valid ``sha256:<64 lowercase hex>``; ValueError otherwise."""
    try:
        return validate_blob_hash(hash)
    except MalformedEnvelope as exc:
        raise ValueError(exc.message) from None


def inline_fits(size: int, max_frame_bytes: int) -> bool:
    """Whether a ``blob-upload`` of ``size`` bytes (base64: 4 per 3) fits one frame."""
    return 4 * ((size + 2) // 3) + INLINE_OVERHEAD <= max_frame_bytes


async def http_put(
    http: aiohttp.ClientSession,
    url: str,
    method: str,
    headers: Mapping[str, str],
    data: bytes,
    ssl: ssl_module.SSLContext | bool,
) -> str | None:
    """Send ``data`` to a direct-upload grant; None on success, else why it failed."""
    try:
        async with http.request(
            method, url, data=data, headers=dict(headers), ssl=ssl, timeout=HTTP_TIMEOUT
        ) as resp:
            if 200 <= resp.status < 300:
                return None
            body = await resp.text(errors="replace")
            return f"http-{resp.status}: {body[:_BODY_EXCERPT]}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return f"network: {exc!r}"


async def http_get(
    http: aiohttp.ClientSession,
    hash: str,
    url: str,
    size: int | None,
    ssl: ssl_module.SSLContext | bool,
) -> bytes:
    """Download a blob from a grant URL; :class:`BlobFetchFailed` when that fails."""
    try:
        async with http.get(url, ssl=ssl, timeout=HTTP_TIMEOUT) as resp:
            if resp.status != 200:
                body = await resp.text(errors="replace")
                raise BlobFetchFailed(hash, f"http-{resp.status}: {body[:_BODY_EXCERPT]}")
            if size is not None and resp.content_length not in (None, size):
                raise BlobFetchFailed(
                    hash, f"size-mismatch: {resp.content_length} bytes, announced {size}"
                )
            return await resp.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise BlobFetchFailed(hash, f"network: {exc!r}") from exc


def verify_blob(hash: str, data: bytes, size: int | None) -> bytes:
    """``data`` if it is the blob ``hash`` (of ``size`` bytes, when announced)."""
    if size is not None and len(data) != size:
        raise BlobFetchFailed(hash, f"size-mismatch: got {len(data)} bytes, announced {size}")
    if blob_hash(data) != hash:
        raise BlobFetchFailed(hash, "hash-mismatch: the bytes received have another sha256")
    return data
