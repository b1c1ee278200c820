"""S3-specific behaviour against moto: presigned URLs, multipart cleanup, clear errors.

What moto 5.2 cannot emulate, and how these tests handle it:

- presigned URLs are not checked at all (signature, ``X-Amz-Expires``, signed
  ``Content-Length`` and ``x-amz-checksum-sha256``): the expiry test probes moto and skips
  its refusal assertion when moto accepts an expired URL; the tests check what we sign and
  that the server-side ``verify`` catches bytes S3 itself would have refused;
- credentials are accepted blindly unless moto's process-wide auth switch is on
  (:func:`roomsync.testing.moto_server.moto_auth_enforced`), which the bad-credentials test
  turns on for its duration.
"""

from __future__ import annotations

import base64
import datetime
import socket
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiobotocore.session import get_session  # type: ignore[import-untyped]

from roomsync.blobs import BlobBackendError, BlobVerifyFailed, sha256_hex
from roomsync.blobs.s3 import MAX_URL_TTL_S, S3BlobStore
from roomsync.testing.blob_contract import LARGE_SIZE, large_chunks
from roomsync.testing.moto_server import MOTO_CREDENTIALS, moto_auth_enforced, put_raw_object

from .conftest import make_s3_store

DATA = b"bytes sent straight to the bucket"
HASH = sha256_hex(DATA)
NOW = 1_700_000_000_000
UPLOAD = "s3-upload-0123456789"


@pytest.fixture
async def raw_s3(moto_endpoint: str) -> AsyncIterator[Any]:
    """A plain aiobotocore client, to look at the bucket behind the store's back."""
    async with get_session().create_client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=MOTO_CREDENTIALS["region"],
        aws_access_key_id=MOTO_CREDENTIALS["access_key_id"],
        aws_secret_access_key=MOTO_CREDENTIALS["secret_access_key"],
    ) as client:
        yield client


async def _http(
    method: str, url: str, *, data: bytes = b"", headers: dict[str, str]
) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, data=data or None, headers=headers) as resp:
            return resp.status, await resp.read()


async def test_presigned_put_stages_then_commit_and_get(s3_store: S3BlobStore) -> None:
    grant = s3_store.upload_url(HASH, len(DATA), upload_id=UPLOAD, now_ms=NOW, ttl_s=120)
    assert grant is not None and grant.method == "PUT"
    assert grant.expires_ms == NOW + 120_000
    status, _ = await _http("PUT", grant.url, data=DATA, headers=grant.headers)
    assert status == 200
    assert await s3_store.stat(HASH) is None  # staged, not yet a blob
    assert [h async for h in s3_store.list_hashes()] == []
    await s3_store.commit_upload(UPLOAD, HASH, len(DATA))
    assert await s3_store.stat(HASH) == len(DATA)
    down = s3_store.download_url(HASH, now_ms=NOW, ttl_s=120)
    assert down is not None and down.method == "GET"
    status, body = await _http("GET", down.url, headers=down.headers)
    assert (status, body) == (200, DATA)


def test_presigned_put_signs_staging_key_length_and_checksum(s3_store: S3BlobStore) -> None:
    grant = s3_store.upload_url(HASH, len(DATA), upload_id=UPLOAD, now_ms=NOW, ttl_s=90)
    assert grant is not None
    query = parse_qs(urlsplit(grant.url).query)
    assert query["X-Amz-Expires"] == ["90"]
    signed = query["X-Amz-SignedHeaders"][0].split(";")
    assert "content-length" in signed and "x-amz-checksum-sha256" in signed
    digest = bytes.fromhex(HASH.removeprefix("sha256:"))
    assert grant.headers == {"x-amz-checksum-sha256": base64.b64encode(digest).decode()}
    assert s3_store.staging_key_for(UPLOAD) == f"blobs/.staging/{UPLOAD}"
    assert urlsplit(grant.url).path == f"/{s3_store.bucket}/{s3_store.staging_key_for(UPLOAD)}"


def test_ttl_is_clamped_to_seven_days(s3_store: S3BlobStore) -> None:
    grant = s3_store.download_url(HASH, now_ms=NOW, ttl_s=30 * 24 * 3600)
    assert grant is not None and grant.expires_ms == NOW + MAX_URL_TTL_S * 1000
    assert parse_qs(urlsplit(grant.url).query)["X-Amz-Expires"] == [str(MAX_URL_TTL_S)]


