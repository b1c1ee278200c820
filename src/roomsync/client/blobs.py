"""The SDK's blob API (SPEC §4): ``put_blob``, ``get_blob``, ``on_blob_available``.

Every decision of the two flows (direct upload or inline, the fallbacks, which answers
mean what, when bytes can be trusted) is made by the generators of
:mod:`roomsync.core.blobflow`; :class:`BlobTransfers` drives them on the current link:
it sends their frames and matches the replies by hash (an ``error``, which has no hash,
goes to the oldest call of the frame type in its ``ref``: the server answers a
connection's frames in order), makes their HTTP requests (signed ``/v1/uploads`` and
``/v1/blobs`` URLs of the filesystem backend, presigned S3 URLs: a grant's URL, method
and headers are all the client needs), and logs their notices. A flow interrupted by a
reconnect starts over on the new link.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from ..core import blobflow as flows
from ..core import messages as m
from ..core.blobflow import (
    REPLIES,
    REPLY_TYPES,
    Answer,
    BlobFailed,
    BlobFailure,
    BlobFrame,
    BlobReply,
    FetchFlow,
    HttpFailure,
    HttpGet,
    HttpPut,
    HttpResponse,
    Notice,
    SendFrame,
    Step,
    UploadFlow,
    blob_hash,
    check_blob_hash,
)
from ..core.limits import WelcomeLimits
from .connection import Connection
from .errors import BlobError, BlobFetchFailed, BlobNotFound, BlobRejected, RequestRefused
from .events import Listeners
from .link import BlobCall, Link, _LinkDown

log = logging.getLogger("roomsync.client")

#: Socket timeouts of a direct transfer (the caller's ``timeout`` bounds the whole call).
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=60)

_ERRORS: dict[BlobFailure, Callable[[str, str], BlobError]] = {
    BlobFailure.REJECTED: BlobRejected,
    BlobFailure.NOT_FOUND: BlobNotFound,
    BlobFailure.FETCH_FAILED: BlobFetchFailed,
}


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A blob stored and verified in the room (``blob-available{hash, size}``)."""

    hash: str
    size: int


class BlobTransfers:
    """Runs the blob flows of one client over its links."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.available = Listeners[BlobInfo]()
        for reply in sorted(REPLY_TYPES):
            connection.handle(reply, self._on_reply)
        for sent in sorted(REPLIES):
            connection.handle_error(sent, self._on_refused)
        connection.handle("blob-available", self._on_blob_available)

    async def put_blob(self, data: bytes | bytearray | memoryview, timeout: float | None) -> str:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        blob = bytes(data)
        hash = blob_hash(blob)

        def flow(link: Link) -> UploadFlow:
            welcome = link.welcome
            assert welcome is not None
            limits = WelcomeLimits.parse(welcome.limits)
            return flows.upload_flow(hash, blob, caps=welcome.caps, limits=limits)

        await asyncio.wait_for(self._run(flow), timeout)
        return hash

    async def get_blob(self, hash: str, timeout: float | None) -> bytes:
        hash = check_blob_hash(hash)

        def flow(link: Link) -> FetchFlow:
            assert link.welcome is not None
            return flows.fetch_flow(hash, caps=link.welcome.caps)

        fetched = await asyncio.wait_for(self._run(flow), timeout)
        assert isinstance(fetched, flows.Fetched)
        return fetched.data

    # -- driving the flows -------------------------------------------------------------------

    async def _run(
        self, start: Callable[[Link], UploadFlow] | Callable[[Link], FetchFlow]
    ) -> flows.Stored | flows.Fetched:
        """Run a flow on the current link, from the start again on the next if it drops."""
        while True:
            link = await self._connection.welcomed_link()
            try:
                outcome = await self._drive(link, start(link))
            except _LinkDown:
                continue
            if isinstance(outcome, BlobFailed):
                raise _ERRORS[outcome.failure](outcome.hash, outcome.reason)
            return outcome

    async def _drive(
        self, link: Link, flow: UploadFlow | FetchFlow
    ) -> flows.Stored | flows.Fetched | BlobFailed:
        try:
            step = next(flow)
            while True:
                step = flow.send(await self._perform(link, step))
        except StopIteration as stop:
            outcome: flows.Stored | flows.Fetched | BlobFailed = stop.value
            return outcome

    async def _perform(self, link: Link, step: Step) -> Answer:
        http = self._connection.http
        assert http is not None
        if isinstance(step, SendFrame):
            return await self._frame(link, step.message)
        if isinstance(step, HttpPut):
            return await http_put(http, step, self._ssl_for(step.url))
        if isinstance(step, HttpGet):
            return await http_get(http, step, self._ssl_for(step.url))
        assert isinstance(step, Notice)
        log.warning("%s", step.message)
        return None

    async def _frame(self, link: Link, message: BlobFrame) -> m.Message:
        """Send a blob frame; its reply (``REPLIES``, or an ``error`` with its ``ref``)."""
        future: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()
        link.send(message.to_wire())
        link.blob_calls.append(BlobCall(message.type, message.hash, future))
        return await future

    def _ssl_for(self, url: str) -> ssl_module.SSLContext | bool:
        """The app's SSL context for URLs of the roomsync server itself, defaults elsewhere."""
        ssl = self._connection.ssl
        if ssl is not None and urlsplit(url).netloc == urlsplit(self._connection.url).netloc:
            return ssl
        return True

    # -- incoming frames ---------------------------------------------------------------------

    def _on_reply(self, link: Link, msg: BlobReply) -> None:
        for call in link.blob_calls:
            if msg.type in REPLIES[call.sent] and call.hash == msg.hash:
                link.blob_calls.remove(call)
                _resolve(call.future, msg)
                return
        log.debug("unexpected %s for blob %s", msg.type, msg.hash)

    def _on_refused(self, link: Link, error: m.Error, refused: RequestRefused) -> None:
        call = next((c for c in link.blob_calls if c.sent == error.ref), None)
        if call is not None:
            link.blob_calls.remove(call)
            _resolve(call.future, error)  # the flow decides what the error means

    def _on_blob_available(self, link: Link, msg: m.BlobAvailable) -> None:
        self.available.emit(BlobInfo(msg.hash, msg.size))


# -- HTTP transfers ----------------------------------------------------------------------------


async def http_put(
    http: aiohttp.ClientSession, step: HttpPut, ssl: ssl_module.SSLContext | bool
) -> HttpResponse | HttpFailure:
    """Send a direct upload's bytes to its grant."""
    try:
        async with http.request(
            step.method,
            step.url,
            data=step.body,
            headers=dict(step.headers),
            ssl=ssl,
            timeout=HTTP_TIMEOUT,
        ) as resp:
            body = b"" if 200 <= resp.status < 300 else await resp.read()
            return HttpResponse(resp.status, body, resp.content_length)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return HttpFailure(repr(exc))


async def http_get(
    http: aiohttp.ClientSession, step: HttpGet, ssl: ssl_module.SSLContext | bool
) -> HttpResponse | HttpFailure:
    """Download a blob from a grant URL (the body only when the flow needs it)."""
    try:
        async with http.get(step.url, ssl=ssl, timeout=HTTP_TIMEOUT) as resp:
            needed = step.needs_body(resp.status, resp.content_length)
            body = await resp.read() if needed else b""
            return HttpResponse(resp.status, body, resp.content_length)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return HttpFailure(repr(exc))


def _resolve(future: asyncio.Future[m.Message], value: m.Message) -> None:
    if not future.done():
        future.set_result(value)
