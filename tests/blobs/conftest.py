"""Fixtures for the blob tests: one moto S3 server per session, a fresh bucket per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from roomsync.blobs.s3 import MIN_PART_SIZE, S3BlobStore
from roomsync.testing.moto_server import MOTO_CREDENTIALS


def make_s3_store(
    endpoint_url: str,
    bucket: str,
    *,
    access_key_id: str = MOTO_CREDENTIALS["access_key_id"],
    secret_access_key: str = MOTO_CREDENTIALS["secret_access_key"],
) -> S3BlobStore:
    """An S3 store on moto; 5 MiB parts so the large contract blob goes multipart."""
    return S3BlobStore(
        bucket,
        endpoint_url=endpoint_url,
        region=MOTO_CREDENTIALS["region"],
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        part_size=MIN_PART_SIZE,
        connect_timeout_s=1.0,
        max_attempts=1,
    )


@pytest.fixture
async def s3_store(moto_endpoint: str, bucket: str) -> AsyncIterator[S3BlobStore]:
    store = make_s3_store(moto_endpoint, bucket)
    await store.open()
    yield store
    await store.close()
