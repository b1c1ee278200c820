"""Calling a test server's control plane (SPEC §6) the way an operator would: over HTTP,
with a freshly minted operator token.

::

    status, body = await call(http, srv, "room get", {"room": "doc"})
    view = await ok(http, srv, "room get", {"room": "doc"})          # asserts 200
    reject = await refused(http, srv, "room get", {"room": "x"}, status=404, code="room-unknown")

``command`` is ``"<family> <command>"``; ``caps`` are the operator token's (default
``*``: every command).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from .server import ServerHandle

__all__ = ["call", "ok", "refused"]


async def call(
    http: aiohttp.ClientSession,
    srv: ServerHandle,
    command: str,
    payload: dict[str, Any] | None = None,
    *,
    caps: Sequence[str] = ("*",),
    token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST ``command`` with ``payload``; ``(HTTP status, JSON body)``. ``token``
    replaces the minted one (e.g. an expired or foreign token)."""
    family, name = command.split()
    bearer = token if token is not None else srv.mint("*", tuple(caps), actor="ops")
    async with http.post(
        f"{srv.url}/v1/control/{family}/{name}",
        json=payload or {},
        headers={"Authorization": f"Bearer {bearer}"},
    ) as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def ok(
    http: aiohttp.ClientSession,
    srv: ServerHandle,
    command: str,
    payload: dict[str, Any] | None = None,
    *,
    caps: Sequence[str] = ("*",),
) -> dict[str, Any]:
    """The result of ``command``, asserting it succeeded."""
    status, body = await call(http, srv, command, payload, caps=caps)
    assert status == 200, body
    result: dict[str, Any] = body["result"]
    return result


async def refused(
    http: aiohttp.ClientSession,
    srv: ServerHandle,
    command: str,
    payload: dict[str, Any] | None = None,
    *,
    status: int,
    code: str,
    caps: Sequence[str] = ("*",),
) -> dict[str, Any]:
    """The reject of ``command``, asserting its HTTP status and code."""
    got, body = await call(http, srv, command, payload, caps=caps)
    assert (got, body.get("reject", {}).get("code")) == (status, code), body
    reject: dict[str, Any] = body["reject"]
    return reject
