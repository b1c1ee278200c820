"""``roomsync_auth_total{outcome}`` counts each refused hello under its AuthError reason
(SPEC §7 "auth outcomes"), with the label values dashboards have always seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import jwt
import pytest

from roomsync.storage.base import RoomRecord
from roomsync.testing.server import TEST_KEYS, ServerHandle, running_server
from roomsync.testing.wsclient import closed, connect

((KID, SECRET),) = TEST_KEYS.items()


def _signed(claims: dict[str, object], *, secret: str = SECRET, kid: str = KID) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})


#: (outcome label, token for room "room-1" or None for an anonymous hello)
CASES: list[tuple[str, Callable[[ServerHandle], str | None]]] = [
    ("token-expired", lambda s: s.mint("room-1", ["read"], ttl_s=1, now_s=int(time.time()) - 99)),
    ("bad-signature", lambda s: _signed({"room": "room-1", "caps": []}, secret="w" * 40)),
    ("unknown-kid", lambda s: _signed({"room": "room-1", "caps": []}, kid="nope")),
    ("not-valid-for-room", lambda s: s.mint("other-room", ["read"])),
    ("malformed", lambda s: "not-a-token"),
    ("missing-claim", lambda s: _signed({"room": "room-1"})),
    ("unsupported-algorithm", lambda s: jwt.encode({}, "k" * 64, algorithm="HS512")),
    (
        "not-yet-valid",
        lambda s: s.mint("room-1", ["read"], ttl_s=9999, now_s=int(time.time()) + 3600),
    ),
    ("revoked", lambda s: s.mint("room-1", ["read"], actor="mallory")),
    ("anonymous", lambda s: None),
]


async def _outcomes(http: aiohttp.ClientSession, srv: ServerHandle) -> dict[str, float]:
    text = await (await http.get(srv.url + "/metrics")).text()
    prefix = 'roomsync_auth_total{outcome="'
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            label, _, value = line[len(prefix) :].partition('"} ')
            counts[label] = float(value)
    return counts


async def _refused_hello(
    http: aiohttp.ClientSession, srv: ServerHandle, room: str, token: str | None
) -> None:
    ws = await connect(http, srv.ws_url(room))
    await ws.send_json({"type": "hello", "v": 1, **({"token": token} if token else {})})
    seen, code = await closed(ws)
    assert code in (4002, 4003) and seen[0]["code"] == "auth"


@pytest.mark.parametrize(("outcome", "make_token"), CASES, ids=[c[0] for c in CASES])
async def test_each_refusal_counts_under_its_reason(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    outcome: str,
    make_token: Callable[[ServerHandle], str | None],
) -> None:
    async with running_server(tmp_path, dev=False) as srv:
        await srv.server.node.revoke("sub", "mallory")
        await _refused_hello(http, srv, "room-1", make_token(srv))
        assert await _outcomes(http, srv) == {outcome: 1.0}


async def test_a_locked_room_counts_as_locked(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path) as srv:
        await srv.server.store.put_room(RoomRecord("vault", created_ms=0, locked=True))
        await _refused_hello(http, srv, "vault", None)
        assert await _outcomes(http, srv) == {"locked": 1.0}