def test_grants_need_an_open_store(moto_endpoint: str, bucket: str) -> None:
    store = S3BlobStore(bucket, endpoint_url=moto_endpoint, **_credentials())
    assert store.can_grant_urls()
    with pytest.raises(BlobBackendError, match="not open"):
        store.upload_url(HASH, 1, upload_id=UPLOAD, now_ms=NOW, ttl_s=60)


async def test_unchecked_checksum_header(moto_endpoint: str, bucket: str) -> None:
    store = S3BlobStore(bucket, endpoint_url=moto_endpoint, checksums=False, **_credentials())
    await store.open()
    try:
        grant = store.upload_url(HASH, len(DATA), upload_id=UPLOAD, now_ms=NOW, ttl_s=60)
        assert grant is not None and grant.headers == {}
        signed = parse_qs(urlsplit(grant.url).query)["X-Amz-SignedHeaders"][0].split(";")
        assert "x-amz-checksum-sha256" not in signed
        status, _ = await _http("PUT", grant.url, data=DATA, headers=grant.headers)
        assert status == 200
        await store.commit_upload(UPLOAD, HASH, len(DATA))
        await store.verify(HASH, len(DATA))
    finally:
        await store.close()


async def test_wrong_bytes_through_presigned_url_never_reach_the_blob(
    s3_store: S3BlobStore, raw_s3: Any
) -> None:
    # Real S3 refuses these bytes (signed checksum); moto stages them, so commit_upload's
    # own hashing is what refuses them, and the stored good copy is never touched.
    await s3_store.put(HASH, DATA)
    grant = s3_store.upload_url(HASH, len(DATA), upload_id=UPLOAD, now_ms=NOW, ttl_s=60)
    assert grant is not None
    status, _ = await _http("PUT", grant.url, data=b"X" * len(DATA), headers=grant.headers)
    assert await s3_store.read(HASH) == DATA
    if status == 200:
        with pytest.raises(BlobVerifyFailed) as exc:
            await s3_store.commit_upload(UPLOAD, HASH, len(DATA))
        assert exc.value.reason == "verify-failed"
    assert await s3_store.read(HASH) == DATA
    listed = await raw_s3.list_objects_v2(Bucket=s3_store.bucket)
    assert [o["Key"] for o in listed.get("Contents", [])] == [s3_store.key_for(HASH)]


async def test_commit_leaves_only_the_content_key(s3_store: S3BlobStore, raw_s3: Any) -> None:
    grant = s3_store.upload_url(HASH, len(DATA), upload_id=UPLOAD, now_ms=NOW, ttl_s=60)
    assert grant is not None
    status, _ = await _http("PUT", grant.url, data=DATA, headers=grant.headers)
    assert status == 200
    await s3_store.commit_upload(UPLOAD, HASH, len(DATA))
    listed = await raw_s3.list_objects_v2(Bucket=s3_store.bucket)
    assert [o["Key"] for o in listed.get("Contents", [])] == [s3_store.key_for(HASH)]


async def test_list_skips_staged_uploads(s3_store: S3BlobStore, moto_endpoint: str) -> None:
    # Even a staged object whose name looks like a hash is not a blob.
    put_raw_object(moto_endpoint, s3_store.bucket, "blobs/.staging/" + "0" * 64, b"x")
    put_raw_object(moto_endpoint, s3_store.bucket, s3_store.staging_key_for(UPLOAD), DATA)
    assert [h async for h in s3_store.list_hashes()] == []
    assert await s3_store.stat(HASH) is None


async def test_expired_presigned_url(
    s3_store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sign as if it were an hour ago, so a 60 s URL is already expired without sleeping.
    import botocore.auth  # type: ignore[import-untyped]

    an_hour_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: an_hour_ago)
    grant = s3_store.upload_url(HASH, len(DATA), upload_id=UPLOAD, now_ms=NOW, ttl_s=60)
    assert grant is not None
    status, _ = await _http("PUT", grant.url, data=DATA, headers=grant.headers)
    if status == 200:
        pytest.skip("moto does not enforce X-Amz-Expires on presigned URLs (moto 5.2.1)")
    assert status == 403


