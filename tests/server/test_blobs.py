"""Blob flows over real sockets, on the filesystem backend and on S3 (moto) (SPEC §4)."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from roomsync.blobs import BlobBackendError, MemoryBlobStore
from roomsync.testing.moto_server import put_raw_object, s3_blob_settings
from roomsync.testing.server import ServerHandle, running_server
from roomsync.testing.wsclient import hello, recv_type


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload_id_of(url: str) -> str:
    """The upload id a grant URL writes (the last path segment, on both backends)."""
    return urlsplit(url).path.rsplit("/", 1)[1]


async def stage_raw(srv: ServerHandle, upload_id: str, data: bytes) -> None:
    """Overwrite a staged upload behind the server's back."""
    store: Any = srv.server.blobs.store
    if store.name == "filesystem":
        store.staging_path_for(upload_id).write_bytes(data)
    else:
        blobs = srv.server.settings.blobs
        put_raw_object(
            blobs.s3_endpoint_url, blobs.s3_bucket, store.staging_key_for(upload_id), data
        )


def inline(data: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "type": "blob-upload",
        "hash": digest(data),
        "size": len(data),
        "data": base64.b64encode(data).decode(),
        **extra,
    }


async def test_inline_upload_announce_and_fetch(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    up, _ = await hello(http, bsrv.ws_url("b"), caps=["read", "write", "blob"])
    watcher, _ = await hello(http, bsrv.ws_url("b"), caps=["read", "blob"])
    data = b"hello blob" * 100
    await up.send_json(inline(data))
    assert await recv_type(up, "blob-uploaded") == {"type": "blob-uploaded", "hash": digest(data)}
    avail = await recv_type(watcher, "blob-available")
    assert avail == {"type": "blob-available", "hash": digest(data), "size": len(data)}
    await watcher.send_json({"type": "blob-request", "hash": digest(data)})
    blob = await recv_type(watcher, "blob")
    assert base64.b64decode(blob["data"]) == data and blob["size"] == len(data)
    metrics = await (await http.get(bsrv.url + "/metrics")).text()
    assert 'roomsync_blob_ops_total{op="upload",outcome="uploaded"} 1.0' in metrics
    assert 'roomsync_blob_ops_total{op="request",outcome="requested"} 1.0' in metrics


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda m: {**m, "hash": digest(b"other")}, "hash-mismatch"),
        (lambda m: {**m, "size": m["size"] + 1}, "size-mismatch"),
        (lambda m: {**m, "data": "%%%"}, "bad-base64"),
    ],
)
async def test_inline_mismatch_is_rejected_and_nothing_stored(
    bsrv: ServerHandle, http: aiohttp.ClientSession, tamper: Any, reason: str
) -> None:
    ws, _ = await hello(http, bsrv.ws_url("b"))
    msg = tamper(inline(b"payload"))
    await ws.send_json(msg)
    rejected = await recv_type(ws, "upload-rejected")
    assert rejected["hash"] == msg["hash"] and rejected["reason"].startswith(reason)
    assert await bsrv.server.blobs.store.stat(msg["hash"]) is None
    assert not await bsrv.server.store.has_blob_ref("b", msg["hash"])


async def test_inline_too_large(bsrv: ServerHandle, http: aiohttp.ClientSession) -> None:
    ws, _ = await hello(http, bsrv.ws_url("b"))
    await ws.send_json({"type": "blob-upload", "hash": digest(b"x"), "size": 2 << 20, "data": ""})
    rejected = await recv_type(ws, "upload-rejected")
    assert rejected["reason"].startswith("too-large")


