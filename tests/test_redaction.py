"""roomsync.redaction: one set of masking rules for logs and settings (SPEC §7)."""

from __future__ import annotations

import pytest

from roomsync.redaction import REDACTED, mask_secret, redact, redact_dsn, redact_text

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def test_redact_values_and_text() -> None:
    assert redact({"token": TOKEN, "room": "r"}) == {"token": REDACTED, "room": "r"}
    assert TOKEN not in redact_text(f"bad token {TOKEN} here")
    assert redact_text("GET /v1/blobs/x?exp=1&sig=abcdef") == "GET /v1/blobs/x?exp=1&sig=***"
    assert redact({"nested": [{"data": "AAAA"}]}) == {"nested": [{"data": REDACTED}]}
    assert redact({"Authorization": "Bearer x", "key": ""}) == {
        "Authorization": REDACTED,
        "key": "",
    }
    assert redact(("a", TOKEN, 3)) == ["a", REDACTED, 3]


def test_redact_text_masks_s3_presigned_parameters() -> None:
    url = "https://s3/b/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=deadbeef&x=1"
    assert redact_text(url) == "https://s3/b/k?X-Amz-Credential=***&X-Amz-Signature=***&x=1"


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("host=h user=u password=secret dbname=d", "host=h user=u password=*** dbname=d"),
        ("", ""),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected


def test_mask_secret_keeps_the_shape() -> None:
    assert mask_secret({"k1": "s1", "k2": "s2"}) == {"k1": REDACTED, "k2": REDACTED}
    assert mask_secret({}) == {}
    assert mask_secret("aws-secret") == REDACTED
    assert mask_secret("") == ""
    assert mask_secret("postgresql://u:pw@h/db", dsn=True) == "postgresql://u:***@h/db"
    # Without dsn=True a connection string is a plain secret: all of it is masked.
    assert mask_secret("postgresql://u:pw@h/db") == REDACTED
