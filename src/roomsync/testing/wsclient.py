"""Raw WebSocket helpers for protocol-level tests against a real server (no SDK)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from ..core.codec import pack_data
from ..core.entries import Change

TIMEOUT = 10.0


async def connect(
    http: aiohttp.ClientSession, url: str, **kw: Any
) -> aiohttp.ClientWebSocketResponse:
    ws: aiohttp.ClientWebSocketResponse = await http.ws_connect(url, autoping=True, **kw)
    return ws


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = TIMEOUT) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg}"
    out: dict[str, Any] = msg.json()
    return out


async def recv_type(
    ws: aiohttp.ClientWebSocketResponse, type_: str, timeout: float = TIMEOUT
) -> dict[str, Any]:
    """Skip frames until one of ``type_`` arrives."""
    while True:
        msg = await recv(ws, timeout)
        if msg["type"] == type_:
            return msg


async def closed(
    ws: aiohttp.ClientWebSocketResponse, timeout: float = TIMEOUT
) -> tuple[list[dict[str, Any]], int | None]:
    """Read until the server closes: (text messages seen, close code)."""
    seen: list[dict[str, Any]] = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            seen.append(msg.json())
        elif msg.type is aiohttp.WSMsgType.CLOSE:
            # The code the server sent; ws.close_code may say 1006 when the server dropped
            # the transport before our close reply could be written.
            return seen, int(msg.data)
        elif msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
        ):
            return seen, ws.close_code
        elif msg.type is aiohttp.WSMsgType.ERROR:
            return seen, ws.close_code


async def hello(
    http: aiohttp.ClientSession, url: str, **fields: Any
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """Connect, send hello, return (ws, welcome) after the catch-up's done chunk."""
    ws = await connect(http, url)
    await ws.send_json({"type": "hello", "v": 1, **fields})
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    if "read" in welcome["caps"] and fields.get("catchup", True):
        while True:
            msg = await recv(ws)
            if msg["type"] == "pack" and msg.get("done"):
                break
    return ws, welcome


async def write_until_closed(
    ws: aiohttp.ClientWebSocketResponse,
    acked: dict[str, int],
    *,
    actor: str = "writer",
    batch: int = 20,
    on_acked: Callable[[int], None] | None = None,
) -> None:
    """Send packs of ``batch`` new paths (``/w/N``) one after another, each after the
    previous one's ack, recording every acknowledged path's seq in ``acked`` and calling
    ``on_acked(count)``, until the connection fails (a killed server, say)."""
    i = 0
    try:
        while True:
            changes = [
                Change(f"/w/{i + j}", i + j + 1, 0, actor, b"%d" % (i + j)) for j in range(batch)
            ]
            await ws.send_json({"type": "pack", "data": pack_data(changes)})
            ack = await recv_type(ws, "ack", timeout=5)
            for change, seq in zip(changes, ack["seqs"], strict=True):
                if seq is None:
                    raise RuntimeError(f"{change.path} was refused: {ack}")
                acked[change.path] = seq
            i += batch
            if on_acked is not None:
                on_acked(i)
    except (aiohttp.ClientError, ConnectionError, TimeoutError, KeyError, AssertionError):
        return  # AssertionError: recv saw the CLOSE instead of a text frame