async def test_direct_upload_then_direct_download(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, bsrv.ws_url("d"))
    other, _ = await hello(http, bsrv.ws_url("d"))
    data = bytes(range(256)) * 400
    await ws.send_json({"type": "request-upload", "hash": digest(data), "size": len(data)})
    grant = await recv_type(ws, "upload-url")
    assert grant["hash"] == digest(data) and grant["expires"] > time.time() * 1000
    resp = await http.put(grant["url"], data=data, headers=grant.get("headers") or {})
    assert resp.status in (200, 201), await resp.text()
    await ws.send_json({"type": "blob-uploaded", "hash": digest(data)})
    assert (await recv_type(ws, "blob-uploaded"))["hash"] == digest(data)
    assert (await recv_type(other, "blob-available"))["size"] == len(data)
    await other.send_json({"type": "blob-request", "hash": digest(data)})
    blob = await recv_type(other, "blob")
    assert "url" in blob and blob["size"] == len(data)
    got = await http.get(blob["url"])
    assert got.status == 200 and await got.read() == data


async def test_direct_upload_of_wrong_bytes_fails_verification(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, bsrv.ws_url("t"))
    data = b"the real bytes" * 50
    await ws.send_json({"type": "request-upload", "hash": digest(data), "size": len(data)})
    grant = await recv_type(ws, "upload-url")
    resp = await http.put(grant["url"], data=data, headers=grant.get("headers") or {})
    assert resp.status in (200, 201)
    # Tamper with the staged object behind the server's back, then confirm.
    upload_id = upload_id_of(grant["url"])
    await stage_raw(bsrv, upload_id, b"X" * len(data))
    await ws.send_json({"type": "blob-uploaded", "hash": digest(data)})
    rejected = await recv_type(ws, "upload-rejected")
    assert rejected["reason"] == "verify-failed"
    store = bsrv.server.blobs.store
    assert await store.stat(digest(data)) is None
    assert await store.discard_upload(upload_id) is False  # the staged bytes went too
    metrics = await (await http.get(bsrv.url + "/metrics")).text()
    assert 'roomsync_blob_ops_total{op="confirm",outcome="verify-failed"} 1.0' in metrics


async def test_confirm_without_grant_is_rejected(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, bsrv.ws_url("t"))
    await ws.send_json({"type": "blob-uploaded", "hash": digest(b"never sent")})
    rejected = await recv_type(ws, "upload-rejected")
    assert rejected["reason"].startswith("no-grant")


async def test_confirm_before_the_put_is_missing_and_the_grant_stays(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, bsrv.ws_url("t"))
    data = b"put after the first confirm"
    await ws.send_json({"type": "request-upload", "hash": digest(data), "size": len(data)})
    grant = await recv_type(ws, "upload-url")
    await ws.send_json({"type": "blob-uploaded", "hash": digest(data)})
    assert (await recv_type(ws, "upload-rejected"))["reason"].startswith("missing")
    resp = await http.put(grant["url"], data=data, headers=grant.get("headers") or {})
    assert resp.status in (200, 201)
    await ws.send_json({"type": "blob-uploaded", "hash": digest(data)})
    assert (await recv_type(ws, "blob-uploaded"))["hash"] == digest(data)
    # The grant is spent: confirming again finds none.
    await ws.send_json({"type": "blob-uploaded", "hash": digest(data)})
    assert (await recv_type(ws, "upload-rejected"))["reason"].startswith("no-grant")


