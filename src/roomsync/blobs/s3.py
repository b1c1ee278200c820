"""Blobs in an S3-compatible bucket, on aiobotocore (SPEC §4).

Objects live at ``{key_prefix}{64 hex}``. ``put_stream`` hashes while it uploads and makes
the object visible only after the size and hash matched: a blob smaller than ``part_size``
is buffered (at most ``part_size`` bytes) and sent with one ``PutObject`` carrying its
SHA-256 checksum; a bigger one goes up as a multipart upload that is completed only when
the stream verified, and aborted otherwise. So a refused upload never leaves an object.

Direct transfers use presigned URLs. An upload URL writes the staging key
``{key_prefix}.staging/{upload_id}`` (the key is inside the signature, and no staging key is
a content key, so ``list_hashes`` never yields one); it signs ``Content-Length`` (S3
refuses another body size) and, with ``checksums=True``, ``x-amz-checksum-sha256`` (S3
refuses other bytes); the grant's ``headers`` carry that header, which the client must
send. :meth:`S3BlobStore.commit_upload` does not trust the far end to have enforced any of
that (moto does not): it copies the staged object to a private key the URL cannot write,
deletes the staged key, stream-hashes the private copy and only then copies it to the
content key (unless that key already exists). A presigned PUT carries at most 5 GiB, so
single ``CopyObject`` calls always suffice. The URL's real expiry is counted by S3 from
the signing wall clock; ``UrlGrant.expires_ms`` reports ``now_ms + ttl``. Staged objects
orphaned by a crash are never listed as blobs; a bucket lifecycle rule expiring
``{key_prefix}.staging/`` after a day removes them.

Failures map to :class:`~.base.BlobBackendError` reasons: ``missing-bucket``,
``permission-denied`` (403, unknown key, bad signature, no credentials), ``unavailable``
(connection refused or timed out, 5xx) and ``backend-error`` (anything else). Connect
timeouts are short and retries few, so readyz and tests fail fast instead of hanging.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import aiohttp

# aiobotocore and botocore ship no type information (no py.typed); their clients are
# dynamic, so they are used as Any behind the typed methods of this module.
import botocore.loaders  # type: ignore[import-untyped]
import botocore.session  # type: ignore[import-untyped]
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from .base import (
    HASH_PREFIX,
    BlobBackendError,
    BlobMissing,
    BlobStoreError,
    StreamVerifier,
    UrlGrant,
    check_size,
    check_upload_id,
    hash_hex,
    one_chunk,
    scrub_verdict,
    staged_verdict,
)

T = TypeVar("T")

_shared_loader: Any = None


def _session(session: Any) -> Any:
    """``session`` sharing one botocore data loader with every other store in the process.

    Parsing botocore's S3 model takes ~0.1 s per session; the loader caches it.
    """
    global _shared_loader
    if _shared_loader is None:
        _shared_loader = botocore.loaders.create_loader()
    session.register_component("data_loader", _shared_loader)
    return session


#: S3's smallest part (all but the last part of a multipart upload).
MIN_PART_SIZE = 5 * 1024 * 1024
#: SigV4 presigned URLs live at most seven days.
MAX_URL_TTL_S = 7 * 24 * 3600

_DENIED_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "InvalidSecurity",
    "AccountProblem",
}
_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
# Upload ids never contain a dot, so the private ``.verifying`` copy of an upload is a key
# no upload URL can name.
_STAGING = ".staging/"
_VERIFYING_SUFFIX = ".verifying"
_TRANSPORT_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError, OSError)


class S3BlobStore:
    """Content-addressed objects in one bucket. Call :meth:`open` before anything else."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None,
        region: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        key_prefix: str = "blobs/",
        part_size: int = 8 * 1024 * 1024,
        checksums: bool = True,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 30.0,
        max_attempts: int = 2,
        addressing_style: str | None = None,
        probe_name: str | None = None,
    ) -> None:
        """``access_key_id=None`` uses botocore's default credential chain.

        ``addressing_style`` defaults to ``path`` with a custom ``endpoint_url`` (MinIO,
        moto, most S3-compatible stores) and to ``auto`` for AWS itself. ``probe_name``
        names this instance's readyz probe object (random by default, so replicas sharing
        a bucket never race on it). ``checksums=False`` stops sending and signing
        ``x-amz-checksum-sha256``, for S3-compatible stores that do not understand it.
        """
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.key_prefix = key_prefix
        self.part_size = max(MIN_PART_SIZE, part_size)
        self.checksums = checksums
        self._where = f"s3 bucket {bucket!r}" + (f" at {endpoint_url}" if endpoint_url else "")
        self._client_kwargs: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "config": Config(
                region_name=region,
                signature_version="s3v4",
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                retries={"max_attempts": max(1, max_attempts), "mode": "standard"},
                s3={"addressing_style": addressing_style or ("path" if endpoint_url else "auto")},
                # Checksums are sent explicitly (SHA-256, which we compute anyway); the SDK's
                # default CRC trailers are not understood by every S3-compatible store.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        }
        self._probe_key = f"{key_prefix}.probe/{probe_name or secrets.token_hex(8)}"
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._presigner: Any = None

    # -- errors ----------------------------------------------------------------------------

    def _error(self, exc: BaseException, doing: str, *, bucket_op: bool = False) -> BlobStoreError:
        """The :class:`BlobStoreError` for a failed S3 call."""
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            detail = f"{code or status} {err.get('Message', '')}".strip()
            if code == "NoSuchBucket" or (bucket_op and status == 404):
                return BlobBackendError(
                    f"{self._where}: cannot {doing}: the bucket does not exist ({detail})",
                    reason="missing-bucket",
                )
            if code in _NOT_FOUND_CODES or status == 404:
                return BlobMissing(f"{self._where}: cannot {doing}: not stored ({detail})")
            if code in _DENIED_CODES or status == 403:
                return BlobBackendError(
                    f"{self._where}: cannot {doing}: permission denied ({detail}); "
                    "check the credentials and the bucket policy",
                    reason="permission-denied",
                )
            if code in _UNAVAILABLE_CODES or status >= 500:
                return BlobBackendError(
                    f"{self._where}: cannot {doing}: service unavailable ({detail})",
                    reason="unavailable",
                )
            return BlobBackendError(f"{self._where}: cannot {doing}: {detail}")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return BlobBackendError(
                f"{self._where}: cannot {doing}: no usable credentials ({exc})",
                reason="permission-denied",
            )
        if isinstance(
            exc,
            BotoConnectionError | HTTPClientError | aiohttp.ClientError | TimeoutError | OSError,
        ):
            return BlobBackendError(
                f"{self._where}: cannot {doing}: unreachable ({exc})", reason="unavailable"
            )
        return BlobBackendError(f"{self._where}: cannot {doing}: {exc}")

    async def _call(self, doing: str, aw: Awaitable[T], *, bucket_op: bool = False) -> T:
        try:
            return await aw
        except _TRANSPORT_ERRORS as exc:
            raise self._error(exc, doing, bucket_op=bucket_op) from exc

    def key_for(self, hash: str) -> str:
        """The object key of ``hash``: ``{key_prefix}{64 hex}``."""
        return self.key_prefix + hash_hex(hash)

    def staging_key_for(self, upload_id: str) -> str:
        """The key a direct upload's URL writes: ``{key_prefix}.staging/{upload_id}``."""
        return f"{self.key_prefix}{_STAGING}{check_upload_id(upload_id)}"

    @property
    def _s3(self) -> Any:
        if self._client is None:
            raise BlobBackendError(f"{self._where}: the store is not open", reason="unavailable")
        return self._client

    # -- lifecycle -------------------------------------------------------------------------

    def _make_presigner(self) -> Any:
        # Presigning is local computation; a plain botocore client does it without awaiting.
        return _session(botocore.session.get_session()).create_client("s3", **self._client_kwargs)

    async def open(self) -> None:
        """Connect and check that the bucket exists and the credentials are accepted."""
        if self._client is not None:
            return
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                _session(get_session()).create_client("s3", **self._client_kwargs)
            )
            presigner = await asyncio.to_thread(self._make_presigner)
            stack.callback(presigner.close)
            await self._call(
                "open the bucket", client.head_bucket(Bucket=self.bucket), bucket_op=True
            )
        except BaseException:
            await stack.aclose()
            raise
        self._client, self._presigner, self._stack = client, presigner, stack

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        self._client = self._presigner = None
        if stack is not None:
            await stack.aclose()

    async def check(self) -> None:
        s3 = self._s3
        body = b"roomsync-probe"
        doing = "write, read and delete a probe object"
        await self._call(doing, s3.put_object(Bucket=self.bucket, Key=self._probe_key, Body=body))
        resp = await self._call(doing, s3.get_object(Bucket=self.bucket, Key=self._probe_key))
        async with resp["Body"] as stream:
            got = await self._call(doing, stream.read())
        await self._call(doing, s3.delete_object(Bucket=self.bucket, Key=self._probe_key))
        if got != body:
            raise BlobBackendError(
                f"{self._where}: the probe object read back different bytes",
                reason="backend-error",
            )

    # -- writes ----------------------------------------------------------------------------

    async def put_stream(self, hash: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        verifier = StreamVerifier(hash, size)
        key = self.key_for(hash)
        s3 = self._s3
        doing = f"store blob {hash}"
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        buffer = bytearray()
        completed = False
        try:
            async for chunk in chunks:
                verifier.update(chunk)
                buffer += chunk
                while len(buffer) >= self.part_size:
                    if upload_id is None:
                        created = await self._call(
                            doing, s3.create_multipart_upload(Bucket=self.bucket, Key=key)
                        )
                        upload_id = str(created["UploadId"])
                    part = bytes(buffer[: self.part_size])
                    del buffer[: self.part_size]
                    parts.append(await self._upload_part(key, upload_id, len(parts) + 1, part))
            verifier.finish()
            if upload_id is None:
                extra: dict[str, Any] = {}
                if self.checksums:
                    extra["ChecksumSHA256"] = base64.b64encode(verifier.digest()).decode("ascii")
                await self._call(
                    doing,
                    s3.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=bytes(buffer),
                        ContentLength=len(buffer),
                        **extra,
                    ),
                )
            else:
                if buffer:
                    parts.append(
                        await self._upload_part(key, upload_id, len(parts) + 1, bytes(buffer))
                    )
                await self._call(
                    doing,
                    s3.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    ),
                )
            completed = True
        finally:
            if upload_id is not None and not completed:
                await self._abort(key, upload_id)

    async def _upload_part(
        self, key: str, upload_id: str, number: int, data: bytes
    ) -> dict[str, Any]:
        resp = await self._call(
            f"upload part {number} of {key}",
            self._s3.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            ),
        )
        return {"ETag": resp["ETag"], "PartNumber": number}

    async def _abort(self, key: str, upload_id: str) -> None:
        # Best effort on the failure path: the original error is what the caller must see;
        # a bucket lifecycle rule for incomplete uploads catches what this misses.
        try:
            await self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (*_TRANSPORT_ERRORS, BlobStoreError):
            pass

    async def put(self, hash: str, data: bytes) -> None:
        await self.put_stream(hash, len(data), one_chunk(data))

    # -- reads -----------------------------------------------------------------------------

    async def stat(self, hash: str) -> int | None:
        try:
            resp = await self._call(
                f"stat blob {hash}",
                self._s3.head_object(Bucket=self.bucket, Key=self.key_for(hash)),
            )
        except BlobMissing:
            return None
        return int(resp["ContentLength"])

    async def _get(self, hash: str) -> Any:
        return await self._call(
            f"read blob {hash}", self._s3.get_object(Bucket=self.bucket, Key=self.key_for(hash))
        )

    async def read_stream(self, hash: str, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
        resp = await self._get(hash)
        async with resp["Body"] as stream:
            while True:
                chunk = await self._call(f"read blob {hash}", stream.read(max(1, chunk_size)))
                if not chunk:
                    return
                yield bytes(chunk)

    async def read(self, hash: str) -> bytes:
        return b"".join([chunk async for chunk in self.read_stream(hash, 1 << 20)])

    async def _hash_object(self, key: str, doing: str) -> tuple[int, str]:
        """(size, ``sha256:<hex>``) of the object at ``key``, streamed. BlobMissing if absent."""
        resp = await self._call(doing, self._s3.get_object(Bucket=self.bucket, Key=key))
        digest = hashlib.sha256()
        total = 0
        async with resp["Body"] as stream:
            while chunk := await self._call(doing, stream.read(1 << 20)):
                digest.update(chunk)
                total += len(chunk)
        return total, HASH_PREFIX + digest.hexdigest()

    async def verify(self, hash: str, size: int) -> None:
        check_size(size)
        total, actual = await self._hash_object(self.key_for(hash), f"read blob {hash}")
        error = scrub_verdict(hash, size, total, actual)
        if error is None:
            return
        if error.reason == "verify-failed":
            await self._call(
                f"delete bad blob {hash}",
                self._s3.delete_object(Bucket=self.bucket, Key=self.key_for(hash)),
            )
        raise error

    # -- staged uploads --------------------------------------------------------------------

    async def _exists(self, key: str, doing: str) -> bool:
        try:
            await self._call(doing, self._s3.head_object(Bucket=self.bucket, Key=key))
        except BlobMissing:
            return False
        return True

    async def _copy(self, source: str, key: str, doing: str) -> None:
        await self._call(
            doing,
            self._s3.copy_object(
                Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": source}
            ),
        )

    async def _delete_key(self, key: str, doing: str) -> None:
        await self._call(doing, self._s3.delete_object(Bucket=self.bucket, Key=key))

    async def commit_upload(self, upload_id: str, hash: str, size: int) -> None:
        staged = self.staging_key_for(upload_id)
        content = self.key_for(hash)
        check_size(size)
        private = staged + _VERIFYING_SUFFIX
        doing = f"commit upload {upload_id}"
        # Freeze the bytes first: the presigned URL may be replayed until it expires, but it
        # can only ever write ``staged``, never ``private``.
        try:
            await self._copy(staged, private, doing)
        except BlobMissing:
            raise BlobMissing(
                f"nothing is staged under upload {upload_id} in {self._where}"
            ) from None
        try:
            await self._delete_key(staged, doing)
            total, actual = await self._hash_object(private, doing)
            error = staged_verdict(upload_id, hash, size, total, actual)
            if error is not None:
                raise error
            if not await self._exists(content, doing):
                # Verified bytes of ``hash``: should a concurrent put have stored the object
                # since the HEAD, this copy writes identical bytes over it.
                await self._copy(private, content, doing)
        finally:
            await self._delete_quietly(private)

    async def _delete_quietly(self, key: str) -> None:
        # Runs on every commit path; a leftover ``.verifying`` key is never a blob, and the
        # original error matters more than a cleanup error.
        try:
            await self._s3.delete_object(Bucket=self.bucket, Key=key)
        except (*_TRANSPORT_ERRORS, BlobStoreError):
            pass

    async def discard_upload(self, upload_id: str) -> bool:
        staged = self.staging_key_for(upload_id)
        doing = f"discard upload {upload_id}"
        # DeleteObject succeeds for absent keys too; the HEAD tells the caller what happened.
        if not await self._exists(staged, doing):
            return False
        await self._delete_key(staged, doing)
        return True

    # -- delete and list -------------------------------------------------------------------

    async def delete(self, hash: str) -> bool:
        # DeleteObject succeeds for absent keys too; the HEAD tells the caller what happened.
        if await self.stat(hash) is None:
            return False
        await self._call(
            f"delete blob {hash}",
            self._s3.delete_object(Bucket=self.bucket, Key=self.key_for(hash)),
        )
        return True

    async def list_hashes(self) -> AsyncIterator[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.key_prefix).__aiter__()
        while True:
            try:
                page = await self._call("list the bucket", pages.__anext__(), bucket_op=True)
            except StopAsyncIteration:
                return
            for item in page.get("Contents", ()):
                name = str(item["Key"])[len(self.key_prefix) :]
                candidate = HASH_PREFIX + name
                try:
                    hash_hex(candidate)
                except BlobStoreError:
                    continue  # the readyz probe or a foreign object under the prefix
                yield candidate

    # -- URL grants ------------------------------------------------------------------------

    def can_grant_urls(self) -> bool:
        return True

    def _presign(self, operation: str, params: dict[str, Any], ttl_s: int) -> str:
        if self._presigner is None:
            raise BlobBackendError(f"{self._where}: the store is not open", reason="unavailable")
        try:
            url = self._presigner.generate_presigned_url(operation, Params=params, ExpiresIn=ttl_s)
        except BotoCoreError as exc:
            raise self._error(exc, f"presign {operation}") from exc
        return str(url)

    def upload_url(
        self, hash: str, size: int, *, upload_id: str, now_ms: int, ttl_s: int
    ) -> UrlGrant | None:
        """A presigned PUT of ``upload_id``'s staging key, signing its length and checksum."""
        check_size(size)
        hash_hex(hash)
        ttl_s = min(max(1, ttl_s), MAX_URL_TTL_S)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.staging_key_for(upload_id),
            "ContentLength": size,
        }
        headers: dict[str, str] = {}
        if self.checksums:
            checksum = base64.b64encode(bytes.fromhex(hash_hex(hash))).decode("ascii")
            params["ChecksumSHA256"] = checksum
            headers["x-amz-checksum-sha256"] = checksum
        url = self._presign("put_object", params, ttl_s)
        return UrlGrant(url=url, method="PUT", expires_ms=now_ms + ttl_s * 1000, headers=headers)

    def download_url(self, hash: str, *, now_ms: int, ttl_s: int) -> UrlGrant | None:
        ttl_s = min(max(1, ttl_s), MAX_URL_TTL_S)
        url = self._presign("get_object", {"Bucket": self.bucket, "Key": self.key_for(hash)}, ttl_s)
        return UrlGrant(url=url, method="GET", expires_ms=now_ms + ttl_s * 1000, headers={})
