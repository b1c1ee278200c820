"""Structured logs never contain tokens or signatures (SPEC §7)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import aiohttp

from roomsync.server.logs import setup_logging
from roomsync.testing.server import running_server
from roomsync.testing.wsclient import closed, connect, hello


async def test_server_logs_are_json_and_redacted(tmp_path: Path) -> None:
    stream = io.StringIO()
    setup_logging("debug", "json", stream)
    try:
        async with running_server(tmp_path, dev=False) as srv, aiohttp.ClientSession() as http:
            token = srv.mint("r", ["read"])
            ws, welcome = await hello(http, srv.ws_url("r"), token=token)
            await ws.close()
            bad = token[:-4] + "AAAA"
            ws = await connect(http, srv.ws_url("r"))
            await ws.send_json({"type": "hello", "v": 1, "token": bad})
            _, code = await closed(ws)
            assert code == 4003
    finally:
        # Undo setup_logging entirely: a logger left with propagate=False hides the
        # records of every later test's caplog (the SDK's retry-log tests among them).
        logger = logging.getLogger("roomsync")
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    text = stream.getvalue()
    assert token not in text and bad not in text
    assert token.split(".")[2] not in text
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    events = {r["event"] for r in records}
    assert {"server.started", "session.welcome", "session.close"} <= events
    welcome_rec = next(r for r in records if r["event"] == "session.welcome")
    assert welcome_rec["room"] == "r" and welcome_rec["session"] == welcome["session"]
    close_rec = next(r for r in records if r["event"] == "session.close")
    assert close_rec["code"] == 4003 and close_rec["error"] == "auth"
    assert all("ts" in r and "level" in r for r in records)
