"""What the doctor and canary tests break live servers with: a reverse proxy that strips
``Upgrade`` or rewrites the packs it relays, a private CA for TLS, and a blob directory
on a tmpfs that is remounted read-only under a running server (root sees through file
modes, not through a read-only mount)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from roomsync.testing.faults import tmpfs
from roomsync.testing.server import ServerHandle

#: Hop-by-hop headers (RFC 9110 §7.6.1) a proxy does not forward, and the two that a
#: proxy without WebSocket support drops: what the runbook means by "proxy upgrade support".
_HOP = {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host"}
_HOP_RESPONSE = _HOP | {"content-length", "content-encoding"}


class Proxy:
    """A reverse proxy on 127.0.0.1 in front of ``upstream`` (a test server's base URL).

    HTTP requests are forwarded without their hop-by-hop headers, so an upgrade reaches
    the server as a plain GET (``strip_upgrade``: a proxy without WebSocket support).
    With ``mangle_packs`` it relays WebSockets instead, and appends ``!`` to the ``data``
    of every ``pack`` a client sends: bytes rewritten on the way.
    """

    def __init__(self, upstream: str, *, mangle_packs: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.mangle_packs = mangle_packs
        self.http: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Proxy:
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.http is not None:
            await self.http.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.mangle_packs and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.relay(request)
        assert self.http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self.http.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as resp:
            body = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_RESPONSE}
            return web.Response(status=resp.status, body=body, headers=out)

    async def relay(self, request: web.Request) -> web.StreamResponse:
        assert self.http is not None
        client = web.WebSocketResponse(autoping=True)
        await client.prepare(request)
        ws_url = self.upstream.replace("http", "ws", 1) + request.path_qs
        async with self.http.ws_connect(ws_url, autoping=True) as server:

            async def upstream() -> None:
                async for msg in client:
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        break
                    obj = json.loads(msg.data)
                    if obj.get("type") == "pack":
                        obj["data"] += "!"
                    await server.send_json(obj)
                await server.close()

            async def downstream() -> None:
                async for msg in server:
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        break
                    await client.send_str(msg.data)
                await client.close(code=server.close_code or 1000)

            tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return client


@dataclass(frozen=True)
class PrivateCa:
    """A server certificate for 127.0.0.1 and the CA (PEM) that issued it."""

    cert: Path
    key: Path
    ca: Path


@pytest.fixture
def private_ca(tmp_path: Path) -> PrivateCa:
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = PrivateCa(tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem")
    issued.private_key_and_cert_chain_pem.write_to_path(str(files.cert))
    issued.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files


@pytest.fixture
def blob_mount(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs for a server's blob directory; remount it with :func:`read_only`."""
    with tmpfs(tmp_path / "blobs", size="4m", why="the read-only blob directory test") as where:
        yield where


def operator(srv: ServerHandle, caps: tuple[str, ...] = ("*",)) -> str:
    return srv.mint("*", caps, actor="ops")


async def control(srv: ServerHandle, family: str, command: str, **payload: object) -> object:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{srv.url}/v1/control/{family}/{command}",
            json=payload,
            headers={"Authorization": f"Bearer {operator(srv)}"},
        ) as resp:
            body = await resp.json()
    assert body["ok"], body
    return body["result"]
