"""The client's blob flows (SPEC §4) as generators, sans I/O (STYLE lesson 5).

:func:`upload_flow` and :func:`fetch_flow` make every decision of ``put_blob`` and
``get_blob``: which frames to send, when to fall back to an inline upload, how to read
the server's answers and when bytes can be trusted. Like httpx's ``auth_flow`` they do no
I/O: they *yield* the next step and are *sent* its answer. The SDK drives them on one
connection; the TypeScript client ports them one to one::

    flow = upload_flow(hash, data, caps=welcome.caps, limits=WelcomeLimits.parse(welcome.limits))
    try:
        step = next(flow)
        while True:
            step = flow.send(await perform(step))
    except StopIteration as stop:
        outcome = stop.value            # Stored / Fetched, or BlobFailed

where ``perform`` answers each step:

* :class:`SendFrame`: send ``step.message`` on the connection and answer with the server's
  reply: the next frame whose type is in ``REPLIES[step.message.type]`` and whose ``hash``
  is the step's, or an ``error`` whose ``ref`` is the step's type (the server answers a
  connection's frames in order, so the oldest waiting call of that type gets it);
* :class:`HttpPut` / :class:`HttpGet`: make the HTTP request and answer with an
  :class:`HttpResponse`, or an :class:`HttpFailure` when no response came;
* :class:`Notice`: log it (warning); answer None.

When the connection drops while a frame waits for its reply, the driver starts the flow
over on the next connection (uploading the same bytes twice is harmless: a blob is
addressed by its hash).

Upload (``put_blob``)
---------------------
1. Without cap ``blob``: rejected (``forbidden: ...``).
2. With cap ``blob-direct``: ``request-upload{hash, size}``. On ``upload-url`` the bytes
   are PUT (the grant's ``method``, default PUT, and ``headers``) to the grant's URL; a
   2xx answer is confirmed with ``blob-uploaded{hash}`` and the server's verification
   (``blob-uploaded``: stored; ``upload-rejected``: rejected with its reason). A failed
   PUT falls back to inline (with a :class:`Notice`). ``upload-denied`` falls back to
   inline, except ``too-large...``, which no inline upload would change: rejected.
3. Inline: rejected without sending when the blob exceeds ``limits.blob_max_bytes``
   (``too-large: N > blob_max_bytes M``, the server's wording) or when its
   ``blob-upload`` frame would not fit ``limits.max_frame_bytes``; else
   ``blob-upload{hash, size, data}`` and the server's verification as above.
4. An ``error`` answering any of these frames: rejected, ``<code>: <message>``.

Fetch (``get_blob``)
--------------------
1. Without cap ``blob``: failed (``forbidden: ...``).
2. ``blob-request{hash}``: ``blob{data}`` (inline base64) or ``blob{url}`` (a download
   grant, fetched with GET; anything but 200 fails as ``http-<status>: <body excerpt>``,
   no response as ``network: ...``). ``error{code: "not-found"}``: not found; another
   ``error``: failed.
3. The bytes are trusted only when they have the announced ``size`` (when announced) and
   hash to ``hash``: else ``size-mismatch: ...`` / ``hash-mismatch: ...``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from . import messages as m
from .codec import b64decode, b64encode
from .codes import ErrorCode
from .errors import CodecError, MalformedEnvelope
from .limits import WelcomeLimits
from .types import validate_blob_hash

INLINE_OVERHEAD = 256
"""Bytes of a ``blob-upload`` envelope besides its base64 data, with margin."""
BODY_EXCERPT = 200
"""Characters of an HTTP error body quoted in a failure reason."""

REPLIES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "request-upload": frozenset({"upload-url", "upload-denied"}),
        "blob-upload": frozenset({"blob-uploaded", "upload-rejected"}),
        "blob-uploaded": frozenset({"blob-uploaded", "upload-rejected"}),
        "blob-request": frozenset({"blob"}),
    }
)
"""Frame type a flow sends -> the types of the server frames that reply to it (matched
by ``hash``); an ``error`` whose ``ref`` is the frame type replies too."""

REPLY_TYPES = frozenset(t for replies in REPLIES.values() for t in replies)
"""Every server frame type that replies to a blob frame."""


def blob_hash(data: bytes) -> str:
    """The content address of ``data``: ``sha256:<64 lowercase hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_blob_hash(hash: str) -> str:
    """``hash`` if it is a valid ``sha256:<64 lowercase hex>``; ValueError otherwise."""
    try:
        return validate_blob_hash(hash)
    except MalformedEnvelope as exc:
        raise ValueError(exc.message) from None


