"""Signed, expiring URLs for the filesystem backend (SPEC §4 direct path).

Two kinds, each under its own MAC domain so a signature of one is never valid for the other:

- downloads: ``{base}/v1/blobs/{hash}?exp=<ms>&size=<n>&sig=<mac>``, the MAC (unpadded
  base64url HMAC-SHA256 under the server's secret) covering ``method``, ``hash``, ``exp``
  and ``size``. The method is inside the MAC, so a URL signed for one method is refused for
  another. The server serves only ``GET`` here: nothing is ever written to a content
  address through a URL.
- uploads: ``{base}/v1/uploads/{upload_id}?hash=<h>&size=<n>&exp=<ms>&sig=<mac>``, the MAC
  covering ``upload_id``, ``hash``, ``size`` and ``exp``. The bytes land under the staging
  name of ``upload_id`` and nowhere else; editing the id, the hash or the size breaks the
  signature, so a URL cannot be redirected to another name or carry another body size.

The server's routes call :meth:`UrlSigner.check_query` / :meth:`UrlSigner.check_upload` and
then ``read_stream`` / ``put_upload_stream`` of the store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from .base import BlobStoreError, UrlGrant, check_size, check_upload_id, hash_hex

#: Shortest secret accepted: 128 bits.
MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True)
class UploadTicket:
    """What a checked upload URL grants: ``size`` bytes of ``hash`` staged as ``upload_id``,
    until ``expires_ms``."""

    upload_id: str
    hash: str
    size: int
    expires_ms: int


class UrlSigner:
    """Signs and checks blob URLs. Time is an argument: the signer reads no clock."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"blob URL secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = bytes(secret)

    def sign(self, method: str, hash: str, exp_ms: int, size: int) -> str:
        """The ``sig`` query value for this method, hash, expiry and size."""
        hash_hex(hash)
        message = f"roomsync-blob-url/1\n{method.upper()}\n{hash}\n{int(exp_ms)}\n{int(size)}"
        mac = hmac.new(self._secret, message.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def check(
        self, method: str, hash: str, exp_ms: int, size: int, sig: str, *, now_ms: int
    ) -> None:
        """Raise :class:`BlobStoreError` ``bad-signature`` when ``sig`` was not made by :meth:`sign`
        for exactly these values, or ``expired-url`` when ``now_ms >= exp_ms``.

        The signature is checked first (in constant time), so an edited ``exp`` reads as a
        bad signature, not as an expiry.
        """
        expected = self.sign(method, hash, exp_ms, size).encode("ascii")
        if not hmac.compare_digest(expected, sig.encode("utf-8", "replace")):
            raise BlobStoreError(f"blob URL for {hash}: bad signature", reason="bad-signature")
        if now_ms >= exp_ms:
            raise BlobStoreError(
                f"blob URL for {hash} expired at {exp_ms} (now {now_ms})", reason="expired-url"
            )

    def check_query(self, method: str, hash: str, query: Mapping[str, str], *, now_ms: int) -> int:
        """Check a request's query (``exp``, ``size``, ``sig``) and return the granted size.

        Raises :class:`BlobStoreError` ``bad-url`` when a parameter is missing or not a number,
        then as :meth:`check`.
        """
        try:
            exp_ms = int(query["exp"])
            size = check_size(int(query["size"]))
            sig = query["sig"]
        except (KeyError, ValueError, BlobStoreError):
            raise BlobStoreError(
                f"blob URL for {hash}: needs exp, size and sig query parameters",
                reason="bad-url",
            ) from None
        self.check(method, hash, exp_ms, size, sig, now_ms=now_ms)
        return size

    def grant(
        self, method: str, base_url: str, hash: str, size: int, *, now_ms: int, ttl_s: int
    ) -> UrlGrant:
        """A :class:`UrlGrant` for ``{base_url}/v1/blobs/{hash}`` valid for ``ttl_s`` seconds."""
        hash_hex(hash)
        check_size(size)
        method = method.upper()
        exp_ms = now_ms + ttl_s * 1000
        query = urlencode(
            {"exp": exp_ms, "size": size, "sig": self.sign(method, hash, exp_ms, size)}
        )
        url = f"{base_url.rstrip('/')}/v1/blobs/{hash}?{query}"
        return UrlGrant(url=url, method=method, expires_ms=exp_ms, headers={})

    # -- upload URLs -----------------------------------------------------------------------

    def sign_upload(self, upload_id: str, hash: str, exp_ms: int, size: int) -> str:
        """The ``sig`` query value of the upload URL for these values."""
        check_upload_id(upload_id)
        hash_hex(hash)
        message = f"roomsync-upload-url/1\nPUT\n{upload_id}\n{hash}\n{int(exp_ms)}\n{int(size)}"
        mac = hmac.new(self._secret, message.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def check_upload(
        self, upload_id: str, query: Mapping[str, str], *, now_ms: int
    ) -> UploadTicket:
        """Check an upload request (its path's ``upload_id`` and its query) and return what
        it grants.

        Raises :class:`BlobStoreError` ``bad-url`` when ``hash``, ``size``, ``exp`` or ``sig`` is
        missing or malformed (or the upload id is), ``bad-signature`` when the MAC does not
        cover exactly these values (checked first, in constant time) and ``expired-url``
        when ``now_ms >= exp``.
        """
        try:
            check_upload_id(upload_id)
            hash = query["hash"]
            hash_hex(hash)
            exp_ms = int(query["exp"])
            size = check_size(int(query["size"]))
            sig = query["sig"]
        except (KeyError, ValueError, BlobStoreError):
            raise BlobStoreError(
                f"upload URL {upload_id!r}: needs a valid upload id and hash, size, exp "
                "and sig query parameters",
                reason="bad-url",
            ) from None
        expected = self.sign_upload(upload_id, hash, exp_ms, size).encode("ascii")
        if not hmac.compare_digest(expected, sig.encode("utf-8", "replace")):
            raise BlobStoreError(f"upload URL {upload_id}: bad signature", reason="bad-signature")
        if now_ms >= exp_ms:
            raise BlobStoreError(
                f"upload URL {upload_id} expired at {exp_ms} (now {now_ms})",
                reason="expired-url",
            )
        return UploadTicket(upload_id, hash, size, exp_ms)

    def grant_upload(
        self, base_url: str, upload_id: str, hash: str, size: int, *, now_ms: int, ttl_s: int
    ) -> UrlGrant:
        """A PUT :class:`UrlGrant` for ``{base_url}/v1/uploads/{upload_id}`` valid for
        ``ttl_s`` seconds."""
        check_upload_id(upload_id)
        hash_hex(hash)
        check_size(size)
        exp_ms = now_ms + ttl_s * 1000
        sig = self.sign_upload(upload_id, hash, exp_ms, size)
        query = urlencode({"hash": hash, "size": size, "exp": exp_ms, "sig": sig})
        url = f"{base_url.rstrip('/')}/v1/uploads/{upload_id}?{query}"
        return UrlGrant(url=url, method="PUT", expires_ms=exp_ms, headers={})
