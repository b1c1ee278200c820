"""Blob flows of the WebSocket protocol and the signed ``/v1/blobs`` routes (SPEC §4).

Inline: ``blob-upload`` -> verify hash and size -> store -> ``blob-uploaded`` to the
uploader, ``blob-available`` to the room. Direct (cap ``blob-direct`` and a backend that
grants URLs): ``request-upload`` -> ``upload-url`` or ``upload-denied`` (fall back to
inline) -> the client PUTs -> ``blob-uploaded`` -> the server re-hashes the stored
object -> ``blob-available``, or ``upload-rejected`` and the object is deleted.
Fetch: ``blob-request`` -> ``blob`` with inline data, or a download URL grant when the
peer negotiated ``blob-direct``. Blobs are room-scoped: a room serves only hashes that
were announced in it. Every outcome is counted in ``roomsync_blob_ops_total``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ..blobs.base import BlobBackendError, BlobError, BlobMissing, BlobStore, BlobVerifyFailed
from ..blobs.base import gc as gc_blobs
from ..blobs.filesystem import FilesystemBlobStore
from ..blobs.memory import MemoryBlobStore
from ..blobs.signing import UrlSigner
from ..config import Settings
from ..core import messages as m
from ..core.codes import ErrorCode
from ..core.errors import MalformedEnvelope, RoomsyncError
from ..core.types import validate_blob_hash
from .logs import event

if TYPE_CHECKING:
    from .metrics import Metrics
    from .peer import Peer
    from .rooms import RoomHost

log = logging.getLogger("roomsync.blobs")

#: Inline ``blob`` answers carry at most this much data; larger blobs need blob-direct.
MAX_INLINE_FETCH_BYTES = 16 * 1024 * 1024


class BlobNotFound(RoomsyncError):
    """``blob-request`` for a hash the room does not have: ``error{code:"not-found"}``."""

    code = ErrorCode.NOT_FOUND
    close = None


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


@dataclass(slots=True)
class _Grant:
    room: str
    size: int
    expires_ms: int


class BlobService:
    """The blob side of one node: message handlers, URL routes, sweeping and GC."""

    def __init__(
        self, store: BlobStore, settings: Settings, metrics: Metrics, signer: UrlSigner | None
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.signer = signer
        self.grants: dict[str, _Grant] = {}  # hash -> outstanding direct-upload grant

    def count(self, op: str, outcome: str) -> None:
        self.metrics.blob_ops.labels(op, outcome).inc()

    # -- WebSocket messages ----------------------------------------------------------------

    async def handle(self, host: RoomHost, peer: Peer, msg: m.Message, now_ms: int) -> None:
        if isinstance(msg, m.BlobUpload):
            await self._inline_upload(host, peer, msg)
        elif isinstance(msg, m.RequestUpload):
            self._request_upload(host, peer, msg, now_ms)
        elif isinstance(msg, m.BlobUploaded):
            await self._confirm(host, peer, msg.hash)
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
        except BlobError as exc:
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
        if reason is None:
            try:
                grant = self.store.upload_url(
                    hash, msg.size, now_ms=now_ms, ttl_s=self.settings.blobs.url_ttl_s
                )
            except BlobError as exc:
                reason = f"{exc.reason}: {exc}"
        if grant is None:
            self.count("grant", "denied")
            peer.send(
                {"type": "upload-denied", "hash": hash, "reason": reason or "backend-cannot-grant"}
            )
            return
        self.grants[hash] = _Grant(host.room, msg.size, grant.expires_ms)
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

    async def _confirm(self, host: RoomHost, peer: Peer, hash: str) -> None:
        hash = validate_blob_hash(hash)
        grant = self.grants.get(hash)
        try:
            size = await self.store.stat(hash)
        except BlobError as exc:
            return self._backend_failed(peer, hash, exc, "confirm")
        if size is None:
            return self._reject(
                peer, hash, "missing: nothing was stored under this hash", "confirm"
            )
        if grant is not None and grant.size != size:
            await self.store.delete(hash)
            return self._reject(peer, hash, "verify-failed: size differs from the grant", "confirm")
        if size > host.policy.blob_max_bytes:
            await self.store.delete(hash)
            return self._reject(peer, hash, "too-large", "confirm")
        try:
            await self.store.verify(hash, size)
        except BlobVerifyFailed:
            self.grants.pop(hash, None)
            return self._reject(peer, hash, "verify-failed", "confirm")
        except BlobMissing:
            return self._reject(peer, hash, "missing", "confirm")
        except BlobError as exc:
            return self._backend_failed(peer, hash, exc, "confirm")
        self.grants.pop(hash, None)
        await self._announce(host, peer, hash, size)
        self.count("confirm", "uploaded")

    async def _announce(self, host: RoomHost, peer: Peer, hash: str, size: int) -> None:
        await host.store.add_blob_ref(host.room, hash, size, now_ms=host.now_ms())
        peer.send({"type": "blob-uploaded", "hash": hash})
        host.broadcast_message({"type": "blob-available", "hash": hash, "size": size})
        event(log, "blob.available", room=host.room, peer=peer.id, hash=hash, size=size)

    async def _fetch(self, host: RoomHost, peer: Peer, hash: str, now_ms: int) -> None:
        hash = validate_blob_hash(hash)
        if not await host.store.has_blob_ref(host.room, hash):
            self.count("request", "missing")
            raise BlobNotFound(f"blob {hash} is not available in room {host.room!r}")
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
            raise BlobNotFound(
                f"blob {hash} is referenced in room {host.room!r} but missing "
                f"from the {self.store.name} backend"
            ) from None
        except BlobBackendError as exc:
            self.count("request", "error")
            raise BlobNotFound(f"blob backend failed: {exc.reason}: {exc}") from None
        peer.send(
            {
                "type": "blob",
                "hash": hash,
                "data": base64.b64encode(data).decode(),
                "size": len(data),
            }
        )
        self.count("request", "requested")

    def _backend_failed(self, peer: Peer, hash: str, exc: BlobError, op: str) -> None:
        self.count(op, "error")
        event(
            log,
            "blob.backend_error",
            level=logging.ERROR,
            peer=peer.id,
            hash=hash,
            reason=exc.reason,
            error=str(exc),
        )
        peer.send({"type": "upload-rejected", "hash": hash, "reason": f"{exc.reason}: {exc}"})
        peer.send(
            {
                "type": "error",
                "code": "internal",
                "message": f"blob storage failed ({exc.reason}); nothing was stored",
            }
        )

    # -- housekeeping ----------------------------------------------------------------------

    async def sweep(self, now_ms: int, referenced: set[str]) -> list[str]:
        """Delete objects of direct uploads never confirmed before their grant expired."""
        swept = []
        for hash, grant in list(self.grants.items()):
            if grant.expires_ms < now_ms:
                del self.grants[hash]
                if hash not in referenced and await self.store.delete(hash):
                    swept.append(hash)
                    self.count("sweep", "deleted")
        return swept

    async def collect_garbage(self, referenced: set[str]) -> list[str]:
        """Delete every stored blob that no room references (room/archive deletion calls it)."""
        keep = referenced | set(self.grants)
        deleted = await gc_blobs(self.store, keep)
        if deleted:
            self.count("gc", "deleted")
        return deleted

    # -- HTTP routes for filesystem URL grants ---------------------------------------------

    def add_routes(self, app: web.Application, now_ms: Callable[[], int]) -> None:
        async def put_blob(request: web.Request) -> web.StreamResponse:
            hash = request.match_info["hash"]
            size = self._check_url("PUT", hash, request, now_ms())
            if isinstance(size, web.Response):
                return size
            if request.content_length is not None and request.content_length != size:
                self.count("put", "rejected")
                return _json_error(
                    400,
                    "size-mismatch",
                    f"Content-Length {request.content_length} != granted {size}",
                )
            try:
                await self.store.put_stream(hash, size, request.content.iter_chunked(1 << 16))
            except BlobVerifyFailed as exc:
                self.count("put", "rejected")
                return _json_error(400, exc.reason, str(exc))
            except BlobError as exc:
                self.count("put", "error")
                return _json_error(507 if exc.reason == "no-space" else 503, exc.reason, str(exc))
            self.count("put", "stored")
            return web.json_response({"ok": True, "hash": hash, "size": size}, status=201)

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
            except BlobError as exc:
                self.count("get", "error")
                return _json_error(503, exc.reason, str(exc))
            await resp.prepare(request)
            await resp.write(first)
            async for chunk in stream:
                await resp.write(chunk)
            await resp.write_eof()
            self.count("get", "served")
            return resp

        app.router.add_put("/v1/blobs/{hash}", put_blob)
        app.router.add_get("/v1/blobs/{hash}", get_blob)

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
        except BlobError as exc:
            self.count(method.lower(), exc.reason)
            return _json_error(403, exc.reason, str(exc))


def _json_error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"ok": False, "reason": reason, "message": message}, status=status)
