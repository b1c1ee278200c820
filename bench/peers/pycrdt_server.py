"""pycrdt-websocket served by uvicorn, for the roomsync peer benchmarks.

Runs in the peer venv (bench/peers/.env/bin/python), never in roomsync's interpreter.
Rooms are named by the URL path (y-websocket protocol). Defaults of the library are kept
(rooms ready, cleaned when their last client leaves), with uvloop as uvicorn's loop.

Usage: .env/bin/python pycrdt_server.py HOST PORT
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from pycrdt.websocket import ASGIServer, WebsocketServer


async def main(host: str, port: int) -> None:
    websocket_server = WebsocketServer()
    app = ASGIServer(websocket_server)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        ws_max_size=256 * 1024 * 1024,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    async with websocket_server:
        print(f"pycrdt-websocket listening on {host}:{port}", flush=True)
        await server.serve()


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(host, port))
    else:
        uvloop.run(main(host, port))
