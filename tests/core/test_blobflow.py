"""Unit tests of roomsync.core.blobflow: the client's upload and fetch flows, driven by hand."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomsync.core import messages as m
from roomsync.core.blobflow import (
    BODY_EXCERPT,
    INLINE_OVERHEAD,
    REPLIES,
    REPLY_TYPES,
    Answer,
    BlobFailed,
    BlobFailure,
    Fetched,
    FetchFlow,
    HttpFailure,
    HttpGet,
    HttpPut,
    HttpResponse,
    Notice,
    SendFrame,
    Step,
    Stored,
    UploadFlow,
    blob_hash,
    check_blob_hash,
    fetch_flow,
    inline_fits,
    upload_flow,
    verify,
)
from roomsync.core.limits import WelcomeLimits

DATA = b"the bytes of a blob" * 20
HASH = "sha256:" + hashlib.sha256(DATA).hexdigest()
B64 = base64.b64encode(DATA).decode("ascii")
INLINE = ("read", "write", "blob")
DIRECT = (*INLINE, "blob-direct")
LIMITS = WelcomeLimits()
GRANT = m.UploadUrl(hash=HASH, url="https://s3/put", expires=9, headers={"x-amz": "1"})

REJECTED, NOT_FOUND, FETCH_FAILED = (
    BlobFailure.REJECTED,
    BlobFailure.NOT_FOUND,
    BlobFailure.FETCH_FAILED,
)


def run(flow: UploadFlow | FetchFlow, *answers: Answer) -> tuple[list[Step], object]:
    """Drive ``flow`` with ``answers``, one per step; the steps it took and its outcome."""
    steps: list[Step] = []
    pending = list(answers)
    try:
        step = next(flow)
        while True:
            steps.append(step)
            step = flow.send(None if isinstance(step, Notice) else pending.pop(0))
    except StopIteration as stop:
        assert not pending, f"answers left over: {pending}"
        return steps, stop.value


def upload(
    caps: tuple[str, ...] = DIRECT, limits: WelcomeLimits = LIMITS, data: bytes = DATA
) -> UploadFlow:
    return upload_flow(blob_hash(data), data, caps=caps, limits=limits)


INLINE_FRAME = SendFrame(m.BlobUpload(hash=HASH, size=len(DATA), data=B64))

# -- helpers -------------------------------------------------------------------------------


def test_blob_hash_and_check() -> None:
    assert blob_hash(DATA) == HASH
    assert check_blob_hash(HASH) == HASH
    for bad in ("sha256:XYZ", "md5:" + "0" * 32, HASH.upper(), ""):
        with pytest.raises(ValueError, match="sha256"):
            check_blob_hash(bad)


def test_inline_fits_counts_base64_and_the_envelope() -> None:
    assert inline_fits(3, 4 + INLINE_OVERHEAD)
    assert not inline_fits(4, 4 + INLINE_OVERHEAD)  # 4 bytes are 8 in base64
    assert inline_fits(0, INLINE_OVERHEAD)
    assert not inline_fits(0, INLINE_OVERHEAD - 1)


def test_verify() -> None:
    assert verify(HASH, DATA, None) is None
    assert verify(HASH, DATA, len(DATA)) is None
    assert verify(HASH, DATA, 3) == f"size-mismatch: got {len(DATA)} bytes, announced 3"
    assert verify(HASH, DATA + b"!", None) == (
        "hash-mismatch: the bytes received have another sha256"
    )


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_verify_accepts_exactly_the_bytes_of_the_hash(data: bytes, other: bytes) -> None:
    assert verify(blob_hash(data), data, len(data)) is None
    assert (verify(blob_hash(data), other, None) is None) == (data == other)


def test_replies_cover_every_frame_the_flows_send() -> None:
    assert set(REPLIES) == {"request-upload", "blob-upload", "blob-uploaded", "blob-request"}
    assert REPLY_TYPES == {
        "upload-url",
        "upload-denied",
        "blob-uploaded",
        "upload-rejected",
        "blob",
    }
    assert REPLIES["blob-request"] == {"blob"}


# -- upload --------------------------------------------------------------------------------


def test_upload_needs_the_blob_cap() -> None:
    assert run(upload(caps=("read", "write"))) == (
        [],
        BlobFailed(REJECTED, HASH, "forbidden: this session has no 'blob' capability"),
    )


def test_inline_upload() -> None:
    steps, outcome = run(upload(caps=INLINE), m.BlobUploaded(hash=HASH))
    assert steps == [INLINE_FRAME] and outcome == Stored(HASH, direct=False)
    assert INLINE_FRAME.message.to_wire() == {
        "type": "blob-upload",
        "hash": HASH,
        "size": len(DATA),
        "data": B64,
    }


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (m.UploadRejected(hash=HASH, reason="verify-failed"), "verify-failed"),
        (
            m.Error(code="forbidden", message="no blob cap", ref="blob-upload"),
            "forbidden: no blob cap",
        ),
        (m.Blob(hash=HASH, data=B64), "unexpected answer 'blob' to the upload"),
    ],
    ids=["upload-rejected", "error", "unexpected"],
)
def test_inline_upload_refused(answer: m.Message, reason: str) -> None:
    assert run(upload(caps=INLINE), answer) == (
        [INLINE_FRAME],
        BlobFailed(REJECTED, HASH, reason),
    )


def test_inline_upload_over_blob_max_bytes_is_not_sent() -> None:
    limits = WelcomeLimits(blob_max_bytes=100)
    assert run(upload(caps=INLINE, limits=limits)) == (
        [],
        BlobFailed(REJECTED, HASH, f"too-large: {len(DATA)} > blob_max_bytes 100"),
    )


def test_inline_upload_too_big_for_a_frame_is_not_sent() -> None:
    limits = WelcomeLimits(max_frame_bytes=300)
    steps, outcome = run(upload(caps=INLINE, limits=limits))
    assert steps == []
    assert outcome == BlobFailed(
        REJECTED,
        HASH,
        f"too-large for an inline upload: {len(DATA)} bytes do not fit a 300-byte frame, "
        "and cap blob-direct was not negotiated",
    )


def test_direct_upload() -> None:
    steps, outcome = run(
        upload(),
        GRANT,
        HttpResponse(201),
        m.BlobUploaded(hash=HASH),
    )
    assert steps == [
        SendFrame(m.RequestUpload(hash=HASH, size=len(DATA))),
        HttpPut("https://s3/put", "PUT", {"x-amz": "1"}, DATA),
        SendFrame(m.BlobUploaded(hash=HASH)),
    ]
    assert outcome == Stored(HASH, direct=True)


def test_direct_upload_uses_the_grant_method() -> None:
    grant = m.UploadUrl(hash=HASH, url="http://srv/v1/uploads/u1", expires=9, method="POST")
    steps, _ = run(upload(), grant, HttpResponse(200), m.BlobUploaded(hash=HASH))
    assert steps[1] == HttpPut("http://srv/v1/uploads/u1", "POST", {}, DATA)


def test_direct_upload_failing_verification_is_rejected() -> None:
    _, outcome = run(
        upload(), GRANT, HttpResponse(200), m.UploadRejected(hash=HASH, reason="verify-failed")
    )
    assert outcome == BlobFailed(REJECTED, HASH, "verify-failed")


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (HttpResponse(403, b"AccessDenied" + b"." * 300), "http-403: AccessDenied" + "." * 188),
        (HttpFailure("ClientConnectorError()"), "network: ClientConnectorError()"),
        (None, "unexpected answer 'NoneType' to the direct upload"),
    ],
    ids=["http-error", "network", "unexpected"],
)
def test_a_failed_put_falls_back_to_inline(answer: Answer, why: str) -> None:
    steps, outcome = run(upload(), GRANT, answer, m.BlobUploaded(hash=HASH))
    assert steps[2:] == [
        Notice(f"blob {HASH}: the direct upload failed ({why}); uploading inline"),
        INLINE_FRAME,
    ]
    assert outcome == Stored(HASH, direct=False)


def test_a_failed_put_of_a_blob_too_big_for_inline_is_rejected_with_both_reasons() -> None:
    _, outcome = run(upload(limits=WelcomeLimits(max_frame_bytes=300)), GRANT, HttpResponse(500))
    assert isinstance(outcome, BlobFailed) and outcome.failure is REJECTED
    assert outcome.reason.endswith("and the direct upload failed (http-500: )")


def test_upload_denied_falls_back_to_inline() -> None:
    denied = m.UploadDenied(hash=HASH, reason="no-direct-io: the memory backend grants no URLs")
    steps, outcome = run(upload(), denied, m.BlobUploaded(hash=HASH))
    assert steps == [SendFrame(m.RequestUpload(hash=HASH, size=len(DATA))), INLINE_FRAME]
    assert outcome == Stored(HASH, direct=False)
    _, small = run(upload(limits=WelcomeLimits(max_frame_bytes=300)), denied)
    assert isinstance(small, BlobFailed)
    assert small.reason.endswith(f"and upload-denied: {denied.reason}")


def test_upload_denied_as_too_large_is_rejected_without_inline() -> None:
    denied = m.UploadDenied(hash=HASH, reason="too-large: 5000 > blob_max_bytes 4096")
    assert run(upload(), denied) == (
        [SendFrame(m.RequestUpload(hash=HASH, size=len(DATA)))],
        BlobFailed(REJECTED, HASH, denied.reason),
    )


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (m.Error(code="forbidden", message="no", ref="request-upload"), "forbidden: no"),
        (m.BlobUploaded(hash=HASH), "unexpected answer 'blob-uploaded' to request-upload"),
    ],
)
def test_request_upload_refused(answer: m.Message, reason: str) -> None:
    _, outcome = run(upload(), answer)
    assert outcome == BlobFailed(REJECTED, HASH, reason)


@given(st.binary(max_size=2000))
def test_inline_upload_sends_exactly_the_bytes(data: bytes) -> None:
    steps, outcome = run(upload(caps=INLINE, data=data), m.BlobUploaded(hash=blob_hash(data)))
    assert isinstance(steps[0], SendFrame) and isinstance(steps[0].message, m.BlobUpload)
    sent = steps[0].message
    assert (sent.hash, sent.size, base64.b64decode(sent.data)) == (blob_hash(data), len(data), data)
    assert sent.type in REPLIES and outcome == Stored(blob_hash(data), direct=False)


# -- fetch ---------------------------------------------------------------------------------

REQUEST = SendFrame(m.BlobRequest(hash=HASH))


def fetch(caps: tuple[str, ...] = DIRECT) -> FetchFlow:
    return fetch_flow(HASH, caps=caps)


def test_fetch_needs_the_blob_cap() -> None:
    assert run(fetch(caps=("read",))) == (
        [],
        BlobFailed(FETCH_FAILED, HASH, "forbidden: this session has no 'blob' capability"),
    )


def test_fetch_inline() -> None:
    assert run(fetch(), m.Blob(hash=HASH, data=B64, size=len(DATA))) == (
        [REQUEST],
        Fetched(DATA, direct=False),
    )


def test_fetch_by_url() -> None:
    answer = m.Blob(hash=HASH, url="https://s3/get", size=len(DATA))
    steps, outcome = run(fetch(), answer, HttpResponse(200, DATA, len(DATA)))
    assert steps == [REQUEST, HttpGet("https://s3/get", len(DATA))]
    assert outcome == Fetched(DATA, direct=True)
    # Without an announced size or Content-Length, the hash alone decides.
    _, unsized = run(fetch(), m.Blob(hash=HASH, url="u"), HttpResponse(200, DATA))
    assert unsized == Fetched(DATA, direct=True)


URL = m.Blob(hash=HASH, url="u")
OTHER = base64.b64encode(b"other").decode()
HASH_MISMATCH = "hash-mismatch: the bytes received have another sha256"
FETCH_FAILURES = [
    pytest.param(
        [m.Error(code="not-found", message="no such blob")],
        NOT_FOUND,
        "not-found: no such blob",
        id="not-found",
    ),
    pytest.param(
        [m.Error(code="internal", message="blob storage failed")],
        FETCH_FAILED,
        "internal: blob storage failed",
        id="server-error",
    ),
    pytest.param(
        [m.UploadUrl(hash=HASH, url="u", expires=1)],
        FETCH_FAILED,
        "unexpected answer 'upload-url' to blob-request",
        id="unexpected-reply",
    ),
    pytest.param(
        [m.Blob(hash=HASH)], FETCH_FAILED, "the blob answer has neither data nor url", id="empty"
    ),
    pytest.param(
        [m.Blob(hash=HASH, data="not base64!")],
        FETCH_FAILED,
        "bad-base64: the inline data is not base64",
        id="bad-base64",
    ),
    pytest.param(
        [m.Blob(hash=HASH, data=OTHER)], FETCH_FAILED, HASH_MISMATCH, id="inline-hash-mismatch"
    ),
    pytest.param(
        [m.Blob(hash=HASH, data=B64, size=3)],
        FETCH_FAILED,
        f"size-mismatch: got {len(DATA)} bytes, announced 3",
        id="inline-size-mismatch",
    ),
    pytest.param(
        [URL, HttpResponse(403, "é".encode() * 300)],
        FETCH_FAILED,
        "http-403: " + "é" * BODY_EXCERPT,
        id="http-error",
    ),
    pytest.param(
        [URL, HttpFailure("TimeoutError()")],
        FETCH_FAILED,
        "network: TimeoutError()",
        id="network",
    ),
    pytest.param(
        [m.Blob(hash=HASH, url="u", size=len(DATA)), HttpResponse(200, b"", 7)],
        FETCH_FAILED,
        f"size-mismatch: 7 bytes, announced {len(DATA)}",
        id="content-length",
    ),
    pytest.param(
        [URL, HttpResponse(200, b"tampered")], FETCH_FAILED, HASH_MISMATCH, id="url-hash-mismatch"
    ),
    pytest.param(
        [URL, None],
        FETCH_FAILED,
        "unexpected answer 'NoneType' to the download",
        id="unexpected-http-answer",
    ),
]


@pytest.mark.parametrize(("answers", "failure", "reason"), FETCH_FAILURES)
def test_fetch_failures(answers: list[Answer], failure: BlobFailure, reason: str) -> None:
    steps, outcome = run(fetch(), *answers)
    assert steps[0] == REQUEST
    assert outcome == BlobFailed(failure, HASH, reason)


def test_http_get_says_when_the_body_is_needed() -> None:
    get = HttpGet("u", 10)
    assert get.needs_body(200, 10) and get.needs_body(200, None)
    assert not get.needs_body(200, 11)  # fails unread
    assert get.needs_body(404, 11)  # the error body is quoted in the reason
    assert HttpGet("u", None).needs_body(200, 11)
