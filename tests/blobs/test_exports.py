"""roomsync.blobs beyond its ``__all__`` (kept exact by tests/test_exports.py): the error
subtree, unknown attributes, and the lazy S3 import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import roomsync.blobs as blobs


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