async def test_a_grant_is_confirmed_only_by_its_own_session(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    owner, _ = await hello(http, bsrv.ws_url("g"))
    other, _ = await hello(http, bsrv.ws_url("g"))
    data = b"granted to the owner"
    await owner.send_json({"type": "request-upload", "hash": digest(data), "size": len(data)})
    grant = await recv_type(owner, "upload-url")
    resp = await http.put(grant["url"], data=data, headers=grant.get("headers") or {})
    assert resp.status in (200, 201)
    await other.send_json({"type": "blob-uploaded", "hash": digest(data)})
    assert (await recv_type(other, "upload-rejected"))["reason"].startswith("no-grant")
    assert not await bsrv.server.store.has_blob_ref("g", digest(data))
    await owner.send_json({"type": "blob-uploaded", "hash": digest(data)})
    assert (await recv_type(owner, "blob-uploaded"))["hash"] == digest(data)


async def test_upload_denied_without_cap_then_inline_fallback(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, bsrv.ws_url("f"), caps=["read", "blob"])
    data = b"fallback"
    await ws.send_json({"type": "request-upload", "hash": digest(data), "size": len(data)})
    denied = await recv_type(ws, "upload-denied")
    assert denied["reason"].startswith("capability-missing")
    await ws.send_json(inline(data))
    assert (await recv_type(ws, "blob-uploaded"))["hash"] == digest(data)


async def test_upload_denied_when_too_large(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, bsrv.ws_url("f"))
    await ws.send_json({"type": "request-upload", "hash": digest(b"x"), "size": 5 << 20})
    assert (await recv_type(ws, "upload-denied"))["reason"].startswith("too-large")


async def test_blobs_are_room_scoped(bsrv: ServerHandle, http: aiohttp.ClientSession) -> None:
    a, _ = await hello(http, bsrv.ws_url("room-a"))
    b, _ = await hello(http, bsrv.ws_url("room-b"))
    data = b"secret of room a"
    await a.send_json(inline(data))
    await recv_type(a, "blob-uploaded")
    await b.send_json({"type": "blob-request", "hash": digest(data)})
    err = await recv_type(b, "error")
    assert err["code"] == "not-found" and "room-b" in err["message"]
    assert err["ref"] == "blob-request" and err["hash"] == digest(data)
    await b.send_json({"type": "ping"})
    assert (await recv_type(b, "pong")) == {"type": "pong"}


async def test_garbage_collection_after_room_deletion(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    keep, _ = await hello(http, bsrv.ws_url("keep"))
    gone, _ = await hello(http, bsrv.ws_url("gone"))
    await keep.send_json(inline(b"kept"))
    await recv_type(keep, "blob-uploaded")
    await gone.send_json(inline(b"dropped"))
    await recv_type(gone, "blob-uploaded")
    await gone.close()
    server = bsrv.server
    assert await server.store.delete_room("gone")
    deleted = await server.blobs.collect_garbage(server.store)
    assert deleted == [digest(b"dropped")]
    assert await server.blobs.store.stat(digest(b"kept")) == 4


async def test_unconfirmed_direct_upload_is_swept_after_expiry(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, bsrv.ws_url("s"))
    data = b"abandoned"
    kept = b"stored by the room"
    await ws.send_json(inline(kept))
    await recv_type(ws, "blob-uploaded")
    await ws.send_json({"type": "request-upload", "hash": digest(data), "size": len(data)})
    grant = await recv_type(ws, "upload-url")
    await http.put(grant["url"], data=data, headers=grant.get("headers") or {})
    blobs = bsrv.server.blobs
    assert await blobs.store.stat(digest(data)) is None  # staged, not a blob
    assert await blobs.sweep(grant["expires"] - 1, set()) == []
    assert await blobs.sweep(grant["expires"] + 1, set()) == [digest(data)]
    assert await blobs.store.discard_upload(upload_id_of(grant["url"])) is False
    assert blobs.grants == {}
    assert await blobs.store.read(digest(kept)) == kept  # the sweep touches staging only
    await ws.send_json({"type": "blob-uploaded", "hash": digest(data)})
    assert (await recv_type(ws, "upload-rejected"))["reason"].startswith("no-grant")


async def test_filesystem_urls_refuse_tampering_and_expiry(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path) as srv:
        data = b"signed"
        h = digest(data)
        signer = srv.server.blobs.signer
        assert signer is not None
        store: Any = srv.server.blobs.store
        upload = "upload-0123456789abcdef"
        now = int(time.time() * 1000)
        good = signer.grant_upload(srv.url, upload, h, len(data), now_ms=now, ttl_s=60)
        expired = signer.grant_upload(srv.url, upload, h, len(data), now_ms=now - 120_000, ttl_s=60)
        resp = await http.put(expired.url, data=data)
        assert resp.status == 403 and (await resp.json())["reason"] == "expired-url"
        resp = await http.put(good.url.replace("sig=", "sig=A"), data=data)
        assert resp.status == 403 and (await resp.json())["reason"] == "bad-signature"
        redirected = good.url.replace(upload, "upload-fedcba9876543210")
        resp = await http.put(redirected, data=data)
        assert resp.status == 403 and (await resp.json())["reason"] == "bad-signature"
        assert (await http.get(good.url)).status == 405  # an upload URL cannot GET
        resp = await http.put(good.url, data=b"wrong!")
        assert resp.status == 400
        assert not store.staging_path_for(upload).exists()
        resp = await http.put(good.url, data=data)
        assert resp.status == 201
        assert store.staging_path_for(upload).read_bytes() == data
        assert await store.stat(h) is None  # staged, never written to the content address
        # Nothing is ever PUT to a content address, signed or not.
        blob_put = signer.grant("PUT", srv.url, h, len(data), now_ms=now, ttl_s=60)
        assert (await http.put(blob_put.url, data=data)).status == 405


async def test_memory_backend_denies_direct_upload(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, blobs__backend="memory") as srv:
        ws, _ = await hello(http, srv.ws_url("m"))
        await ws.send_json({"type": "request-upload", "hash": digest(b"x"), "size": 1})
        assert (await recv_type(ws, "upload-denied"))["reason"].startswith("backend-cannot-grant")


async def test_readyz_reports_a_missing_bucket(
    tmp_path: Path, moto_endpoint: str, http: aiohttp.ClientSession
) -> None:
    async with running_server(
        tmp_path, **s3_blob_settings(moto_endpoint, "roomsync-no-such-bucket")
    ) as srv:
        resp = await http.get(srv.url + "/readyz")
        body = await resp.json()
        assert resp.status == 503
        assert body["checks"]["blobs"]["ok"] is False
        assert body["checks"]["blobs"]["reason"] == "missing-bucket"


async def test_a_failing_backend_is_internal_never_not_found(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A blob the room has, on a backend that fails: ``internal`` naming the backend's
    reason (its details stay in the log), the session goes on, the failure is counted."""
    async with running_server(tmp_path, blobs__backend="memory") as srv:
        ws, _ = await hello(http, srv.ws_url("m"))
        data = b"stored before the backend failed"
        await ws.send_json(inline(data))
        await recv_type(ws, "blob-uploaded")
        store: Any = srv.server.blobs.store
        store.fail_with(BlobBackendError("disk /srv/blobs on fire", reason="unavailable"))
        await ws.send_json({"type": "blob-request", "hash": digest(data)})
        err = await recv_type(ws, "error")
        assert err["code"] == "internal" and err["code"] != "not-found"
        assert "unavailable" in err["message"] and "/srv/blobs" not in err["message"]
        assert err["ref"] == "blob-request" and err["hash"] == digest(data)
        await ws.send_json({"type": "ping"})
        assert (await recv_type(ws, "pong")) == {"type": "pong"}
        store.fail_with(None)
        await ws.send_json({"type": "blob-request", "hash": digest(data)})
        assert base64.b64decode((await recv_type(ws, "blob"))["data"]) == data
        metrics = await (await http.get(srv.url + "/metrics")).text()
        assert 'roomsync_blob_ops_total{op="request",outcome="error"} 1.0' in metrics
        assert 'roomsync_errors_total{code="internal"} 1.0' in metrics


async def test_an_upload_to_a_failing_backend_names_the_reason_not_the_place(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """upload-rejected carries the backend's short reason; the message (which names the
    directory or bucket) stays in the log."""
    async with running_server(tmp_path, blobs__backend="memory") as srv:
        store = srv.server.blobs.store
        assert isinstance(store, MemoryBlobStore)
        store.fail_with(
            BlobBackendError("disk /srv/blobs is read-only", reason="permission-denied")
        )
        ws, _ = await hello(http, srv.ws_url("r"))
        data = b"some bytes"
        await ws.send_json(
            {
                "type": "blob-upload",
                "hash": "sha256:" + hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "data": base64.b64encode(data).decode(),
            }
        )
        rejected = await recv_type(ws, "upload-rejected")
        assert rejected["reason"] == "permission-denied"
        error = await recv_type(ws, "error")
        assert error["code"] == "internal" and "/srv/blobs" not in error["message"]
