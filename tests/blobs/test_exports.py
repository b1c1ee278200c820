"""The public surface of roomsync.blobs stays exactly what is documented."""

from __future__ import annotations

import subprocess
import sys

import pytest

import roomsync.blobs as blobs

EXPECTED = {
    "BlobBackendError",
    "BlobStoreError",
    "BlobMissing",
    "BlobStore",
    "BlobVerifyFailed",
    "FilesystemBlobStore",
    "MemoryBlobStore",
    "S3BlobStore",
    "UrlGrant",
    "UrlSigner",
    "gc",
    "sha256_hex",
}


def test_all_is_exact() -> None:
    assert set(blobs.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(blobs, name) is not None


def test_error_tree() -> None:
    for cls in (blobs.BlobMissing, blobs.BlobVerifyFailed, blobs.BlobBackendError):
        assert issubclass(cls, blobs.BlobStoreError)
    assert blobs.BlobMissing("x").reason == "missing"
    assert blobs.BlobBackendError("x", reason="unavailable").reason == "unavailable"


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError):
        _ = blobs.NoSuchThing


def test_s3_is_imported_lazily() -> None:
    code = (
        "import sys, roomsync.blobs as b; assert 'aiobotocore' not in sys.modules; "
        "b.S3BlobStore; assert 'aiobotocore' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
