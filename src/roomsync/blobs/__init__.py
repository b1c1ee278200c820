"""Content-addressed blob stores (SPEC §4): the protocol, its errors and three backends.

``S3BlobStore`` is imported on first use: aiobotocore takes a noticeable part of a second
to import and most processes (the CLI, filesystem deployments) never need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    BlobBackendError,
    BlobMissing,
    BlobStore,
    BlobStoreError,
    BlobVerifyFailed,
    UrlGrant,
    gc,
    sha256_hex,
)
from .filesystem import FilesystemBlobStore
from .memory import MemoryBlobStore
from .signing import UrlSigner

if TYPE_CHECKING:
    from .s3 import S3BlobStore

__all__ = [
    "BlobBackendError",
    "BlobMissing",
    "BlobStore",
    "BlobStoreError",
    "BlobVerifyFailed",
    "FilesystemBlobStore",
    "MemoryBlobStore",
    "S3BlobStore",
    "UrlGrant",
    "UrlSigner",
    "gc",
    "sha256_hex",
]


def __getattr__(name: str) -> object:
    if name == "S3BlobStore":
        from .s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
