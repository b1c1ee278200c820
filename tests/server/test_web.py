"""The shipped web apps as HTTP routes (roomsync.server.web): content types, the strict
CSP, caching, 404s, and nothing served unless asked for (``serve --demo``/``--inspect``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from roomsync.cli.serve_cmd import _web_apps
from roomsync.server.web import add_web_routes, load_app
from roomsync.testing.server import running_server


async def _client(names: tuple[str, ...]) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    add_web_routes(app, names)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_demo_and_inspector_are_served_with_a_strict_csp() -> None:
    client = await _client(("demo", "inspect"))
    try:
        for prefix in ("/demo/", "/inspect/"):
            resp = await client.get(prefix)
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            assert resp.headers["Cache-Control"] == "no-cache"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Referrer-Policy"] == "no-referrer"
            csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
            html = await resp.text()
            assert prefix + "assets/" in html
        demo = load_app("demo")
        js = next(p for p in demo.files if p.startswith("assets/") and p.endswith(".js"))
        resp = await client.get("/demo/" + js)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert "immutable" in resp.headers["Cache-Control"]
        csp = resp.headers["Content-Security-Policy"]
        host = f"{client.host}:{client.port}"
        assert f"connect-src 'self' ws://{host} wss://{host}" in csp  # the board's WebSocket
        inspect = await client.get("/inspect/")
        assert "connect-src 'self';" in inspect.headers["Content-Security-Policy"]
        css = next(p for p in demo.files if p.endswith(".css"))
        assert (await client.get("/demo/" + css)).headers["Content-Type"].startswith("text/css")
    finally:
        await client.close()


async def test_bare_prefix_redirects_and_unknown_files_are_404() -> None:
    client = await _client(("demo",))
    try:
        resp = await client.get("/demo", allow_redirects=False)
        assert resp.status == 308 and resp.headers["Location"] == "/demo/"
        assert (await client.get("/demo/nope.js")).status == 404
        assert (await client.get("/demo/build.json")).status == 200  # the build's manifest
        assert (await client.get("/demo/%2e%2e/__init__.py")).status == 404
        assert (await client.get("/inspect/")).status == 404  # only what was asked for
    finally:
        await client.close()


async def test_a_plain_server_serves_no_web_app(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv, aiohttp.ClientSession() as http:
        for path in ("/demo/", "/inspect/"):
            resp = await http.get(srv.url + path)
            assert resp.status == 404


@pytest.mark.parametrize(
    ("demo", "inspect", "apps"),
    [(False, False, ()), (True, False, ("demo", "inspect")), (False, True, ("inspect",))],
)
def test_serve_flags_pick_the_apps(demo: bool, inspect: bool, apps: tuple[str, ...]) -> None:
    assert _web_apps(argparse.Namespace(demo=demo, inspect=inspect)) == apps
