"""Blob flows of the WebSocket protocol and the signed ``/v1/blobs`` routes (SPEC §4).

Inline: ``blob-upload`` -> verify hash and size -> store -> ``blob-uploaded`` to the
uploader, ``blob-available`` to the room. Direct (cap ``blob-direct`` and a backend that
grants URLs): ``request-upload`` -> ``upload-url`` or ``upload-denied`` (fall back to
inline) -> the client PUTs to its own staging name -> ``blob-uploaded`` -> the server
re-hashes the staged bytes and moves them to their content address
(:meth:`~roomsync.blobs.BlobStore.commit_upload`) -> ``blob-available``, or
``upload-rejected`` and the staged bytes are deleted. Fetch: ``blob-request`` -> ``blob``
with inline data, or a download URL grant when the peer negotiated ``blob-direct``; a hash
the room does not have is ``not-found`` (:class:`BlobNotInRoom`), a failing backend
``internal`` naming its reason (:class:`BlobUnavailable`), never ``not-found``.

Blobs are room-scoped: a room serves only hashes that were uploaded in it, inline or
direct. A ``blob-uploaded`` counts only for a grant that this session holds, in this room,
for this hash (:class:`_Grant`, keyed by session, room and hash); without one it is
answered ``upload-rejected{reason:"no-grant: ..."}`` and touches no storage. Uploading
bytes that are already stored (by any room) dedupes once they are verified: the room gains
a reference, the stored object is left as it is. No upload can replace or delete an
object under a content address. Every outcome is counted in ``roomsync_blob_ops_total``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ..blobs.base import BlobBackendError, BlobMissing, BlobStore, BlobStoreError, BlobVerifyFailed
from ..blobs.base import gc as gc_blobs
from ..blobs.filesystem import FilesystemBlobStore
from ..blobs.memory import MemoryBlobStore
from ..blobs.signing import UploadTicket, UrlSigner
from ..config import Settings
from ..core import messages as m
from ..core.codes import CloseCode, ErrorCode
from ..core.errors import MalformedEnvelope, RoomsyncError
from ..core.types import validate_blob_hash
from ..storage.base import BlobRefs, all_blob_refs
from .logs import event

if TYPE_CHECKING:
    from .metrics import Metrics
    from .peer import Peer
    from .rooms import RoomHost

log = logging.getLogger("roomsync.blobs")

#: Inline ``blob`` answers carry at most this much data; larger blobs need blob-direct.
MAX_INLINE_FETCH_BYTES = 16 * 1024 * 1024


class BlobNotInRoom(RoomsyncError):
    """``blob-request`` for a hash the room does not have (never uploaded here, or gone
    from the backend): ``error{code:"not-found"}``; the session goes on."""

    code = ErrorCode.NOT_FOUND
    close: CloseCode | None = None


class BlobUnavailable(RoomsyncError):
    """``blob-request`` for a blob the room has while the blob backend fails:
    ``error{code:"internal"}`` naming the backend's reason (``permission-denied``,
    ``unavailable``, ...) but not its details; the session goes on and the peer may retry.
    Never ``not-found``: the blob is not lost, the backend is down."""

    code = ErrorCode.INTERNAL
    close: CloseCode | None = None

    def __init__(self, hash: str, reason: str) -> None:
        super().__init__(f"blob storage failed ({reason}) reading {hash}: retry later")
        self.reason = reason


def url_secret(signing_secret: str) -> bytes:
    """The blob URL key, derived from the active token signing key (same on every node)."""
    return hmac.new(signing_secret.encode(), b"roomsync blob urls v1", hashlib.sha256).digest()


def build_blob_store(settings: Settings, signer: UrlSigner) -> BlobStore:
    b = settings.blobs
    if b.backend == "memory":
        return MemoryBlobStore()
    if b.backend == "s3":
        from ..blobs.s3 import S3BlobStore

        return S3BlobStore(
            b.s3_bucket,
            endpoint_url=b.s3_endpoint_url or None,
            region=b.s3_region or None,
            access_key_id=b.s3_access_key_id or None,
            secret_access_key=b.s3_secret_access_key or None,
        )
    return FilesystemBlobStore(
        Path(settings.blob_dir()),
        signer=signer,
        public_base_url=b.public_url or None,
    )


def new_upload_id() -> str:
    """A fresh, unguessable upload id: 144 random bits, URL- and path-safe."""
    return secrets.token_urlsafe(18)


class _GrantState(enum.Enum):
    OPEN = "open"  # granted; the next blob-uploaded of its session may commit it
    COMMITTING = "committing"  # commit_upload in flight
    DONE = "done"  # committed or refused; kept until expiry so the sweep can discard a
    # staged object that a replayed PUT left behind


@dataclass(slots=True)
class _Grant:
    """One ``upload-url`` answer: who may confirm it (session, room) and what it allows."""

    upload_id: str
    session: str
    room: str
    hash: str
    size: int
    expires_ms: int
    state: _GrantState = _GrantState.OPEN

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.session, self.room, self.hash)


class BlobService:
    """The blob side of one node: message handlers, URL routes, sweeping and GC."""

    def __init__(
        self,
        store: BlobStore,
        settings: Settings,
        metrics: Metrics,
        signer: UrlSigner | None,
        *,
        upload_ids: Callable[[], str] = new_upload_id,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.signer = signer
        self._upload_ids = upload_ids
        #: upload id -> grant, until the sweep drops it after it expired.
        self.grants: dict[str, _Grant] = {}
        # (session, room, hash) -> upload ids of OPEN grants, oldest first.
        self._open: dict[tuple[str, str, str], list[str]] = {}

    def count(self, op: str, outcome: str) -> None:
        self.metrics.blob_ops.labels(op, outcome).inc()

    # -- WebSocket messages ----------------------------------------------------------------

    async def handle(self, host: RoomHost, peer: Peer, msg: m.Message, now_ms: int) -> None:
        if isinstance(msg, m.BlobUpload):
            await self._inline_upload(host, peer, msg)
        elif isinstance(msg, m.RequestUpload):
            self._request_upload(host, peer, msg, now_ms)
        elif isinstance(msg, m.BlobUploaded):
            await self._confirm(host, peer, msg.hash, now_ms)
        elif isinstance(msg, m.BlobRequest):
            await self._fetch(host, peer, msg.hash, now_ms)

    def _reject(self, peer: Peer, hash: str, reason: str, op: str) -> None:
        self.count(op, "rejected" if reason != "verify-failed" else "verify-failed")
        peer.send({"type": "upload-rejected", "hash": hash, "reason": reason})

    async def _inline_upload(self, host: RoomHost, peer: Peer, msg: m.BlobUpload) -> None:
        hash = validate_blob_hash(msg.hash)
        limit = host.policy.blob_max_bytes
        if msg.size > limit:
            return self._reject(
                peer, hash, f"too-large: {msg.size} > blob_max_bytes {limit}", "upload"
            )
        try:
            data = base64.b64decode(msg.data, validate=True)
        except (binascii.Error, ValueError):
            return self._reject(peer, hash, "bad-base64", "upload")
        if len(data) != msg.size:
            return self._reject(
                peer, hash, f"size-mismatch: got {len(data)} bytes, declared {msg.size}", "upload"
            )
        if "sha256:" + hashlib.sha256(data).hexdigest() != hash:
            return self._reject(peer, hash, "hash-mismatch", "upload")
        try:
            await self.store.put(hash, data)
        except BlobStoreError as exc:
            return self._backend_failed(peer, hash, exc, "upload")
        await self._announce(host, peer, hash, msg.size)
        self.count("upload", "uploaded")

    def _request_upload(
        self, host: RoomHost, peer: Peer, msg: m.RequestUpload, now_ms: int
    ) -> None:
        hash = validate_blob_hash(msg.hash)
        reason = None
        if "blob-direct" not in peer.session.caps:
            reason = "capability-missing: blob-direct"
        elif msg.size > host.policy.blob_max_bytes:
            reason = f"too-large: {msg.size} > blob_max_bytes {host.policy.blob_max_bytes}"
        elif not self.store.can_grant_urls():
            reason = f"backend-cannot-grant: {self.store.name} backend has no URL grants"
        grant = None
        upload_id = self._upload_ids()
        if reason is None:
            try:
                grant = self.store.upload_url(
                    hash,
                    msg.size,
                    upload_id=upload_id,
                    now_ms=now_ms,
                    ttl_s=self.settings.blobs.url_ttl_s,
                )
            except BlobStoreError as exc:
                reason = f"{exc.reason}: {exc}"
        if grant is None:
            self.count("grant", "denied")
            peer.send(
                {"type": "upload-denied", "hash": hash, "reason": reason or "backend-cannot-grant"}
            )
            return
        held = _Grant(upload_id, peer.session.session, host.room, hash, msg.size, grant.expires_ms)
        self.grants[upload_id] = held
        self._open.setdefault(held.key, []).append(upload_id)
        self.count("grant", "granted")
        peer.send(
            {
                "type": "upload-url",
                "hash": hash,
                "url": grant.url,
                "expires": grant.expires_ms,
                "headers": grant.headers,
                "method": grant.method,
            }
        )

    def _set_state(self, grant: _Grant, state: _GrantState) -> None:
        """Move ``grant`` to ``state``, keeping the index of open grants in step."""
        ids = self._open.get(grant.key)
        if grant.state is _GrantState.OPEN and ids is not None:
            ids.remove(grant.upload_id)
            if not ids:
                del self._open[grant.key]
        grant.state = state
        if state is _GrantState.OPEN:
            self._open.setdefault(grant.key, []).insert(0, grant.upload_id)

    async def _confirm(self, host: RoomHost, peer: Peer, hash: str, now_ms: int) -> None:
        """``blob-uploaded``: commit one of this session's open grants for ``hash`` here.

        Grants are tried oldest first; one whose PUT has not landed yet (nothing staged)
        stays open, so concurrent uploads of the same bytes each find theirs.
        """
        hash = validate_blob_hash(hash)
        ids = list(self._open.get((peer.session.session, host.room, hash), ()))
        if not ids:
            return self._reject(
                peer,
                hash,
                f"no-grant: this session holds no upload grant for {hash} in room "
                f"{host.room!r}; send request-upload first",
                "confirm",
            )
        failure = "missing: nothing was uploaded to the granted URL yet"
        for upload_id in ids:
            grant = self.grants.get(upload_id)
            if grant is None or grant.state is not _GrantState.OPEN:
                continue  # swept, or taken by a commit, while we awaited
            if grant.expires_ms < now_ms:
                self._set_state(grant, _GrantState.DONE)
                failure = f"no-grant: the upload grant expired at {grant.expires_ms}"
                try:
                    await self.store.discard_upload(upload_id)
                except BlobStoreError as exc:
                    return self._backend_failed(peer, hash, exc, "confirm")
                continue
            # Out of the open index while the commit runs: no second confirm can pick it.
            self._set_state(grant, _GrantState.COMMITTING)
            try:
                await self.store.commit_upload(upload_id, hash, grant.size)
            except BlobMissing:
                self._set_state(grant, _GrantState.OPEN)  # its PUT may still be in flight
                continue
            except BlobVerifyFailed:
                self._set_state(grant, _GrantState.DONE)
                failure = "verify-failed"
                continue
            except BlobStoreError as exc:
                self._set_state(grant, _GrantState.DONE)
                return self._backend_failed(peer, hash, exc, "confirm")
            try:
                await self._announce(host, peer, hash, grant.size)
            finally:
                self._set_state(grant, _GrantState.DONE)
            self.count("confirm", "uploaded")
            return None
        return self._reject(peer, hash, failure, "confirm")

    async def _announce(self, host: RoomHost, peer: Peer, hash: str, size: int) -> None:
        await host.store.add_blob_ref(host.room, hash, size, now_ms=host.now_ms())
        peer.send({"type": "blob-uploaded", "hash": hash})
        host.broadcast_message({"type": "blob-available", "hash": hash, "size": size})
        if host.signal is not None:  # the room's readers on the other nodes
            host.signal("blob", {"hash": hash, "size": size})
        host.notify("blob.stored", {"hash": hash, "size": size, "peer": peer.id})
        event(log, "blob.available", room=host.room, peer=peer.id, hash=hash, size=size)

    async def _fetch(self, host: RoomHost, peer: Peer, hash: str, now_ms: int) -> None:
        hash = validate_blob_hash(hash)
        if not await host.store.has_blob_ref(host.room, hash):
            self.count("request", "missing")
            raise BlobNotInRoom(f"blob {hash} is not available in room {host.room!r}")
        try:
            if "blob-direct" in peer.session.caps and self.store.can_grant_urls():
                grant = self.store.download_url(
                    hash, now_ms=now_ms, ttl_s=self.settings.blobs.url_ttl_s
                )
                if grant is not None:
                    size = await self.store.stat(hash)
                    if size is None:
                        raise BlobMissing(f"blob {hash} is referenced but not stored")
                    peer.send(
                        {
                            "type": "blob",
                            "hash": hash,
                            "url": grant.url,
                            "expires": grant.expires_ms,
                            "size": size,
                        }
                    )
                    self.count("request", "requested")
                    return
            size = await self.store.stat(hash)
            if size is None:
                raise BlobMissing(f"blob {hash} is referenced but not stored")
            if size > MAX_INLINE_FETCH_BYTES:
                self.count("request", "too-large")
                raise MalformedEnvelope(
                    f"blob {hash} has {size} bytes, more than inline fetch allows "
                    f"({MAX_INLINE_FETCH_BYTES}); negotiate cap blob-direct",
                    close=None,
                )
            data = await self.store.read(hash)
        except BlobMissing:
            self.count("request", "missing")
            raise BlobNotInRoom(
                f"blob {hash} is referenced in room {host.room!r} but missing "
                f"from the {self.store.name} backend"
            ) from None
        except BlobBackendError as exc:
            self.count("request", "error")
            self._log_backend_error(peer, hash, exc)
            raise BlobUnavailable(hash, exc.reason) from None
        peer.send(
            {
                "type": "blob",
                "hash": hash,
                "data": base64.b64encode(data).decode(),
                "size": len(data),
            }
        )
        self.count("request", "requested")

    def _backend_failed(self, peer: Peer, hash: str, exc: BlobStoreError, op: str) -> None:
        self.count(op, "error")
        self._log_backend_error(peer, hash, exc)
        # The reason only: the message is the operator's (it may name directories or
        # buckets) and went to the log above.
        peer.send({"type": "upload-rejected", "hash": hash, "reason": exc.reason})
        peer.send(
            {
                "type": "error",
                "code": str(ErrorCode.INTERNAL),
                "message": f"blob storage failed ({exc.reason}); nothing was stored",
            }
        )

    def _log_backend_error(self, peer: Peer, hash: str, exc: BlobStoreError) -> None:
        """The operator's side of a failed blob operation: the full error, in the log."""
        event(
            log,
            "blob.backend_error",
            level=logging.ERROR,
            peer=peer.id,
            hash=hash,
            reason=exc.reason,
            error=str(exc),
        )

    # -- housekeeping ----------------------------------------------------------------------

    async def sweep(self, now_ms: int, referenced: set[str] | None = None) -> list[str]:
        """Forget grants that expired before ``now_ms`` and discard their staged objects.

        Returns the hashes of the never-confirmed uploads whose staged bytes were discarded.
        Only staging names are ever deleted here, never a content-addressed object, so
        ``referenced`` (what rooms reference) cannot change the outcome; it is accepted so
        the heartbeat's existing call keeps working. Grants whose commit is in flight are
        left for the next sweep.
        """
        swept: list[str] = []
        for upload_id, grant in list(self.grants.items()):
            if grant.expires_ms >= now_ms or grant.state is _GrantState.COMMITTING:
                continue
            # Done grants too: a PUT replayed after the commit may have staged bytes again.
            # A failing discard raises with the grant still held, for the next sweep.
            discarded = await self.store.discard_upload(upload_id)
            if grant.state is _GrantState.OPEN:
                self._set_state(grant, _GrantState.DONE)
                if discarded:
                    swept.append(grant.hash)
                    self.count("sweep", "deleted")
            del self.grants[upload_id]
        return swept

    async def collect_garbage(self, refs: BlobRefs) -> list[str]:
        """Delete every stored blob that no room of ``refs`` (the room store) references
        (room/archive deletion calls it).

        Hashes of live grants are kept too: a commit may have stored the object and not yet
        written the room's reference.
        """
        keep = await all_blob_refs(refs) | {g.hash for g in self.grants.values()}
        deleted = await gc_blobs(self.store, keep)
        if deleted:
            self.count("gc", "deleted")
        return deleted

    # -- HTTP routes for filesystem URL grants ---------------------------------------------

    def add_routes(self, app: web.Application, now_ms: Callable[[], int]) -> None:
        async def put_upload(request: web.Request) -> web.StreamResponse:
            ticket = self._check_upload_url(request, now_ms())
            if isinstance(ticket, web.Response):
                return ticket
            store = self.store
            if not isinstance(store, FilesystemBlobStore):
                return _json_error(404, "no-url-grants", "this node does not stage uploads")
            size = ticket.size
            if request.content_length is not None and request.content_length != size:
                self.count("put", "rejected")
                return _json_error(
                    400,
                    "size-mismatch",
                    f"Content-Length {request.content_length} != granted {size}",
                )
            chunks = request.content.iter_chunked(1 << 16)
            try:
                await store.put_upload_stream(ticket.upload_id, ticket.hash, size, chunks)
            except BlobVerifyFailed as exc:
                self.count("put", "rejected")
                return _json_error(400, exc.reason, str(exc))
            except BlobStoreError as exc:
                self.count("put", "error")
                return _json_error(507 if exc.reason == "no-space" else 503, exc.reason, str(exc))
            if now_ms() >= ticket.expires_ms:
                # The body outlived the URL: the sweep may already have passed this grant,
                # so nothing may stay staged.
                try:
                    await store.discard_upload(ticket.upload_id)
                except BlobStoreError as exc:
                    self.count("put", "error")
                    return _json_error(503, exc.reason, str(exc))
                self.count("put", "expired-url")
                return _json_error(403, "expired-url", "the upload URL expired during the PUT")
            self.count("put", "stored")
            return web.json_response({"ok": True, "hash": ticket.hash, "size": size}, status=201)

        async def get_blob(request: web.Request) -> web.StreamResponse:
            hash = request.match_info["hash"]
            size = self._check_url("GET", hash, request, now_ms())
            if isinstance(size, web.Response):
                return size
            resp = web.StreamResponse(
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            )
            try:
                stream = self.store.read_stream(hash)
                first = await anext(stream, b"")
            except BlobMissing:
                self.count("get", "missing")
                return _json_error(404, "missing", f"blob {hash} is not stored")
            except BlobStoreError as exc:
                self.count("get", "error")
                return _json_error(503, exc.reason, str(exc))
            await resp.prepare(request)
            await resp.write(first)
            async for chunk in stream:
                await resp.write(chunk)
            await resp.write_eof()
            self.count("get", "served")
            return resp

        app.router.add_put("/v1/uploads/{upload_id}", put_upload)
        app.router.add_get("/v1/blobs/{hash}", get_blob)

    def _check_upload_url(self, request: web.Request, now: int) -> UploadTicket | web.Response:
        if self.signer is None:
            return _json_error(404, "no-url-grants", "this node does not serve upload URLs")
        try:
            return self.signer.check_upload(
                request.match_info["upload_id"], request.query, now_ms=now
            )
        except BlobStoreError as exc:
            self.count("put", exc.reason)
            return _json_error(400 if exc.reason == "bad-url" else 403, exc.reason, str(exc))

    def _check_url(
        self, method: str, hash: str, request: web.Request, now: int
    ) -> int | web.Response:
        if self.signer is None:
            return _json_error(404, "no-url-grants", "this node does not serve blob URLs")
        try:
            validate_blob_hash(hash)
            return self.signer.check_query(method, hash, request.query, now_ms=now)
        except MalformedEnvelope as exc:
            return _json_error(400, "bad-hash", exc.message)
        except BlobStoreError as exc:
            self.count(method.lower(), exc.reason)
            return _json_error(403, exc.reason, str(exc))


def _json_error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"ok": False, "reason": reason, "message": message}, status=status)
