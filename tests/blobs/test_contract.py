"""One contract suite (roomsync.testing.blob_contract) against every blob backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roomsync.blobs import FilesystemBlobStore, MemoryBlobStore, UrlSigner
from roomsync.testing.blob_contract import BLOB_CONTRACT, BlobBackendUnderTest, Check
from roomsync.testing.moto_server import put_raw_object

from .conftest import make_s3_store


async def _memory() -> BlobBackendUnderTest:
    store = MemoryBlobStore()
    await store.open()

    async def tamper(hash: str, data: bytes) -> None:
        store.tamper(hash, data)

    async def stage(upload_id: str, data: bytes) -> None:
        store.stage(upload_id, data)

    return BlobBackendUnderTest(store, tamper, stage)


async def _filesystem(root: Path) -> BlobBackendUnderTest:
    store = FilesystemBlobStore(
        root,
        signer=UrlSigner(b"contract-test-secret-0123456789"),
        public_base_url="https://sync.example.test",
    )
    await store.open()

    async def tamper(hash: str, data: bytes) -> None:
        store.path_for(hash).write_bytes(data)

    async def stage(upload_id: str, data: bytes) -> None:
        store.staging_path_for(upload_id).write_bytes(data)

    return BlobBackendUnderTest(store, tamper, stage)


async def _s3(endpoint_url: str, bucket: str) -> BlobBackendUnderTest:
    store = make_s3_store(endpoint_url, bucket)
    await store.open()

    async def tamper(hash: str, data: bytes) -> None:
        put_raw_object(endpoint_url, bucket, store.key_for(hash), data)

    async def stage(upload_id: str, data: bytes) -> None:
        put_raw_object(endpoint_url, bucket, store.staging_key_for(upload_id), data)

    return BlobBackendUnderTest(store, tamper, stage)


@pytest.fixture(params=["memory", "filesystem", "s3"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[BlobBackendUnderTest]:
    if request.param == "memory":
        made = await _memory()
    elif request.param == "filesystem":
        made = await _filesystem(tmp_path / "blobs")
    else:
        endpoint_url: str = request.getfixturevalue("moto_endpoint")
        bucket: str = request.getfixturevalue("bucket")
        made = await _s3(endpoint_url, bucket)
    yield made
    await made.store.close()


@pytest.mark.parametrize(
    "check", BLOB_CONTRACT, ids=[c.__name__.removeprefix("check_") for c in BLOB_CONTRACT]
)
async def test_contract(backend: BlobBackendUnderTest, check: Check) -> None:
    await check(backend)