async def test_failed_multipart_upload_is_aborted(s3_store: S3BlobStore, raw_s3: Any) -> None:
    wrong = sha256_hex(b"not what is streamed")
    with pytest.raises(BlobVerifyFailed) as exc:
        await s3_store.put_stream(wrong, LARGE_SIZE, large_chunks())
    assert exc.value.reason == "hash-mismatch"
    uploads = await raw_s3.list_multipart_uploads(Bucket=s3_store.bucket)
    assert uploads.get("Uploads", []) == []
    listed = await raw_s3.list_objects_v2(Bucket=s3_store.bucket)
    assert listed.get("Contents", []) == []


async def test_oversized_stream_stops_early(s3_store: S3BlobStore, raw_s3: Any) -> None:
    with pytest.raises(BlobVerifyFailed) as exc:
        await s3_store.put_stream(sha256_hex(b"x"), LARGE_SIZE - 1, large_chunks())
    assert exc.value.reason == "size-mismatch"
    uploads = await raw_s3.list_multipart_uploads(Bucket=s3_store.bucket)
    assert uploads.get("Uploads", []) == []


async def test_list_skips_probe_and_foreign_keys(s3_store: S3BlobStore, moto_endpoint: str) -> None:
    await s3_store.put(HASH, DATA)
    put_raw_object(moto_endpoint, s3_store.bucket, "blobs/notes.txt", b"x")
    put_raw_object(moto_endpoint, s3_store.bucket, "elsewhere/" + "0" * 64, b"x")
    put_raw_object(moto_endpoint, s3_store.bucket, "blobs/.probe/left-over", b"x")
    assert [h async for h in s3_store.list_hashes()] == [HASH]


async def test_missing_bucket(moto_endpoint: str) -> None:
    store = make_s3_store(moto_endpoint, "roomsync-no-such-bucket")
    with pytest.raises(BlobBackendError) as exc:
        await store.open()
    assert exc.value.reason == "missing-bucket"
    assert "roomsync-no-such-bucket" in str(exc.value)


async def test_bucket_deleted_after_open(s3_store: S3BlobStore, raw_s3: Any) -> None:
    await raw_s3.delete_bucket(Bucket=s3_store.bucket)
    with pytest.raises(BlobBackendError) as exc:
        await s3_store.put(HASH, DATA)
    assert exc.value.reason == "missing-bucket"
    with pytest.raises(BlobBackendError) as exc:
        await s3_store.check()
    assert exc.value.reason == "missing-bucket"


async def test_bad_credentials(moto_endpoint: str, bucket: str) -> None:
    store = make_s3_store(moto_endpoint, bucket, access_key_id="AKIAWRONGWRONGWRONG1")
    with moto_auth_enforced(moto_endpoint):
        with pytest.raises(BlobBackendError) as exc:
            await store.open()
    assert exc.value.reason == "permission-denied"
    assert bucket in str(exc.value)


async def test_denied_after_open(s3_store: S3BlobStore, moto_endpoint: str) -> None:
    with moto_auth_enforced(moto_endpoint):
        with pytest.raises(BlobBackendError) as exc:
            await s3_store.put(HASH, DATA)
        assert exc.value.reason == "permission-denied"
        assert "InvalidAccessKeyId" in str(exc.value)
        with pytest.raises(BlobBackendError) as exc:
            await s3_store.check()
        assert exc.value.reason == "permission-denied"


async def test_unreachable_endpoint_fails_fast() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = make_s3_store(f"http://127.0.0.1:{port}", "roomsync-anything")
    started = time.monotonic()
    with pytest.raises(BlobBackendError) as exc:
        await store.open()
    assert exc.value.reason == "unavailable"
    assert f"127.0.0.1:{port}" in str(exc.value)
    assert time.monotonic() - started < 5


async def test_not_open() -> None:
    store = S3BlobStore("roomsync-x", endpoint_url="http://127.0.0.1:9", **_credentials())
    with pytest.raises(BlobBackendError) as exc:
        await store.stat(HASH)
    assert exc.value.reason == "unavailable"
    await store.close()  # closing a never-opened store is fine


def _credentials() -> dict[str, Any]:
    return {
        "region": MOTO_CREDENTIALS["region"],
        "access_key_id": MOTO_CREDENTIALS["access_key_id"],
        "secret_access_key": MOTO_CREDENTIALS["secret_access_key"],
    }
