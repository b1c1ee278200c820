"""Signed, expiring ``/v1/blobs/{hash}`` URLs for the filesystem backend (SPEC §4 direct path).

A URL is ``{base}/v1/blobs/{hash}?exp=<ms>&size=<n>&sig=<mac>`` where ``mac`` is the
unpadded base64url HMAC-SHA256, under the server's secret, of ``method``, ``hash``, ``exp``
and ``size``. The method is inside the MAC, so a GET URL cannot be replayed as a PUT; the
size is inside it, so a PUT URL cannot carry a bigger body than was granted.

The server's routes call :meth:`UrlSigner.check_query` (or :meth:`UrlSigner.check`) and then
``put_stream`` / ``read_stream`` of the store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlencode

from .base import BlobError, UrlGrant, check_size, hash_hex

#: Shortest secret accepted: 128 bits.
MIN_SECRET_BYTES = 16


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
        """Raise :class:`BlobError` ``bad-signature`` when ``sig`` was not made by :meth:`sign`
        for exactly these values, or ``expired-url`` when ``now_ms >= exp_ms``.

        The signature is checked first (in constant time), so an edited ``exp`` reads as a
        bad signature, not as an expiry.
        """
        expected = self.sign(method, hash, exp_ms, size).encode("ascii")
        if not hmac.compare_digest(expected, sig.encode("utf-8", "replace")):
            raise BlobError(f"blob URL for {hash}: bad signature", reason="bad-signature")
        if now_ms >= exp_ms:
            raise BlobError(
                f"blob URL for {hash} expired at {exp_ms} (now {now_ms})", reason="expired-url"
            )

    def check_query(self, method: str, hash: str, query: Mapping[str, str], *, now_ms: int) -> int:
        """Check a request's query (``exp``, ``size``, ``sig``) and return the granted size.

        Raises :class:`BlobError` ``bad-url`` when a parameter is missing or not a number,
        then as :meth:`check`.
        """
        try:
            exp_ms = int(query["exp"])
            size = check_size(int(query["size"]))
            sig = query["sig"]
        except (KeyError, ValueError, BlobError):
            raise BlobError(
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
