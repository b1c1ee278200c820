"""Signed URLs: /v1/blobs (the MAC covers method, hash, expiry and size) and /v1/uploads
(the MAC covers upload id, hash, size and expiry); time is an argument."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from roomsync.blobs import BlobStoreError, UrlSigner, sha256_hex

SECRET = b"0123456789abcdef-signing-secret"
HASH = sha256_hex(b"signed blob")
NOW = 1_700_000_000_000
UPLOAD = "upload-0123456789abcdef"


def _reason(exc: pytest.ExceptionInfo[BlobStoreError]) -> str:
    return exc.value.reason


def test_round_trip() -> None:
    signer = UrlSigner(SECRET)
    sig = signer.sign("PUT", HASH, NOW + 1000, 42)
    signer.check("PUT", HASH, NOW + 1000, 42, sig, now_ms=NOW)
    signer.check("put", HASH, NOW + 1000, 42, sig, now_ms=NOW + 999)  # method is case-blind


def test_signature_is_url_safe_and_stable() -> None:
    sig = UrlSigner(SECRET).sign("GET", HASH, NOW, 1)
    assert sig == UrlSigner(SECRET).sign("GET", HASH, NOW, 1)
    assert len(sig) == 43 and all(c.isalnum() or c in "-_" for c in sig)


def test_expired_at_and_after_exp() -> None:
    signer = UrlSigner(SECRET)
    sig = signer.sign("GET", HASH, NOW, 7)
    for now in (NOW, NOW + 1):
        with pytest.raises(BlobStoreError) as exc:
            signer.check("GET", HASH, NOW, 7, sig, now_ms=now)
        assert _reason(exc) == "expired-url"


@pytest.mark.parametrize(
    ("method", "hash", "exp", "size"),
    [
        ("PUT", HASH, NOW + 1000, 42),  # a GET URL replayed as a PUT
        ("GET", sha256_hex(b"another blob"), NOW + 1000, 42),
        ("GET", HASH, NOW + 2000, 42),  # expiry pushed out
        ("GET", HASH, NOW + 1000, 43),  # bigger size
    ],
)
def test_any_change_breaks_the_signature(method: str, hash: str, exp: int, size: int) -> None:
    signer = UrlSigner(SECRET)
    sig = signer.sign("GET", HASH, NOW + 1000, 42)
    with pytest.raises(BlobStoreError) as exc:
        signer.check(method, hash, exp, size, sig, now_ms=NOW)
    assert _reason(exc) == "bad-signature"


def test_bad_signature_wins_over_expiry() -> None:
    signer = UrlSigner(SECRET)
    with pytest.raises(BlobStoreError) as exc:
        signer.check("GET", HASH, NOW - 1, 1, "forged", now_ms=NOW)
    assert _reason(exc) == "bad-signature"


@pytest.mark.parametrize("sig", ["", "x" * 43, "é" * 43, "short"])
def test_garbage_signatures(sig: str) -> None:
    with pytest.raises(BlobStoreError) as exc:
        UrlSigner(SECRET).check("GET", HASH, NOW + 1, 1, sig, now_ms=NOW)
    assert _reason(exc) == "bad-signature"


def test_other_secret_refused() -> None:
    sig = UrlSigner(SECRET).sign("GET", HASH, NOW + 1, 1)
    with pytest.raises(BlobStoreError) as exc:
        UrlSigner(b"another-secret-of-16+bytes").check("GET", HASH, NOW + 1, 1, sig, now_ms=NOW)
    assert _reason(exc) == "bad-signature"


def test_short_secret_rejected() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        UrlSigner(b"short")


def test_bad_hash_rejected() -> None:
    with pytest.raises(BlobStoreError) as exc:
        UrlSigner(SECRET).sign("GET", "sha256:nothex", NOW, 1)
    assert _reason(exc) == "bad-hash"


def test_grant_url_format_and_check_query() -> None:
    signer = UrlSigner(SECRET)
    grant = signer.grant("put", "https://sync.example.test/", HASH, 42, now_ms=NOW, ttl_s=30)
    assert grant.method == "PUT"
    assert grant.expires_ms == NOW + 30_000
    assert grant.headers == {}
    parts = urlsplit(grant.url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "sync.example.test",
        f"/v1/blobs/{HASH}",
    )
    query = dict(parse_qsl(parts.query))
    assert query["exp"] == str(NOW + 30_000) and query["size"] == "42"
    assert signer.check_query("PUT", HASH, query, now_ms=NOW) == 42
    with pytest.raises(BlobStoreError) as exc:
        signer.check_query("GET", HASH, query, now_ms=NOW)
    assert _reason(exc) == "bad-signature"
    with pytest.raises(BlobStoreError) as exc:
        signer.check_query("PUT", HASH, query, now_ms=NOW + 30_000)
    assert _reason(exc) == "expired-url"


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"exp": "1", "size": "2"},
        {"exp": "soon", "size": "2", "sig": "x"},
        {"exp": "1", "size": "-2", "sig": "x"},
    ],
)
def test_check_query_needs_all_parameters(query: dict[str, str]) -> None:
    with pytest.raises(BlobStoreError) as exc:
        UrlSigner(SECRET).check_query("GET", HASH, query, now_ms=NOW)
    assert _reason(exc) == "bad-url"


def _upload_query(grant_url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(grant_url)
    return parts.path.rsplit("/", 1)[1], dict(parse_qsl(parts.query))


def test_upload_grant_round_trip() -> None:
    signer = UrlSigner(SECRET)
    grant = signer.grant_upload(
        "https://sync.example.test/", UPLOAD, HASH, 42, now_ms=NOW, ttl_s=30
    )
    assert grant.method == "PUT" and grant.expires_ms == NOW + 30_000 and grant.headers == {}
    parts = urlsplit(grant.url)
    assert (parts.netloc, parts.path) == ("sync.example.test", f"/v1/uploads/{UPLOAD}")
    upload_id, query = _upload_query(grant.url)
    ticket = signer.check_upload(upload_id, query, now_ms=NOW)
    assert (ticket.upload_id, ticket.hash, ticket.size) == (UPLOAD, HASH, 42)
    assert ticket.expires_ms == NOW + 30_000
    with pytest.raises(BlobStoreError) as exc:
        signer.check_upload(upload_id, query, now_ms=NOW + 30_000)
    assert _reason(exc) == "expired-url"


@pytest.mark.parametrize(
    ("upload_id", "edit"),
    [
        ("upload-fedcba9876543210", {}),  # the URL pointed at another staging name
        (UPLOAD, {"hash": sha256_hex(b"another blob")}),
        (UPLOAD, {"size": "43"}),
        (UPLOAD, {"exp": str(NOW + 60_000)}),
    ],
)
def test_upload_url_cannot_be_redirected(upload_id: str, edit: dict[str, str]) -> None:
    signer = UrlSigner(SECRET)
    grant = signer.grant_upload("https://h", UPLOAD, HASH, 42, now_ms=NOW, ttl_s=30)
    _, query = _upload_query(grant.url)
    with pytest.raises(BlobStoreError) as exc:
        signer.check_upload(upload_id, {**query, **edit}, now_ms=NOW)
    assert _reason(exc) == "bad-signature"


def test_blob_and_upload_signatures_never_cross() -> None:
    signer = UrlSigner(SECRET)
    down = signer.grant("GET", "https://h", HASH, 42, now_ms=NOW, ttl_s=30)
    down_query = dict(parse_qsl(urlsplit(down.url).query))
    with pytest.raises(BlobStoreError) as exc:
        signer.check_upload(UPLOAD, {**down_query, "hash": HASH}, now_ms=NOW)
    assert _reason(exc) == "bad-signature"
    up = signer.grant_upload("https://h", UPLOAD, HASH, 42, now_ms=NOW, ttl_s=30)
    _, up_query = _upload_query(up.url)
    for method in ("GET", "PUT"):
        with pytest.raises(BlobStoreError) as exc:
            signer.check_query(method, HASH, up_query, now_ms=NOW)
        assert _reason(exc) == "bad-signature"


@pytest.mark.parametrize(
    ("upload_id", "query"),
    [
        (UPLOAD, {}),
        (UPLOAD, {"hash": HASH, "size": "1", "exp": "1"}),
        (UPLOAD, {"hash": "sha256:nothex", "size": "1", "exp": "1", "sig": "x"}),
        ("../../etc/passwd", {"hash": HASH, "size": "1", "exp": "1", "sig": "x"}),
        ("short", {"hash": HASH, "size": "1", "exp": "1", "sig": "x"}),
    ],
)
def test_check_upload_needs_valid_parameters(upload_id: str, query: dict[str, str]) -> None:
    with pytest.raises(BlobStoreError) as exc:
        UrlSigner(SECRET).check_upload(upload_id, query, now_ms=NOW)
    assert _reason(exc) == "bad-url"