def inline_fits(size: int, max_frame_bytes: int) -> bool:
    """Whether a ``blob-upload`` of ``size`` bytes (base64: 4 per 3) fits one frame."""
    return 4 * ((size + 2) // 3) + INLINE_OVERHEAD <= max_frame_bytes


def verify(hash: str, data: bytes, size: int | None) -> str | None:
    """Why ``data`` is not the blob ``hash`` (of ``size`` bytes, when announced), or None."""
    if size is not None and len(data) != size:
        return f"size-mismatch: got {len(data)} bytes, announced {size}"
    if blob_hash(data) != hash:
        return "hash-mismatch: the bytes received have another sha256"
    return None


# -- steps and their answers ---------------------------------------------------------------


BlobFrame = m.RequestUpload | m.BlobUpload | m.BlobUploaded | m.BlobRequest
"""The frames the flows send (the keys of :data:`REPLIES`)."""
BlobReply = m.UploadUrl | m.UploadDenied | m.BlobUploaded | m.UploadRejected | m.Blob
"""The server frames that reply to them (:data:`REPLY_TYPES`)."""


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send ``message``; answer with the server frame that replies to it (module doc)."""

    message: BlobFrame


@dataclass(frozen=True, slots=True)
class HttpPut:
    """Send ``body`` to a direct-upload grant with ``method`` and ``headers``."""

    url: str
    method: str
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class HttpGet:
    """Download a blob from a grant URL. ``size``: the size the server announced."""

    url: str
    size: int | None

    def needs_body(self, status: int, content_length: int | None) -> bool:
        """Whether the driver must read the body of a response with this head: not for a
        200 whose ``Content-Length`` already contradicts ``size`` (it fails unread)."""
        return status != 200 or self.size is None or content_length in (None, self.size)


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the app's log should hear (a fallback); answer None."""

    message: str


Step = SendFrame | HttpPut | HttpGet | Notice


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """The answer to an HTTP step. ``body``: the bytes read (empty when not needed)."""

    status: int
    body: bytes = b""
    content_length: int | None = None


@dataclass(frozen=True, slots=True)
class HttpFailure:
    """No HTTP response came: ``error`` says why (connection, TLS, timeout)."""

    error: str


Answer = m.Message | HttpResponse | HttpFailure | None

# -- outcomes ------------------------------------------------------------------------------


class BlobFailure(StrEnum):
    """How a flow failed; each is one error class of the SDK."""

    REJECTED = "rejected"
    """Upload: nothing was stored (``BlobRejected``)."""
    NOT_FOUND = "not-found"
    """Fetch: the room has no such blob (``BlobNotFound``)."""
    FETCH_FAILED = "fetch-failed"
    """Fetch: no bytes, or bytes that cannot be trusted (``BlobFetchFailed``)."""


@dataclass(frozen=True, slots=True)
class BlobFailed:
    """A flow's failure: its kind, the blob, and why (the server's reason when it gave one)."""

    failure: BlobFailure
    hash: str
    reason: str


@dataclass(frozen=True, slots=True)
class Stored:
    """The upload is stored and verified. ``direct``: through a URL grant, not inline."""

    hash: str
    direct: bool


@dataclass(frozen=True, slots=True)
class Fetched:
    """The blob's bytes, verified. ``direct``: downloaded from a URL grant, not inline."""

    data: bytes = field(repr=False)
    direct: bool


UploadFlow = Generator[Step, Answer, Stored | BlobFailed]
FetchFlow = Generator[Step, Answer, Fetched | BlobFailed]


# -- the flows -----------------------------------------------------------------------------


def upload_flow(
    hash: str, data: bytes, *, caps: Sequence[str], limits: WelcomeLimits
) -> UploadFlow:
    """Store ``data`` (whose hash is ``hash``) in a session granted ``caps`` (module doc)."""
    if "blob" not in caps:
        return _rejected(hash, "forbidden: this session has no 'blob' capability")
    why_inline = "cap blob-direct was not negotiated"
    if "blob-direct" in caps:
        grant = yield SendFrame(m.RequestUpload(hash=hash, size=len(data)))
        if isinstance(grant, m.UploadUrl):
            put = yield HttpPut(grant.url, grant.method or "PUT", grant.headers or {}, data)
            failure = _put_failure(put)
            if failure is None:
                confirmed = yield SendFrame(m.BlobUploaded(hash=hash))
                return _uploaded(hash, confirmed, direct=True)
            why_inline = f"the direct upload failed ({failure})"
            yield Notice(f"blob {hash}: {why_inline}; uploading inline")
        elif isinstance(grant, m.UploadDenied):
            if grant.reason.startswith("too-large"):
                return _rejected(hash, grant.reason)
            why_inline = f"upload-denied: {grant.reason}"
        elif isinstance(grant, m.Error):
            return _rejected(hash, _refusal(grant))
        else:
            return _rejected(hash, _unexpected(grant, "request-upload"))
    if limits.blob_max_bytes and len(data) > limits.blob_max_bytes:
        return _rejected(hash, f"too-large: {len(data)} > blob_max_bytes {limits.blob_max_bytes}")
    if not inline_fits(len(data), limits.max_frame_bytes):
        return _rejected(
            hash,
            f"too-large for an inline upload: {len(data)} bytes do not fit a "
            f"{limits.max_frame_bytes}-byte frame, and {why_inline}",
        )
    stored = yield SendFrame(m.BlobUpload(hash=hash, size=len(data), data=b64encode(data)))
    return _uploaded(hash, stored, direct=False)


def fetch_flow(hash: str, *, caps: Sequence[str]) -> FetchFlow:
    """Fetch blob ``hash`` in a session granted ``caps`` (module doc)."""
    if "blob" not in caps:
        return _fetch_failed(hash, "forbidden: this session has no 'blob' capability")
    answer = yield SendFrame(m.BlobRequest(hash=hash))
    if isinstance(answer, m.Error):
        failure = (
            BlobFailure.NOT_FOUND
            if answer.code == ErrorCode.NOT_FOUND
            else BlobFailure.FETCH_FAILED
        )
        return BlobFailed(failure, hash, _refusal(answer))
    if not isinstance(answer, m.Blob):
        return _fetch_failed(hash, _unexpected(answer, "blob-request"))
    if answer.data is not None:
        try:
            data = b64decode(answer.data, "blob")
        except CodecError:
            return _fetch_failed(hash, "bad-base64: the inline data is not base64")
        direct = False
    elif answer.url is not None:
        got = yield HttpGet(answer.url, answer.size)
        if isinstance(got, HttpFailure):
            return _fetch_failed(hash, f"network: {got.error}")
        if not isinstance(got, HttpResponse):
            return _fetch_failed(hash, _unexpected(got, "the download"))
        if got.status != 200:
            return _fetch_failed(hash, f"http-{got.status}: {_excerpt(got.body)}")
        if answer.size is not None and got.content_length not in (None, answer.size):
            return _fetch_failed(
                hash, f"size-mismatch: {got.content_length} bytes, announced {answer.size}"
            )
        data = got.body
        direct = True
    else:
        return _fetch_failed(hash, "the blob answer has neither data nor url")
    why = verify(hash, data, answer.size)
    if why is not None:
        return _fetch_failed(hash, why)
    return Fetched(data, direct)


# -- internals -----------------------------------------------------------------------------


def _put_failure(answer: Answer) -> str | None:
    """Why a direct-upload PUT failed, or None for a 2xx answer."""
    if isinstance(answer, HttpResponse):
        if 200 <= answer.status < 300:
            return None
        return f"http-{answer.status}: {_excerpt(answer.body)}"
    if isinstance(answer, HttpFailure):
        return f"network: {answer.error}"
    return _unexpected(answer, "the direct upload")


def _uploaded(hash: str, answer: Answer, *, direct: bool) -> Stored | BlobFailed:
    """The end of an upload: ``blob-uploaded`` stored it, anything else did not."""
    if isinstance(answer, m.BlobUploaded):
        return Stored(hash, direct)
    if isinstance(answer, m.UploadRejected):
        return _rejected(hash, answer.reason)
    if isinstance(answer, m.Error):
        return _rejected(hash, _refusal(answer))
    return _rejected(hash, _unexpected(answer, "the upload"))


def _refusal(error: m.Error) -> str:
    return f"{error.code}: {error.message}"


def _unexpected(answer: Answer, what: str) -> str:
    name = answer.type if isinstance(answer, m.Message) else type(answer).__name__
    return f"unexpected answer {name!r} to {what}"


def _excerpt(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")[:BODY_EXCERPT]


def _rejected(hash: str, reason: str) -> BlobFailed:
    return BlobFailed(BlobFailure.REJECTED, hash, reason)


def _fetch_failed(hash: str, reason: str) -> BlobFailed:
    return BlobFailed(BlobFailure.FETCH_FAILED, hash, reason)
