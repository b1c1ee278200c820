"""``wss://`` with a certificate the client trusts (SPEC §7 TLS)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.testing.server import running_server, server_process
from roomsync.testing.tls import TlsFiles
from roomsync.testing.wsclient import hello, recv_type


async def test_wss_with_trusted_self_signed_cert(tmp_path: Path, tls: TlsFiles) -> None:
    client_ctx = tls.client_ctx
    async with running_server(
        tmp_path, server__tls_cert=str(tls.cert), server__tls_key=str(tls.key)
    ) as srv:
        assert srv.ws_url("r").startswith("wss://")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as http:
            ws, welcome = await hello(http, srv.ws_url("r"))
            assert welcome["room"] == "r"
            await ws.close()
            resp = await http.get(srv.url + "/healthz")
            assert resp.status == 200
        # A client that does not trust the CA is refused at the TLS layer.
        async with aiohttp.ClientSession() as http:
            try:
                await http.ws_connect(srv.ws_url("r"))
            except aiohttp.ClientConnectorCertificateError:
                pass
            else:
                raise AssertionError("an untrusted certificate was accepted")


async def test_wss_on_the_served_process(tmp_path: Path, tls: TlsFiles) -> None:
    """``roomsync serve --tls-cert/--tls-key`` (uvloop, the picows listener under TLS):
    a WebSocket session with a large frame, and plain HTTPS on the same port."""
    client_ctx = tls.client_ctx
    args = ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    with server_process(tmp_path / "data", args=args) as proc:
        base = f"127.0.0.1:{proc.port}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as http:
            ws, welcome = await hello(http, f"wss://{base}/ws/r")
            assert welcome["room"] == "r"
            value = b"x" * 200_000  # spans many TLS records and picows buffer growth
            await ws.send_json(
                {"type": "pack", "data": pack_data([Change("/big", 1, 0, "a", value)])}
            )
            assert (await recv_type(ws, "ack"))["seqs"] == [1]
            await ws.close()
            assert ws.close_code == 1000
            async with http.get(f"https://{base}/healthz") as resp:
                assert resp.status == 200
