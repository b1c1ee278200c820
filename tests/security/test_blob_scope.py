"""Blobs are room-scoped, and no upload can replace or delete a stored object (SPEC §4).

A hostile-client probe found that any peer could read or delete another room's blobs
knowing only the hash: ``blob-uploaded{H}`` without a grant was answered with
``blob-uploaded`` + ``blob-available`` (room B gained a reference to room A's object),
and a ``blob-direct`` peer's ``request-upload{H, size:1}`` + ``blob-uploaded{H}`` failed
"size differs from the grant" and deleted the stored object out from under room A. Direct
PUTs went straight to the content address (on S3, any bytes), grants were one global dict
keyed by hash, and verification deleted whatever was under the hash.

Invariants under test, over real sockets against a real server (filesystem and S3 on moto):

- a ``blob-uploaded`` counts only for a grant held by the same session, in the same room,
  for the same hash; anything else is ``upload-rejected{reason:"no-grant: ..."}`` and
  neither announces nor touches storage;
- direct uploads are staged: wrong bytes PUT to a granted URL never replace or delete the
  object stored under the hash, before or after ``blob-uploaded``;
- a room gains access to a blob only by uploading it itself; uploading bytes already stored
  by another room dedupes (after verification) and then works like any other upload.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import aiohttp
import pytest

from roomsync.testing.server import ServerHandle
from roomsync.testing.wsclient import hello, recv

Ws = aiohttp.ClientWebSocketResponse

ROOM_A = "room-a"
ROOM_B = "room-b"
SECRET = b"room A's secret attachment " * 40
INLINE_CAPS = ["read", "write", "blob"]
#: Answers and broadcasts of the blob flows; other traffic (presence...) is ignored.
BLOB_TYPES = {
    "blob",
    "blob-available",
    "blob-uploaded",
    "error",
    "upload-denied",
    "upload-rejected",
    "upload-url",
}


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


H = digest(SECRET)


async def exchange(ws: Ws, *messages: dict[str, Any]) -> list[dict[str, Any]]:
    """Send ``messages`` and a ping; the blob frames that arrived before the pong.

    The server handles one session's frames in order, so the pong comes after every
    answer (and every broadcast the messages caused to this peer)."""
    for msg in messages:
        await ws.send_json(msg)
    await ws.send_json({"type": "ping"})
    seen: list[dict[str, Any]] = []
    while (msg := await recv(ws))["type"] != "pong":
        if msg["type"] in BLOB_TYPES:
            seen.append(msg)
    return seen


def types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


def inline(data: bytes) -> dict[str, Any]:
    return {
        "type": "blob-upload",
        "hash": digest(data),
        "size": len(data),
        "data": base64.b64encode(data).decode(),
    }


async def room_a_uploads(srv: ServerHandle, http: aiohttp.ClientSession) -> Ws:
    a, _ = await hello(http, srv.ws_url(ROOM_A))
    answers = await exchange(a, inline(SECRET))
    assert types(answers) == ["blob-uploaded", "blob-available"], answers
    return a


async def fetch(ws: Ws, http: aiohttp.ClientSession, hash: str) -> bytes | dict[str, Any]:
    """The bytes ``blob-request`` yields to this peer, or the error it was answered."""
    [answer] = await exchange(ws, {"type": "blob-request", "hash": hash})
    if answer["type"] == "error":
        return answer
    assert answer["type"] == "blob", answer
    if "data" in answer:
        return base64.b64decode(answer["data"])
    async with http.get(answer["url"]) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def put(http: aiohttp.ClientSession, grant: dict[str, Any], body: bytes) -> int:
    async with http.request(
        grant.get("method") or "PUT", grant["url"], data=body, headers=grant.get("headers") or {}
    ) as resp:
        return resp.status


async def assert_room_a_intact(srv: ServerHandle, a: Ws, http: aiohttp.ClientSession) -> None:
    assert await srv.server.blobs.store.read(H) == SECRET
    assert await fetch(a, http, H) == SECRET


async def assert_not_in_room_b(srv: ServerHandle, b: Ws, http: aiohttp.ClientSession) -> None:
    assert not await srv.server.store.has_blob_ref(ROOM_B, H)
    answer = await fetch(b, http, H)
    assert isinstance(answer, dict) and answer["code"] == "not-found", answer


# -- (a) no grant, no blob-direct -------------------------------------------------------------


async def test_blob_uploaded_without_a_grant_is_rejected(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a = await room_a_uploads(bsrv, http)
    b, welcome = await hello(http, bsrv.ws_url(ROOM_B), caps=INLINE_CAPS)
    assert "blob-direct" not in welcome["caps"]
    watcher, _ = await hello(http, bsrv.ws_url(ROOM_B), caps=INLINE_CAPS)

    answers = await exchange(b, {"type": "blob-uploaded", "hash": H})

    assert types(answers) == ["upload-rejected"], answers
    assert answers[0]["hash"] == H and answers[0]["reason"].startswith("no-grant: ")
    assert await exchange(watcher) == []  # no blob-available in room B
    await assert_not_in_room_b(bsrv, b, http)
    await assert_room_a_intact(bsrv, a, http)


# -- (b) a grant for the hash, with a size that cannot match ----------------------------------


@pytest.mark.parametrize("body", [None, b"!"], ids=["no-put", "one-byte-put"])
async def test_foreign_hash_grant_cannot_delete_room_a_blob(
    bsrv: ServerHandle, http: aiohttp.ClientSession, body: bytes | None
) -> None:
    a = await room_a_uploads(bsrv, http)
    b, welcome = await hello(http, bsrv.ws_url(ROOM_B))
    assert "blob-direct" in welcome["caps"]

    [grant] = await exchange(b, {"type": "request-upload", "hash": H, "size": 1})
    assert grant["type"] == "upload-url", grant
    if body is not None:
        await put(http, grant, body)  # 400 on the filesystem route; moto stages it
    answers = await exchange(b, {"type": "blob-uploaded", "hash": H})

    assert types(answers) == ["upload-rejected"], answers
    await assert_room_a_intact(bsrv, a, http)
    await assert_not_in_room_b(bsrv, b, http)


# -- (c) wrong bytes PUT to a granted URL -----------------------------------------------------


async def test_wrong_bytes_at_a_granted_url_never_replace_the_stored_object(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a = await room_a_uploads(bsrv, http)
    b, _ = await hello(http, bsrv.ws_url(ROOM_B))

    [grant] = await exchange(b, {"type": "request-upload", "hash": H, "size": len(SECRET)})
    assert grant["type"] == "upload-url", grant
    status = await put(http, grant, b"X" * len(SECRET))
    # Refused at once (filesystem: hashed while streaming) or staged (moto checks nothing):
    # either way the stored object is untouched before the confirmation...
    assert status in (200, 201, 400), status
    assert await bsrv.server.blobs.store.read(H) == SECRET
    answers = await exchange(b, {"type": "blob-uploaded", "hash": H})

    # ...and after it.
    assert types(answers) == ["upload-rejected"], answers
    await assert_room_a_intact(bsrv, a, http)
    await assert_not_in_room_b(bsrv, b, http)


async def test_a_replayed_upload_url_never_replaces_the_stored_object(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    b, _ = await hello(http, bsrv.ws_url(ROOM_B))
    [grant] = await exchange(b, {"type": "request-upload", "hash": H, "size": len(SECRET)})
    assert await put(http, grant, SECRET) in (200, 201)
    answers = await exchange(b, {"type": "blob-uploaded", "hash": H})
    assert types(answers) == ["blob-uploaded", "blob-available"], answers

    # The URL is still within its lifetime: replay it with other bytes, then confirm again.
    await put(http, grant, b"Y" * len(SECRET))
    assert await bsrv.server.blobs.store.read(H) == SECRET
    answers = await exchange(b, {"type": "blob-uploaded", "hash": H})
    assert types(answers) == ["upload-rejected"], answers
    assert answers[0]["reason"].startswith("no-grant: ")
    assert await fetch(b, http, H) == SECRET


async def test_another_sessions_grant_cannot_be_confirmed(
    bsrv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a, _ = await hello(http, bsrv.ws_url(ROOM_A))
    b, _ = await hello(http, bsrv.ws_url(ROOM_B))
    [grant] = await exchange(a, {"type": "request-upload", "hash": H, "size": len(SECRET)})
    assert await put(http, grant, SECRET) in (200, 201)

    # Room B confirms room A's upload before room A does.
    answers = await exchange(b, {"type": "blob-uploaded", "hash": H})
    assert types(answers) == ["upload-rejected"], answers
    assert answers[0]["reason"].startswith("no-grant: ")
    await assert_not_in_room_b(bsrv, b, http)

    answers = await exchange(a, {"type": "blob-uploaded", "hash": H})
    assert types(answers) == ["blob-uploaded", "blob-available"], answers
    await assert_room_a_intact(bsrv, a, http)


# -- (d) a legitimate upload of the same bytes ------------------------------------------------


@pytest.mark.parametrize("path", ["inline", "direct"])
async def test_room_b_uploading_the_same_bytes_dedupes(
    bsrv: ServerHandle, http: aiohttp.ClientSession, path: str
) -> None:
    a = await room_a_uploads(bsrv, http)
    b, _ = await hello(http, bsrv.ws_url(ROOM_B))
    watcher, _ = await hello(http, bsrv.ws_url(ROOM_B), caps=INLINE_CAPS)
    await assert_not_in_room_b(bsrv, b, http)

    if path == "inline":
        answers = await exchange(b, inline(SECRET))
    else:
        [grant] = await exchange(b, {"type": "request-upload", "hash": H, "size": len(SECRET)})
        assert await put(http, grant, SECRET) in (200, 201)
        answers = await exchange(b, {"type": "blob-uploaded", "hash": H})

    assert types(answers) == ["blob-uploaded", "blob-available"], answers
    assert await exchange(watcher) == [{"type": "blob-available", "hash": H, "size": len(SECRET)}]
    assert await fetch(b, http, H) == SECRET
    assert await fetch(watcher, http, H) == SECRET
    assert [h async for h in bsrv.server.blobs.store.list_hashes()] == [H]  # one object
    await assert_room_a_intact(bsrv, a, http)
